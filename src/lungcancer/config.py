"""Frozen dataclass configs, loaded from YAML, overridden by CLI flags, saved beside outputs.

A YAML file has one section per config (`data:`, `model:`, `train:`, `gan:`); unknown keys are
an error, not a silent no-op, so a typo never trains the wrong model.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lungcancer.errors import ConfigError

C = TypeVar("C")


@dataclass(frozen=True)
class WindowConfig:
    """A CT display window in Hounsfield units."""

    center_hu: float = -600.0
    width_hu: float = 1500.0


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how an image becomes a network input.

    `windows` with several entries stacks one channel per window. `spacing_mm` (y, x) resamples
    in-plane before resizing; None keeps the native spacing. `slab_slices` > 1 adds neighbouring
    slices as channels (2.5D).
    """

    source: str = ""
    # More datasets whose every sample goes to the training split (their own split columns are
    # ignored): e.g. extra LungSim patients (`synth --id-prefix`) beside a fixed test set, or
    # synthetic data beside real scans. `source` alone is split, so its val and test splits
    # stay what they were without these; a patient id shared with them is refused as leakage.
    train_extra: tuple[str, ...] = ()
    layout: str = "auto"
    class_map: dict[str, str] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    split_file: str = ""
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    folds: int = 0
    fold: int = 0
    seed: int = 0
    windows: tuple[WindowConfig, ...] = (WindowConfig(),)
    image_size: int = 128
    spacing_mm: tuple[float, float] | None = None
    lung_crop: bool = False
    augment: bool = True
    # Random in-plane zoom of +/- this fraction, and elastic warping. Both off by default: the
    # T descriptor is a size in mm, so zooming a 40 mm tumour by 10% moves it across the
    # stage I/II threshold while its label stays. Turn them on for labels that are not sizes.
    augment_scale: float = 0.0
    augment_elastic: bool = False
    # Left-right flips (every axis in 3D). A flipped chest has its heart on the right, an
    # anatomy the test data never shows; turn off to keep sides as scanned.
    augment_flip: bool = True
    cache_dir: str = ".cache/lungcancer"
    patch_size_3d: int = 64
    spatial_dims: int = 2
    # 2.5D input (2D only): this many axial slices centred on the sample's slice, every
    # `slab_spacing_mm` apart (0: adjacent slices), as channels beside each window. A vessel
    # runs on through the neighbours and a nodule ends, which one slice cannot tell apart.
    # The network then takes len(windows) x slab_slices channels.
    slab_slices: int = 1
    slab_spacing_mm: float = 0.0


@dataclass(frozen=True)
class ModelConfig:
    """Which network, and how it starts."""

    name: str = "cnn"
    spatial_dims: int = 2
    in_chans: int = 1
    pretrained: str = ""
    dropout: float = 0.2
    # Global pooling before the head: "avg", or "avgmax" (average and maximum concatenated),
    # which keeps small findings such as nodes or a contralateral nodule from being averaged
    # away over the whole slice.
    pool: str = "avg"


@dataclass(frozen=True)
class TrainConfig:
    """How a classifier is trained. Epoch counts are whole passes over the training split."""

    out_dir: str = "runs/train"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_scale: float = 0.1
    weight_decay: float = 0.05
    # Fractions allowed: with N times more (unique) training data, 1/N keeps the warmup's
    # step count.
    warmup_epochs: float = 1.0
    freeze_epochs: int = 0
    label_smoothing: float = 0.05
    balance: str = "sampler"
    grad_clip: float = 1.0
    # Validate, select and save an exponential moving average of the weights with this
    # per-step decay (0: off; 0.998 averages about the last 500 steps).
    ema_decay: float = 0.0
    # Before each validation, recompute the judged network's batch-norm statistics from this
    # many training batches, un-augmented and the same every epoch (0: off; see
    # lungcancer.train.precise_bn). The momentum-averaged statistics lag the weights in short
    # runs and do not belong to a weight average at all. Costs about 3 training steps.
    precise_bn_batches: int = 8
    # Manifest columns the network also learns to predict from its pooled features (multi-task;
    # see lungcancer.train.aux), e.g. [diameter_mm, t, n, m, invasion] on LungSim. Training
    # only: the saved classifier is the same network either way.
    aux_targets: tuple[str, ...] = ()
    # Weight of the auxiliary loss against the classification loss.
    aux_weight: float = 0.5
    # Weight of the lesion-mask auxiliary loss (0: off; 2D, samples with a mask_path): a 1x1
    # convolution on the last feature map learns which cells hold the lesion (see
    # lungcancer.train.aux). Training only, like aux_targets.
    aux_mask_weight: float = 0.0
    patience: int = 5
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    workers: int = 0
    max_minutes: float = 0.0
    # Optimizer steps in all (0: `epochs` decide). The cosine schedule spans them and the run
    # ends there, validating the partial last epoch like a whole one: a fixed compute budget
    # for a training set of any size (e.g. 1.5 passes over a large one). `epochs` stays an
    # upper bound.
    max_steps: int = 0
    # Progressive resizing: the first `low_res_fraction` of the optimizer steps see each batch
    # resized (anti-aliased) to `low_res_px` pixels across, then the rest at the data's own
    # size, which validation, checkpoints and predict always use. A DenseNet121 step at 96 px
    # costs about two thirds of one at 128 px, so a fixed CPU budget buys more steps (0: off).
    low_res_px: int = 0
    low_res_fraction: float = 0.0
    # Instead of resizing, the same phase can crop: the central (rows, columns) of each input
    # ((depth, rows, columns) in 3D) at the same pixel size, so no size in mm changes. On a
    # 128 px lung-centred input at 2.8 mm, (80, 112) spans both lungs (LungSim's widest to
    # within a millimetre) and costs about two thirds of a full step. Set this or `low_res_px`,
    # with `low_res_fraction`.
    low_res_crop_px: tuple[int, ...] = ()
    resume: bool = False
    # CPU threads; 0 = one per physical core (fewer helps when other jobs share the CPU).
    threads: int = 0


