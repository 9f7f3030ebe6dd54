"""Patient-level, class-stratified, seeded train/val/test splits (and k folds), saved as JSON.

Samples are first joined into groups that must never be separated: one patient, one image file
(the lesions of one volume), and, when image hashes are given, near-duplicate images (for
datasets without patient ids). Groups, not samples, are then dealt to splits: per class, largest
groups first, each to the split furthest below its target share.

Splits fixed by the layout (train/val/test folders, a manifest's split column, MedMNIST's
arrays) are kept: a fixed test set is never re-drawn; without a fixed val set, val is carved
from the training pool. With `folds` >= 2 the non-test pool is dealt into k folds and fold
`fold` is val.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungcancer.data.audit import ImageHashes, near_duplicate_groups
from lungcancer.data.index import DatasetIndex
from lungcancer.errors import ConfigError, DatasetError
from lungcancer.io.atomic import atomic_write_text

SPLIT_NAMES = ("train", "val", "test")
_FORMAT = "lungcancer-splits"
_MAX_LISTED = 5


@dataclass(frozen=True)
class Splits:
    """Which sample positions of an index form each split.

    Attributes:
        indices: "train", "val", "test" -> sorted sample positions (a split may be empty).
        keys: the stable key of every sample of the index (what a saved file refers to).
        seed: the seed that dealt the groups.
        val_fraction: requested share of val.
        test_fraction: requested share of test.
        folds: number of folds (0 = no cross-validation).
        fold: which fold is val.
        grouping: what kept samples together ("patient", "file", "near-duplicate").
        fixed: the splits the layout fixed and that were kept.
    """

    indices: dict[str, list[int]]
    keys: tuple[str, ...]
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    folds: int = 0
    fold: int = 0
    grouping: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()

    def sizes(self) -> dict[str, int]:
        """Samples per split."""
        return {name: len(members) for name, members in self.indices.items()}


def _check_arguments(val_fraction: float, test_fraction: float, folds: int, fold: int) -> None:
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0):
        raise ConfigError(
            "split fractions must lie in [0, 1)",
            expected="0 <= val_fraction, test_fraction < 1",
            found=f"val_fraction={val_fraction}, test_fraction={test_fraction}",
        )
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            "val and test together leave nothing to train on",
            expected="val_fraction + test_fraction < 1",
            found=f"{val_fraction} + {test_fraction}",
        )
    if folds == 1 or folds < 0 or (folds >= 2 and not 0 <= fold < folds):
        raise ConfigError(
            "bad cross-validation settings",
            expected="folds = 0 (none) or >= 2, and 0 <= fold < folds",
            found=f"folds={folds}, fold={fold}",
        )


def _union_groups(index: DatasetIndex, hashes: ImageHashes | None) -> list[list[int]]:
    """Sample positions joined by shared patient, shared file, or near-duplicate image."""
    n = len(index.samples)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(members: list[int]) -> None:
        root = find(members[0])
        for other in members[1:]:
            other_root = find(other)
            if other_root != root:
                parent[max(root, other_root)] = min(root, other_root)
                root = min(root, other_root)

    by_key: dict[tuple[str, str], list[int]] = {}
    for i, sample in enumerate(index.samples):
        if sample.patient_id:
            by_key.setdefault(("patient", sample.patient_id), []).append(i)
        if "npz_array" not in sample.extra:
            # Lesions (slices, patches) of one volume share its anatomy: one group.
            by_key.setdefault(("file", sample.path), []).append(i)
    for members in by_key.values():
        join(members)
    if hashes is not None:
        for members in near_duplicate_groups(hashes):
            join(members)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _deal(
    groups: list[list[int]],
    labels: list[int],
    shares: dict[str, float],
    rng: np.random.Generator,
    main: str | None = None,
) -> dict[str, list[int]]:
    """Deal groups to named parts, class by class, each to the part furthest below its share.

    Targets are cumulative over classes (the ideal count so far, rounded, minus what a part
    already got), so the fractions left over by small classes add up instead of vanishing:
    with two patients per class and a 20% test share, one class in five still gives a patient
    to test. Ties go to the smaller share. `main` (the training part) gets at least one group
    of every class that has any.
    """
    out: dict[str, list[int]] = {name: [] for name in shares}
    by_class: dict[int, list[list[int]]] = {}
    for group in groups:
        majority = Counter(labels[i] for i in group).most_common(1)[0][0]
        by_class.setdefault(majority, []).append(group)
    ideal = dict.fromkeys(shares, 0.0)
    given = dict.fromkeys(shares, 0)
    # Among equal deficits the smaller share wins, so small parts are not starved.
    preference = sorted(shares, key=lambda k: shares[k])
    for cls in sorted(by_class):
        class_groups = by_class[cls]
        order = rng.permutation(len(class_groups))
        # Largest first (ties in random order): small groups then even out the shares.
        ordered = sorted((class_groups[i] for i in order), key=len, reverse=True)
        total = sum(len(g) for g in ordered)
        target = {}
        for name, share in shares.items():
            ideal[name] += share * total
            target[name] = round(ideal[name]) - given[name]
        dealt = dict.fromkeys(shares, 0)
        for position, group in enumerate(ordered):
            last = position == len(ordered) - 1
            if main is not None and last and dealt[main] == 0:
                name = main
            else:
                name = max(preference, key=lambda k: target[k] - dealt[k])
            dealt[name] += len(group)
            out[name].extend(group)
        for name in shares:
            given[name] += dealt[name]
    return out


def make_splits(
    index: DatasetIndex,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
    folds: int = 0,
    fold: int = 0,
    hashes: ImageHashes | None = None,
) -> Splits:
    """Split a dataset by patient, stratified by class, reproducibly.

    Args:
        index: the dataset.
        val_fraction: share of samples for validation (ignored with folds: one fold is val).
        test_fraction: share for the held-out test set (ignored when the layout fixes test).
        seed: the same seed gives the same splits.
        folds: 0 for a single split, k >= 2 for k-fold cross-validation of the non-test pool.
        fold: which fold is val (0-based).
        hashes: image hashes (`audit.image_hashes`); near-duplicates then stay together.
            Needed for datasets without patient ids, where only they keep copies apart.

    Returns:
        The split positions and how they were made.

    Raises:
        ConfigError: fractions or fold settings out of range.
        DatasetError: nothing left to train on.
    """
    _check_arguments(val_fraction, test_fraction, folds, fold)
    rng = np.random.default_rng(seed)
    labels = index.label_ids()
    groups = _union_groups(index, hashes)
    fixed_names = sorted({s.split for s in index.samples if s.split})
    # Fixed samples stay where the layout put them; free samples grouped with them follow the
    # group's most common fixed split. A group the layout itself spreads over several splits
    # stays spread, and the audit reports it (prepare_data refuses shared patients).
    free: list[list[int]] = []
    fixed: dict[str, list[list[int]]] = {name: [] for name in SPLIT_NAMES}
    for group in groups:
        named = [index.samples[i].split for i in group if index.samples[i].split]
        if not named:
            free.append(group)
            continue
        majority = Counter(named).most_common(1)[0][0]
        parts: dict[str, list[int]] = {}
        for i in group:
            parts.setdefault(index.samples[i].split or majority, []).append(i)
        for name, members in parts.items():
            fixed[name].append(members)
    total = len(index.samples)

    if fixed["test"]:
        test = fixed["test"]
        pool = free + fixed["train"] + fixed["val"]
    elif test_fraction > 0 and free:
        share = min(test_fraction * total / max(1, sum(len(g) for g in free)), 1.0)
        dealt = _deal(free, labels, {"test": share, "rest": 1.0 - share}, rng, main="rest")
        test = [dealt["test"]] if dealt["test"] else []
        rest_set = set(dealt["rest"])
        pool = [g for g in free if g[0] in rest_set] + fixed["train"] + fixed["val"]
    else:
        test = []
        pool = free + fixed["train"] + fixed["val"]

    if folds >= 2:
        parts = _deal(pool, labels, {f"fold{k}": 1.0 / folds for k in range(folds)}, rng)
        val = parts[f"fold{fold}"]
        train = [i for k in range(folds) if k != fold for i in parts[f"fold{k}"]]
    elif fixed["val"]:
        val = [i for g in fixed["val"] for i in g]
        val_set = set(val)
        train = [i for g in pool for i in g if i not in val_set]
    elif val_fraction > 0 and pool:
        share = min(val_fraction * total / max(1, sum(len(g) for g in pool)), 1.0)
        dealt = _deal(pool, labels, {"val": share, "train": 1.0 - share}, rng, main="train")
        val, train = dealt["val"], dealt["train"]
    else:
        val, train = [], [i for g in pool for i in g]
    test_members = [i for g in test for i in g]
    if not train:
        raise DatasetError(
            "no samples are left for training",
            path=index.root,
            expected="a training split with at least one sample",
            found=f"{total} samples: {len(val)} val, {len(test_members)} test",
            hint="lower val/test fractions, or add training data",
        )
    grouping = ["file"]
    if any(s.patient_id for s in index.samples):
        grouping.insert(0, "patient")
    if hashes is not None:
        grouping.append("near-duplicate")
    return Splits(
        indices={"train": sorted(train), "val": sorted(val), "test": sorted(test_members)},
        keys=tuple(index.sample_keys()),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        folds=folds,
        fold=fold,
        grouping=tuple(grouping),
        fixed=tuple(fixed_names),
    )


def save_splits(splits: Splits, path: str | Path) -> None:
    """Write splits as JSON keyed by sample key (atomically)."""
    document = {
        "format": _FORMAT,
        "version": 1,
        "seed": splits.seed,
        "val_fraction": splits.val_fraction,
        "test_fraction": splits.test_fraction,
        "folds": splits.folds,
        "fold": splits.fold,
        "grouping": list(splits.grouping),
        "fixed": list(splits.fixed),
        "n_samples": len(splits.keys),
        "splits": {
            name: [splits.keys[i] for i in members] for name, members in splits.indices.items()
        },
    }
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def load_splits(path: str | Path, index: DatasetIndex) -> Splits:
    """Read a split file and map it onto `index`.

    Raises:
        DatasetError: the file is missing or malformed, or no longer matches the dataset
            (samples added, removed or renamed since it was written).
    """
    file_path = Path(path)
    try:
        document = json.loads(file_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(
            "split file not found",
            path=file_path,
            hint="create one with `lungcancer data split`",
        ) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(
            "the split file is not valid JSON", path=file_path, found=str(exc)
        ) from exc
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise DatasetError(
            "not a lungcancer split file",
            path=file_path,
            expected=f'a JSON object with "format": "{_FORMAT}"',
            found=type(document).__name__ if not isinstance(document, dict) else "other keys",
        )
    keys = index.sample_keys()
    position = {key: i for i, key in enumerate(keys)}
    if len(position) != len(keys):
        repeated = [k for k, n in Counter(keys).items() if n > 1]
        raise DatasetError(
            "the dataset lists some samples twice, so a split file cannot name them",
            path=index.root,
            found=_listed(repeated),
            hint="remove the repeated rows or files",
        )
    indices: dict[str, list[int]] = {}
    unknown: list[str] = []
    for name, members in dict(document.get("splits", {})).items():
        indices[name] = sorted(position[k] for k in members if k in position)
        unknown.extend(k for k in members if k not in position)
    covered = {i for members in indices.values() for i in members}
    absent = [keys[i] for i in range(len(keys)) if i not in covered]
    if unknown or absent:
        raise DatasetError(
            "the split file no longer matches the dataset",
            path=file_path,
            expected=f"the {len(keys)} samples of {index.root}",
            found=f"{len(unknown)} sample(s) in the file but not in the dataset "
            f"({_listed(unknown)}); {len(absent)} in the dataset but not in the file "
            f"({_listed(absent)})",
            hint="make a new split with `lungcancer data split` (or delete the file so "
            "training makes one); reusing it would mix old test samples into training",
        )
    for name in SPLIT_NAMES:
        indices.setdefault(name, [])
    return Splits(
        indices=indices,
        keys=tuple(keys),
        seed=int(document.get("seed", 0)),
        val_fraction=float(document.get("val_fraction", 0.0)),
        test_fraction=float(document.get("test_fraction", 0.0)),
        folds=int(document.get("folds", 0)),
        fold=int(document.get("fold", 0)),
        grouping=tuple(document.get("grouping", ())),
        fixed=tuple(document.get("fixed", ())),
    )


def layout_splits(index: DatasetIndex) -> dict[str, list[int]]:
    """The splits the layout itself fixes (split folders, a manifest's split column).

    Samples without one are under "unassigned". Empty when the layout fixes nothing.
    """
    if not any(s.split for s in index.samples):
        return {}
    fixed: dict[str, list[int]] = {}
    for i, sample in enumerate(index.samples):
        fixed.setdefault(sample.split or "unassigned", []).append(i)
    return fixed
