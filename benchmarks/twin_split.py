"""A split file for a LungSim twin that puts every patient where the original's split put it.

Usage:
    python benchmarks/twin_split.py ORIGINAL TWIN --out SPLIT.json [--config CONFIG]

A twin is the same LungSim patients drawn again with other follow-up settings
(`lungcancer synth --config ORIGINAL/synth_config.yaml --followup-pose baseline
--no-followup-spread`). Its split cannot be made again from its own manifest: the split is
stratified by each patient's labels, which change when the spread is held, and a split file
of the original names samples by their lesion centres, which move when the pose does. This
writes one keyed by the twin's own samples, with each patient in the split the original's
settings give it (`data:` of CONFIG, e.g. the GAN's config.yaml; defaults without), so that
`lungcancer gan evaluate CKPT --data TWIN --config FILE --split test` scores the same held-out
patients as on the original, where `data.split_file` in FILE is SPLIT.json.
"""

from __future__ import annotations

import argparse

from lungcancer.config import DataConfig, load_section
from lungcancer.data import load_index
from lungcancer.data.splits import Splits, save_splits
from lungcancer.progression.training import patient_splits


def twin_splits(original: str, twin: str, data_cfg: DataConfig) -> Splits:
    """The twin's samples, each in the split of its patient in the original."""
    where = {p: name for name, ids in patient_splits(original, data_cfg).items() for p in ids}
    index = load_index(twin)
    missing = sorted({s.patient_id for s in index.samples} - set(where))
    if missing:
        raise SystemExit(f"{len(missing)} twin patients are not in {original} (e.g. {missing[0]})")
    indices: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, sample in enumerate(index.samples):
        indices[where[sample.patient_id]].append(i)
    return Splits(
        indices=indices,
        keys=tuple(index.sample_keys()),
        seed=data_cfg.seed,
        val_fraction=data_cfg.val_fraction,
        test_fraction=data_cfg.test_fraction,
        grouping=("patient",),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("original")
    parser.add_argument("twin")
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", default=None, help="YAML whose data: section split ORIGINAL")
    args = parser.parse_args()
    splits = twin_splits(args.original, args.twin, load_section(args.config, "data", DataConfig))
    save_splits(splits, args.out)
    print(f"{args.out}: {splits.sizes()} samples, patients as in {args.original}")


if __name__ == "__main__":
    main()
