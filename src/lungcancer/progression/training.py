"""`train_gan`: read a dataset, split it by patient, build patch pairs, run the training loop.

Patients are split with the data layer's `make_splits` (the same patient-level, class-stratified
logic as the classifier, so with the same DataConfig a patient is held out from both): pairs of
"train" patients are trained on, "val" patients feed the sample grids and the validation L1,
and "test" patients are recorded in the checkpoint as held out for `evaluate_gan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lungcancer.config import DataConfig, GanConfig, save_configs
from lungcancer.errors import ConfigError, DatasetError
from lungcancer.progression.checkpoint import gan_geometry, gan_window
from lungcancer.progression.loop import GanTrainResult, training_loop
from lungcancer.progression.pairs import (
    LesionView,
    PatchSet,
    lesion_views_from_index,
    longitudinal_pairs,
    make_patch_set,
)
from lungcancer.train.distributed import distributed_session

MODES = ("paired", "unpaired")
SIZE_TARGETS = ("auto", "mask", "calibrated", "future")


def check_gan_config(cfg: GanConfig) -> None:
    """Refuse settings that cannot train, naming the key."""
    if cfg.mode not in MODES:
        raise ConfigError("unknown gan.mode", expected=" | ".join(MODES), found=cfg.mode)
    if cfg.size_target not in SIZE_TARGETS:
        raise ConfigError(
            "unknown gan.size_target", expected=" | ".join(SIZE_TARGETS), found=cfg.size_target
        )
    if cfg.size_target == "future" and cfg.mode != "paired":
        raise ConfigError(
            "gan.size_target: future needs a true future scan",
            expected="gan.mode: paired",
            found=f"gan.mode: {cfg.mode}",
            hint="use size_target: mask for unpaired training",
        )
    if cfg.spatial_dims not in (2, 3):
        raise ConfigError("gan.spatial_dims must be 2 or 3", found=str(cfg.spatial_dims))
    multiple = 2 ** (cfg.levels - 1)
    if cfg.patch_size % multiple or cfg.patch_size < 16:
        raise ConfigError(
            "gan.patch_size does not fit the U-Net depth",
            expected=f"a multiple of {multiple} (2**(levels-1)), at least 16",
            found=str(cfg.patch_size),
            hint="use 32 or 64 (3D) or 64 or 128 (2D)",
        )
    # MONAI's PatchDiscriminator halves the patch d_layers times, then two 4x4 convolutions
    # of stride 1 each take a pixel off: at least one pixel must be left.
    smallest = 3 * 2**cfg.d_layers
    if cfg.patch_size < smallest:
        raise ConfigError(
            "gan.patch_size is too small for the discriminator's depth",
            expected=f"a patch of at least {smallest} (3 x 2**d_layers) with gan.d_layers = "
            f"{cfg.d_layers}",
            found=str(cfg.patch_size),
            hint=f"raise gan.patch_size, or lower gan.d_layers to "
            f"{max(1, (cfg.patch_size // 3).bit_length() - 1)}",
        )
    if not cfg.window_high_hu > cfg.window_low_hu:
        raise ConfigError(
            "the HU window is empty",
            expected="gan.window_high_hu > gan.window_low_hu",
            found=f"{cfg.window_low_hu}..{cfg.window_high_hu}",
        )
    bad = [a for a in cfg.augment if a not in ("translation", "cutout")]
    if bad:
        raise ConfigError(
            "unsupported DiffAugment op",
            expected="translation, cutout (intensity ops would move HU)",
            found=", ".join(bad),
        )
    if len(set(cfg.stages)) != len(cfg.stages) or len(cfg.stages) < 2:
        raise ConfigError(
            "gan.stages must be at least two distinct names", found=", ".join(cfg.stages)
        )
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.r1_every < 1:
        raise ConfigError(
            "gan.steps, gan.batch_size and gan.r1_every must be positive",
            found=f"steps={cfg.steps}, batch_size={cfg.batch_size}, r1_every={cfg.r1_every}",
        )


def patient_splits(data: str | Path, data_cfg: DataConfig) -> dict[str, tuple[str, ...]]:
    """Patients of each split ("train", "val", "test"), by the data layer's split logic.

    Args:
        data: dataset folder or manifest.
        data_cfg: split settings (`split_file`, fractions, seed).

    Returns:
        Sorted patient ids per split.
    """
    from lungcancer.data import load_index, load_splits, make_splits

    index = load_index(data)
    if not index.has_patient_ids:
        raise DatasetError(
            "the dataset has no patient ids",
            path=data,
            expected="a patient_id per row (pairs and held-out patients are per patient)",
            found="no patient ids",
            hint="add a patient_id column to the manifest",
        )
    if data_cfg.split_file:
        splits = load_splits(data_cfg.split_file, index)
    else:
        splits = make_splits(
            index,
            val_fraction=data_cfg.val_fraction,
            test_fraction=data_cfg.test_fraction,
            seed=data_cfg.seed,
        )
    return {
        name: tuple(sorted({index.samples[i].patient_id for i in members}))
        for name, members in splits.indices.items()
    }


def build_patch_sets(
    views: Sequence[LesionView], cfg: GanConfig, patients: Sequence[str]
) -> PatchSet | None:
    """Training examples of some patients: longitudinal pairs (paired) or single views."""
    chosen = set(patients)
    mine = [v for v in views if v.patient_id in chosen]
    if not mine:
        return None
    paired = cfg.mode == "paired"
    pairs = longitudinal_pairs(mine) if paired else [(v, v) for v in mine]
    return make_patch_set(
        pairs, cfg.stages, gan_geometry(cfg), gan_window(cfg), headroom=1.0 if paired else 1.5
    )


def train_gan(
    gan_cfg: GanConfig, data_cfg: DataConfig | None = None, *, progress: bool = True
) -> GanTrainResult:
    """Train the progression GAN on a dataset (LungSim longitudinal, or stage labels only).

    Args:
        gan_cfg: GAN settings; `gan_cfg.data` (or `data_cfg.source`) is the dataset.
        data_cfg: split settings (defaults: DataConfig()).
        progress: show a progress bar.

    Returns:
        The run's outputs (checkpoint, losses, sample grids).
    """
    check_gan_config(gan_cfg)
    data_cfg = data_cfg or DataConfig()
    data = gan_cfg.data or data_cfg.source
    if not data:
        raise ConfigError(
            "no dataset given", expected="--data DIR (or gan.data in the config)", found="none"
        )
    splits = patient_splits(data, data_cfg)
    views = lesion_views_from_index(data, gan_cfg.stages, gan_cfg.spatial_dims)
    if gan_cfg.mode == "paired":
        months_per_patient: dict[str, set[float]] = {}
        for v in views:
            months_per_patient.setdefault(v.patient_id, set()).add(v.months)
        if not any(len(m) > 1 for m in months_per_patient.values()):
            raise DatasetError(
                "paired mode needs patients scanned at two or more time points",
                path=data,
                expected="a longitudinal dataset (e.g. `lungcancer synth --timepoints 0,3,6,12`)",
                found="one time point per patient",
                hint="use --mode unpaired for datasets with stage labels only",
            )
    train_set = build_patch_sets(views, gan_cfg, splits.get("train", ()))
    if train_set is None:
        raise DatasetError(
            "no training lesions after the patient split",
            path=data,
            expected=f"lesions with stages in {', '.join(gan_cfg.stages)} in the train split",
            found="none",
            hint="check gan.stages against the dataset's stage column",
        )
    val_set = build_patch_sets(views, gan_cfg, splits.get("val", ()))
    out = Path(gan_cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Under torchrun every process gets here with the same data; the loop shares the work.
    with distributed_session(gan_cfg.device) as context:
        if context is None or context.is_main:
            save_configs(out / "config.yaml", gan=gan_cfg, data=data_cfg)
        return training_loop(
            gan_cfg,
            train_set,
            val_set,
            out,
            train_patients=splits.get("train", ()),
            heldout_patients=splits.get("test", ()),
            progress=progress,
        )