@dataclass(frozen=True)
class GanConfig:
    """How the progression GAN is trained (docs/readme/progression.md explains each part).

    Patches are lesion-centred, `patch_size` pixels across, resampled so the field of view is
    `fov_per_diameter` times the larger of the input and target lesion diameters, but never
    finer than `min_spacing_mm` per pixel: a 10 mm and a 100 mm tumour both fill the patch the
    same way, whatever the scan's pixel size. HU are windowed to [-1, 1] over
    [window_low_hu, window_high_hu] and inverted back for outputs.
    `mode` is "paired" (LungSim longitudinal pairs) or "unpaired" (stage labels only).
    Loss weights are `lambda_*`; `r1_every` is the lazy-R1 interval in steps. `r1_gamma` is
    small because a generated lesion differs from its true future by little (mean 0.01 window
    units): at 1.0 the penalty kept the discriminator flat (hinge loss 2.000 throughout) and the
    adversarial term did nothing; `gan train` prints the discriminator's margin. `threads` 0 uses
    one CPU thread per physical core; on a machine shared with other jobs 1 can be much faster
    (oversubscribed OpenMP threads spin-wait on each other).
    """

    data: str = ""
    out_dir: str = "runs/gan"
    mode: str = "paired"
    spatial_dims: int = 2
    patch_size: int = 64
    min_spacing_mm: float = 1.0
    fov_per_diameter: float = 2.0
    window_low_hu: float = -1000.0
    window_high_hu: float = 400.0
    stages: tuple[str, ...] = ("I", "II", "III", "IV")
    base_channels: int = 16
    levels: int = 4
    cond_dim: int = 64
    soft_gate: bool = True
    d_channels: int = 32
    d_layers: int = 3
    steps: int = 2000
    batch_size: int = 8
    lr_g: float = 5e-4
    lr_d: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.99
    ema_beta: float = 0.995
    r1_gamma: float = 0.001
    r1_every: int = 16
    lambda_adv: float = 2.0
    lambda_l1: float = 20.0
    lambda_ssim: float = 5.0
    lambda_lesion: float = 20.0
    lambda_size: float = 2.0
    lambda_diameter: float = 0.5
    lambda_dice: float = 10.0
    # What the size terms aim the rendered lesion at, read through the ruler's threshold:
    # "mask", the future's mask and recorded diameter; "calibrated", those grown by the ruler's
    # overshoot on the pair's unchanged input (a real lesion of that size reads that much
    # larger: README, "The ruler's own error"); "future" (paired), the true future scan read
    # the same way near its lesion, so that a perfect rendering pays nothing; "auto", "future"
    # when paired and "mask" unpaired (no true future there: a disc of the target diameter).
    size_target: str = "auto"
    lambda_cls: float = 1.0
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0
    augment: tuple[str, ...] = ("translation", "cutout")
    sample_every: int = 250
    checkpoint_every: int = 250
    log_every: int = 25
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    threads: int = 0
    max_minutes: float = 20.0
    resume: bool = False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Turn YAML scalars/lists/dicts into the annotated field type, or fail with the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], where)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{where}' must be a mapping", found=repr(value))
        return from_dict(tp, value, prefix=f"{where}.")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(
                f"'{where}' has the wrong number of items",
                expected=f"{len(args)} items",
                found=repr(value),
            )
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{where}' must be a mapping", found=repr(value))
        return {str(k): str(v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"'{where}' must be true or false", found=repr(value))
    if tp in (int, float, str):
        try:
            return tp(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"'{where}' has the wrong type", expected=tp.__name__, found=repr(value)
            ) from exc
    return value


def from_dict(cls: type[C], values: Mapping[str, Any], prefix: str = "") -> C:
    """Build a frozen config from a mapping; unknown keys raise `ConfigError`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}",
            expected=f"keys of {cls.__name__}: {', '.join(sorted(names))}",
            found=", ".join(unknown),
            hint="check the spelling in the YAML file or the flag",
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A YAML/JSON-friendly dict of a config (tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    result = plain(cfg)
    assert isinstance(result, dict)
    return result


def override(cfg: C, **changes: Any) -> C:
    """A copy of `cfg` with the given fields replaced; None values (unset flags) are ignored."""
    given = {k: v for k, v in changes.items() if v is not None}
    merged = {**to_dict(cfg), **given}
    return from_dict(type(cfg), merged)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict of sections."""
    p = Path(path)
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError("config file not found", path=p, hint="check the path") from exc
    except yaml.YAMLError as exc:
        raise ConfigError("config file is not valid YAML", path=p, found=str(exc)) from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            "config file must be a mapping of sections",
            path=p,
            expected="data:, model:, train:, gan: ...",
            found=type(loaded).__name__,
        )
    return loaded


def load_section(path: str | Path | None, section: str, cls: type[C]) -> C:
    """One section of a YAML file as a config; defaults when no file or section is given."""
    if path is None:
        return cls()
    values = load_yaml(path).get(section) or {}
    try:
        return from_dict(cls, values, prefix=f"{section}.")
    except ConfigError as exc:
        raise ConfigError(
            exc.message, path=path, expected=exc.expected, found=exc.found, hint=exc.hint
        ) from exc


def save_configs(path: str | Path, **sections: Any) -> None:
    """Write configs as one YAML file with a section each (atomically)."""
    from lungcancer.io.atomic import atomic_write_text

    text = yaml.safe_dump({k: to_dict(v) for k, v in sections.items()}, sort_keys=False)
    atomic_write_text(Path(path), text)
