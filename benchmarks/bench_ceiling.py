"""How far the 6-class LungSim stage task can go when the lesion is found perfectly.

Usage:
    python benchmarks/bench_ceiling.py data/lungsim1400 [--train-extra data/lungsim-extra]

A gradient-boosted tree (scikit-learn) classifies each slice from what LungSim's truth says is
on it, instead of from pixels:
- "lesion": the lesion mask of that slice, measured (greatest diameter, area, number of
  components; nothing for a slice without a lesion) and the lesion's recorded appearance
  (margin, calcification, nodule type, invasion). This is what a perfect lesion detector and
  reader would see; nodes and M1a findings are left out.
- "lesion + N, M": the same with the true N and M descriptors and the M1a findings: an upper
  bound for anything that reads the slice, since a node or an effusion may lie on another slice.

The split is the classifier benchmark's (patients, 60/15/25, `data.seed` 0: the same
validation and test slices as `bench_train.py --accuracy`); the tree trains on the training
split (and `--train-extra` sets) and is scored once on validation and test. Macro F1 is of the
top class, as the classifier's. The point is to tell a target the data cannot reach from one
the network does not reach: if the bound is far above the classifier, the gap is the
network's (finding and measuring the lesion), not the labels'.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

APPEARANCE = ("margin", "calcification", "nodule_type", "invasion")
SPREAD = ("n", "m", "m1a_findings")


def _measure(paths: tuple[str, str]) -> tuple[float, float, float]:
    """Greatest diameter and area of the slice's largest lesion, and how many lesions
    (`data.measure_lesions`, the toolkit's own definition of a lesion and its size)."""
    from lungcancer.data import measure_lesions
    from lungcancer.io import read_image, read_mask

    image_path, mask_path = paths
    if not mask_path:
        return 0.0, 0.0, 0.0
    scan = read_image(image_path, expect_ct=False)
    mask = read_mask(mask_path, like=scan)
    if not mask.any():
        return 0.0, 0.0, 0.0
    lesions = measure_lesions(mask, scan.spacing_mm, source=mask_path)
    area_mm2 = lesions[0].voxel_count * scan.spacing_mm[1] * scan.spacing_mm[2]
    return lesions[0].diameter_mm, area_mm2, float(len(lesions))


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _features(root: Path, rows: list[dict[str, str]], workers: int) -> np.ndarray:
    paths = [
        (str(root / r["path"]), str(root / r["mask_path"]) if r.get("mask_path") else "")
        for r in rows
    ]
    with ProcessPoolExecutor(workers) as pool:
        return np.asarray(list(pool.map(_measure, paths, chunksize=64)), np.float64)


def _encode(
    rows: list[dict[str, str]], columns: tuple[str, ...], vocab: dict[str, list[str]]
) -> np.ndarray:
    """Categorical columns as codes; `vocab` keeps the codes the same across splits."""
    out = np.full((len(rows), len(columns)), np.nan)
    for j, column in enumerate(columns):
        values = vocab.setdefault(column, [])
        for i, row in enumerate(rows):
            value = row.get(column, "") or ""
            if value not in values:
                values.append(value)
            out[i, j] = values.index(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="the LungSim set bench_train.py --accuracy splits")
    parser.add_argument("--train-extra", type=Path, action="append", default=[])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import f1_score, roc_auc_score

    from bench_train import STAGING_DATA
    from lungcancer.config import DataConfig
    from lungcancer.data import prepare_data

    with tempfile.TemporaryDirectory() as tmp:
        # The classifier benchmark's own data settings, so the same patients land in each split.
        prepared = prepare_data(DataConfig(source=str(args.data), **STAGING_DATA), tmp)
    classes = list(prepared.class_names)
    main_rows = _rows(args.data)
    by_path = {str((args.data / r["path"]).resolve()): i for i, r in enumerate(main_rows)}
    position = {
        split: [by_path[str(Path(prepared.index.samples[k].path).resolve())] for k in keys]
        for split, keys in prepared.splits.items()
    }
    measured = _features(args.data, main_rows, args.workers)
    sets = {split: ([main_rows[i] for i in idx], measured[idx]) for split, idx in position.items()}
    for extra in args.train_extra:
        rows = _rows(extra)
        train_rows, train_x = sets["train"]
        sets["train"] = (
            train_rows + rows,
            np.concatenate([train_x, _features(extra, rows, args.workers)]),
        )
    print(f"classes: {', '.join(classes)}")
    print("slices: " + ", ".join(f"{k} {len(v[0])}" for k, v in sets.items()))
    for name, columns in (("lesion", APPEARANCE), ("lesion + N, M", APPEARANCE + SPREAD)):
        vocab: dict[str, list[str]] = {}
        x = {k: np.hstack([m, _encode(r, columns, vocab)]) for k, (r, m) in sets.items()}
        y = {
            k: np.asarray([classes.index(row["label"]) for row in r]) for k, (r, _) in sets.items()
        }
        tree = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=0)
        tree.fit(x["train"], y["train"])
        for split in ("val", "test"):
            probs = tree.predict_proba(x[split])
            predicted = probs.argmax(axis=1)
            per_class = f1_score(y[split], predicted, average=None, labels=range(len(classes)))
            macro_f1 = f1_score(y[split], predicted, average="macro")
            print(
                f"{name:14s} {split:4s}: macro F1 {macro_f1:.3f}"
                f"  macro AUC {roc_auc_score(y[split], probs, multi_class='ovr'):.3f}  F1 "
                + " ".join(f"{c} {v:.3f}" for c, v in zip(classes, per_class, strict=True))
            )


if __name__ == "__main__":
    main()
