"""What training and prediction call: a checked, split, audited dataset; and any file as inputs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lungcancer.config import DataConfig
from lungcancer.data.audit import AuditReport, audit, image_hashes
from lungcancer.data.cache import SampleCache
from lungcancer.data.index import DatasetIndex
from lungcancer.data.layouts import load_index
from lungcancer.data.manifest import MIN_LESION_VOXELS
from lungcancer.data.measure import measure_lesions
from lungcancer.data.splits import load_splits, make_splits, save_splits
from lungcancer.data.transforms import lung_box, preprocess
from lungcancer.errors import ConfigError, DatasetError
from lungcancer.io import Scan, read_image, read_mask

# A volume without a mask becomes this many axial slices (2D) or patches per axis (3D).
SLICES_PER_VOLUME = 9
PATCHES_PER_AXIS = 3
# Slices probed to find where the lungs are along z.
_LUNG_PROBES = 24


@dataclass(frozen=True)
class PreparedData:
    """A dataset ready for training.

    Attributes:
        index: every sample, with the class list.
        splits: "train"/"val"/"test" -> sample positions in `index`.
        class_names: the class list (class id = position).
        split_file: where the splits are saved (reused by later runs).
        audit: the leakage audit of these splits.
    """

    index: DatasetIndex
    splits: dict[str, list[int]]
    class_names: tuple[str, ...]
    split_file: Path
    audit: AuditReport


def prepare_data(cfg: DataConfig, run_dir: str | Path) -> PreparedData:
    """Load, split (or reuse a split file), and audit a dataset.

    The split file is `cfg.split_file` when that exists (reused as it is); otherwise new
    splits are made and saved to `cfg.split_file` if one is named, else to
    `run_dir/splits.json`. Datasets without patient ids are hashed first (through the cache in
    `cfg.cache_dir`, which this also fills) so near-duplicates stay in one split.

    Args:
        cfg: data settings (source, layout, classes, split fractions, seed, folds).
        run_dir: the run's output folder.

    Returns:
        The index, the splits, the class list, the split file and the audit.

    Raises:
        ConfigError: no data source given.
        DatasetError: unusable data, a split file that no longer fits, or patients shared
            between splits.
    """
    if not cfg.source:
        raise ConfigError(
            "no dataset given",
            expected="data.source: a dataset folder, manifest CSV or .npz",
            found="an empty data.source",
            hint="set data.source in the YAML file or pass --data PATH",
        )
    index = load_index(cfg.source, layout=cfg.layout, class_map=cfg.class_map, classes=cfg.classes)
    cache = SampleCache(cfg.cache_dir) if cfg.cache_dir else None
    hashes = None if index.has_patient_ids else image_hashes(index, cfg, cache=cache)
    named = Path(cfg.split_file) if cfg.split_file else None
    if named is not None and named.exists():
        split_file = named
        splits = load_splits(named, index)
        if (splits.folds, splits.fold) != (cfg.folds, cfg.fold):
            raise DatasetError(
                "the split file was made for other cross-validation settings",
                path=named,
                expected=f"folds={cfg.folds}, fold={cfg.fold} (from the config)",
                found=f"folds={splits.folds}, fold={splits.fold}",
                hint="point data.split_file at the right fold's file, or make one with "
                "`lungcancer data split --folds K --fold F`",
            )
    else:
        split_file = named if named is not None else Path(run_dir) / "splits.json"
        splits = make_splits(
            index,
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
            seed=cfg.seed,
            folds=cfg.folds,
            fold=cfg.fold,
            hashes=hashes,
        )
        save_splits(splits, split_file)
    indices = splits.indices
    if cfg.train_extra:
        n_main = len(index.samples)
        index, indices = _with_training_extras(index, indices, cfg)
        if not index.has_patient_ids:
            # Near-duplicates between the extra training data and val/test are leakage too.
            # Samples already hashed for the split are not hashed again.
            start = 0 if hashes is None else n_main
            rest = image_hashes(replace(index, samples=index.samples[start:]), cfg, cache=cache)
            hashes = rest if hashes is None else hashes.extended(rest)
    report = audit(index, indices, hashes=hashes, check_duplicates=hashes is not None)
    if report.patients_leak:
        shared = ", ".join(f"{k}: {v}" for k, v in report.patient_overlap.items() if v)
        raise DatasetError(
            "patients are shared between splits, so test results would be inflated",
            path=split_file,
            expected="each patient in exactly one split",
            found=f"shared patients ({shared}); e.g. keys {', '.join(report.overlap_examples)}",
            hint="the layout's fixed split folders mix patients: remove the split folders "
            "or write a manifest with patient-level splits, then make a new split file",
        )
    return PreparedData(
        index=index,
        splits=indices,
        class_names=index.class_names,
        split_file=split_file,
        audit=report,
    )


def _with_training_extras(
    index: DatasetIndex, splits: dict[str, list[int]], cfg: DataConfig
) -> tuple[DatasetIndex, dict[str, list[int]]]:
    """`index` with every sample of `cfg.train_extra` appended to the training split.

    Extra samples keep the main dataset's class ids; their own split columns are ignored. With
    `cfg.classes` set, their unlisted classes are left out (and reported) as the main
    dataset's are, and an extra dataset may hold only some of the listed classes; otherwise a
    class the main dataset lacks is an error, since the model could never predict it on
    validation or test data.

    Raises:
        DatasetError: an extra dataset that cannot be read, has a class the main one lacks, or
            shares patient ids with the validation or test split.
    """
    held_out = {
        index.samples[i].patient_id for name in ("val", "test") for i in splits.get(name, [])
    } - {""}
    known = set(index.class_names)
    samples = list(index.samples)
    problems = list(index.problems)
    has_ids = index.has_patient_ids
    for source in cfg.train_extra:
        # Loaded without the class list (listing it would demand every class of it here):
        # extra data may hold a single class, e.g. more normal scans.
        extra = load_index(source, class_map=cfg.class_map, min_classes=1)
        unknown = sorted(set(extra.class_names) - known)
        kept = list(extra.samples)
        if unknown and cfg.classes:
            kept = [s for s in extra.samples if s.label in known]
            problems.extend(
                f"{source}: {sum(s.label == name for s in extra.samples)} samples of class "
                f"'{name}' left out (not in data.classes)"
                for name in unknown
            )
        elif unknown:
            raise DatasetError(
                "a training-only dataset has classes the main dataset does not",
                path=source,
                expected=f"classes among {', '.join(index.class_names)} (from {cfg.source})",
                found=", ".join(unknown),
                hint="rename them with data.class_map, or list the classes to keep in data.classes",
            )
        shared = sorted({s.patient_id for s in kept} & held_out)
        if shared:
            raise DatasetError(
                "a training-only dataset shares patient ids with the validation or test split",
                path=source,
                expected="patients that are not in the main dataset's val or test split",
                found=f"{len(shared)} shared ids, e.g. {', '.join(shared[:3])}",
                hint="if they are other patients, give them other ids (LungSim: `lungcancer "
                "synth --id-prefix`); if they are the same patients, leave them out",
            )
        samples.extend(replace(s, split="train") for s in kept)
        problems.extend(f"{source}: {p}" for p in extra.problems)
        has_ids = has_ids and extra.has_patient_ids
    merged = replace(
        index, samples=tuple(samples), problems=tuple(problems), has_patient_ids=has_ids
    )
    added = list(range(len(index.samples), len(samples)))
    return merged, {**splits, "train": [*splits.get("train", []), *added]}


def _lung_z_range(scan: Scan) -> tuple[int, int]:
    depth = scan.shape[0]
    probes = sorted({int(z) for z in np.linspace(0, depth - 1, min(_LUNG_PROBES, depth))})
    found = [z for z in probes if lung_box(scan.array[z], scan.intensity) is not None]
    if not found:
        # No lung field detected: the central 60% of the volume holds the chest in most scans.
        return int(depth * 0.2), max(int(depth * 0.8) - 1, int(depth * 0.2))
    return found[0], found[-1]


def preprocess_file(
    path: str | Path, cfg: DataConfig, *, mask_path: str | Path | None = None
) -> list[tuple[str, np.ndarray]]:
    """Network inputs for one image file, for prediction.

    - A 2D image: one item, "image".
    - A volume with a lesion mask: one item per lesion (connected component, largest first),
      its centre slice (2D) or a patch around it (3D), named "lesion K (z=..., D mm)".
    - A volume without a mask: `SLICES_PER_VOLUME` axial slices evenly spaced over the slices
      where a lung field is found (2D), or `PATCHES_PER_AXIS`^3 patches on a grid over that
      range and the middle slice's lung box (3D); predict aggregates them per scan.

    Args:
        path: any image `lungcancer.io.read_image` reads.
        cfg: preprocessing settings (as saved in the checkpoint).
        mask_path: lesion mask on the image's grid.

    Returns:
        (name, array) pairs; arrays as `preprocess` returns them.
    """
    scan = read_image(path)
    if mask_path is not None:
        mask = read_mask(mask_path, like=scan)
        lesions = measure_lesions(
            mask, scan.spacing_mm, min_voxels=MIN_LESION_VOXELS, source=str(mask_path)
        )
        items = []
        for k, lesion in enumerate(lesions, start=1):
            z = round(lesion.center_zyx[0])
            name = f"lesion {k} (z={z}, {lesion.diameter_mm:.1f} mm)"
            array = preprocess(scan, cfg, slice_index=z, center_zyx=lesion.center_zyx)
            items.append((name, array))
        return items
    if not scan.is_volume:
        return [("image", preprocess(scan, cfg))]
    z_lo, z_hi = _lung_z_range(scan)
    if cfg.spatial_dims == 2:
        picks = sorted({round(z) for z in np.linspace(z_lo, z_hi, SLICES_PER_VOLUME)})
        return [(f"slice {z}", preprocess(scan, cfg, slice_index=z)) for z in picks]
    middle = (z_lo + z_hi) // 2
    height, width = scan.shape[1:]
    box = lung_box(scan.array[middle], scan.intensity) or (0, height, 0, width)
    items = []
    for z in np.linspace(z_lo, z_hi, PATCHES_PER_AXIS):
        for y in np.linspace(box[0], box[1], PATCHES_PER_AXIS + 2)[1:-1]:
            for x in np.linspace(box[2], box[3], PATCHES_PER_AXIS + 2)[1:-1]:
                centre = (float(z), float(y), float(x))
                name = f"patch z={round(z)},y={round(y)},x={round(x)}"
                items.append((name, preprocess(scan, cfg, center_zyx=centre)))
    return items
