"""`simulate`: watch one tumour grow — growth timeline, GAN-rendered frames, classifier belief.

The growth model (Gompertz with a volume-doubling time) gives the diameter, T and stage at each
month; the GAN renders the lesion patch at that stage and size *from the baseline image* (every
frame is rendered from month 0, so errors do not compound), and the change is pasted back into
the full slice with a feathered blend. N and M are held at their baseline values unless given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from lungcancer.errors import CheckpointError
from lungcancer.io.atomic import atomic_write_text
from lungcancer.io.record import Scan
from lungcancer.progression.baselines import grow_lesion
from lungcancer.progression.checkpoint import LoadedGan, load_gan
from lungcancer.progression.patches import PatchGrid, disc_mask, greatest_diameter_mm
from lungcancer.progression.render import save_gif, save_strip, save_timeline_plot
from lungcancer.progression.timeline import (
    COARSE_STAGES,
    SimulationError,
    TimelineFrame,
    apply_spread,
    check_no_regression,
    default_vdt_days,
    growth_timeline,
    resolve_histology,
    resolve_invasion,
)

DEFAULT_MONTHS = (0.0, 3.0, 6.0, 12.0, 18.0, 24.0)


@dataclass(frozen=True)
class Lesion:
    """Where the lesion is and how big, in the image's voxel grid.

    Attributes:
        center_zyx: lesion centre in voxels.
        diameter_mm: baseline diameter.
        source: "mask" or "point".
    """

    center_zyx: tuple[float, float, float]
    diameter_mm: float
    source: str


@dataclass(frozen=True)
class SimulationResult:
    """A simulated progression.

    Attributes:
        timeline: one frame description per month (with probabilities when scored).
        frames_hu: the full slice through the lesion at each month, in HU.
        volumes_hu: a 3D GAN's whole rendered volume at each month, in HU (empty for a 2D
            GAN). Spread findings are drawn on `frames_hu` only.
        lesion: baseline lesion position and size.
        vdt_days: volume-doubling time used.
        histology: growth-model histology key.
        notes: what the user should know (padding, N/M held, size limits, ...).
        class_names: the classifier's classes (empty without a classifier).
        files: written outputs by kind (strip, gif, timeline_json, plot, frames).
    """

    timeline: tuple[TimelineFrame, ...]
    frames_hu: tuple[np.ndarray, ...]
    lesion: Lesion
    vdt_days: float
    histology: str
    notes: tuple[str, ...]
    class_names: tuple[str, ...] = ()
    files: dict[str, Path] = field(default_factory=dict)
    volumes_hu: tuple[np.ndarray, ...] = ()


def parse_months(text: str) -> tuple[float, ...]:
    """ "0,3,6,12" -> (0.0, 3.0, 6.0, 12.0); a clear error for anything else."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise SimulationError(
            "--months must be numbers separated by commas", expected="e.g. 0,3,6,12", found=text
        ) from exc
    if not values:
        raise SimulationError("no time points", expected="e.g. 0,3,6,12", found=repr(text))
    return values


def parse_spread(text: str) -> tuple[tuple[float, str], ...]:
    """ "12:N2,18:M1a" -> ((12.0, "N2"), (18.0, "M1a")); a clear error for anything else."""
    schedule = []
    for item in (v.strip() for v in text.split(",") if v.strip()):
        month, sep, value = item.partition(":")
        try:
            schedule.append((float(month), value.strip()))
        except ValueError:
            sep = ""
        if not sep:
            raise SimulationError(
                "--spread must be MONTH:DESCRIPTOR items separated by commas",
                expected="e.g. 12:N2,18:M1a",
                found=text,
            )
    return tuple(sorted(schedule))


def parse_point(text: str) -> tuple[float, ...]:
    """ "12,80,64" -> (12.0, 80.0, 64.0) (z,y,x voxels; y,x for a slice)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise SimulationError(
            "--point must be voxel indices separated by commas",
            expected="z,y,x (or y,x for a slice), e.g. 0,120,88",
            found=text,
        ) from exc
    if len(values) not in (2, 3):
        raise SimulationError(
            "--point needs two or three numbers", expected="z,y,x or y,x", found=text
        )
    return values


def locate_lesion(
    scan: Scan,
    mask: np.ndarray | None,
    point_zyx: Sequence[float] | None,
    diameter_mm: float | None,
) -> Lesion:
    """The lesion from a mask (centre of its largest slice, area-equivalent diameter) or a point.

    Raises:
        SimulationError: no mask and no point, a point without a diameter, an empty mask, or
            a point outside the image.
    """
    if mask is not None:
        if not mask.any():
            raise SimulationError(
                "the lesion mask is empty",
                path=scan.source or None,
                expected="at least one lesion voxel",
                found="an all-zero mask",
                hint="check the mask file, or give --point z,y,x and --diameter-mm",
            )
        z = int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))
        ys, xs = np.nonzero(mask[z])
        measured = greatest_diameter_mm(mask[z], (scan.spacing_mm[1], scan.spacing_mm[2]))
        return Lesion(
            (float(z), float(ys.mean()), float(xs.mean())),
            float(diameter_mm) if diameter_mm else measured,
            "mask",
        )
    if point_zyx is None:
        raise SimulationError(
            "no lesion given",
            expected="a lesion mask (--mask M) or a point and a diameter "
            "(--point z,y,x --diameter-mm D)",
            found="neither",
            hint="give the lesion centre in voxels and its diameter, e.g. "
            "--point 0,120,88 --diameter-mm 14",
        )
    point = tuple(float(v) for v in point_zyx)
    if len(point) == 2:
        point = (0.0, *point)
    if len(point) != 3:
        raise SimulationError("--point needs z,y,x (or y,x for a slice)", found=str(point_zyx))
    if diameter_mm is None or not diameter_mm > 0:
        raise SimulationError(
            "a point needs a lesion diameter",
            expected="--diameter-mm D (> 0) with --point",
            found=str(diameter_mm),
            hint="measure the lesion's greatest diameter, or pass a lesion mask instead",
        )
    inside = all(-0.5 <= c <= n - 0.5 for c, n in zip(point, scan.shape, strict=True))
    if not inside:
        raise SimulationError(
            "the point lies outside the image",
            path=scan.source or None,
            expected=f"z,y,x within {scan.shape}",
            found=",".join(f"{c:g}" for c in point),
        )
    return Lesion((point[0], point[1], point[2]), float(diameter_mm), "point")


def _check_stages(gan: LoadedGan, timeline: Sequence[TimelineFrame]) -> None:
    missing = sorted({f.stage for f in timeline} - set(gan.stages))
    if missing:
        raise CheckpointError(
            "the GAN checkpoint was trained on another stage (class) set",
            path=gan.path,
            expected=f"stages {', '.join(COARSE_STAGES)} (the growth model's)",
            found=f"{', '.join(gan.stages)}; cannot render stage {', '.join(missing)}",
            hint="use a GAN trained on LungSim stages I-IV",
        )


def lesion_mask_from_point(
    image_hu: np.ndarray,
    center: tuple[float, ...],
    diameter_mm: float,
    spacing_mm: tuple[float, ...],
) -> np.ndarray:
    """A lesion mask when only a point and a diameter are known.

    Voxels within 0.6 x the diameter of the point that are denser than half-way between the
    lesion's core (median within a quarter diameter) and aerated lung (-850 HU), connected to
    the centre; a ball of the given diameter when that finds nothing.
    """
    core = disc_mask(image_hu.shape, center, diameter_mm / 2, spacing_mm)
    core_hu = float(np.median(image_hu[core])) if core.any() else 0.0
    threshold = float(np.clip((core_hu - 850.0) / 2, -750.0, -300.0))
    near = disc_mask(image_hu.shape, center, 1.2 * diameter_mm, spacing_mm)
    candidate = (image_hu > threshold) & near
    labels, count = ndimage.label(candidate)
    nearest = tuple(round(c) for c in center)
    inside = all(0 <= c < n for c, n in zip(nearest, image_hu.shape, strict=True))
    if count and inside and labels[nearest]:
        return np.asarray(labels == labels[nearest])
    return disc_mask(image_hu.shape, center, diameter_mm, spacing_mm)


def render_frames(
    gan: LoadedGan,
    scan: Scan,
    lesion: Lesion,
    timeline: Sequence[TimelineFrame],
    notes: list[str],
    mask: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Render every frame from the baseline image and paste it back.

    `mask` is the lesion mask on the scan's grid (z-y-x); without one it is found from the
    point and diameter (`lesion_mask_from_point`).

    Returns:
        One image per frame: the slice through the lesion for a 2D GAN, the whole volume for
        a 3D GAN.
    """
    dims = gan.config.spatial_dims
    z = round(lesion.center_zyx[0])
    image: np.ndarray
    center: tuple[float, ...]
    spacing: tuple[float, ...]
    if dims == 3:
        if not scan.is_volume:
            raise SimulationError(
                "a 3D GAN needs a volume",
                path=scan.source or None,
                expected="a CT volume",
                found="a single slice",
                hint="use a 2D GAN checkpoint for slices",
            )
        image, center, spacing = scan.array, lesion.center_zyx, scan.spacing_mm
    else:
        image, center, spacing = scan.array[z], lesion.center_zyx[1:], scan.spacing_mm[1:]
    if mask is not None:
        lesion_mask = mask if dims == 3 else mask[z]
    else:
        lesion_mask = lesion_mask_from_point(image, tuple(center), lesion.diameter_mm, spacing)
    limit = gan.max_diameter_mm
    padded_fov_mm = 0.0
    grids, patches, masks, target_sizes, source_sizes, spacings = [], [], [], [], [], []
    for frame in timeline:
        diameter = frame.diameter_mm
        if limit and diameter > limit:
            notes.append(
                f"month {frame.months:g}: {diameter:.1f} mm is larger than any lesion the GAN "
                f"was trained on; the frame shows it at {limit:.1f} mm (the timeline keeps "
                f"the growth model's {diameter:.1f} mm)"
            )
            diameter = limit
        # Each frame has its own field of view, as in training: fov_per_diameter x the larger
        # of the baseline and target lesion.
        patch_mm = gan.geometry.spacing_for(max(lesion.diameter_mm, diameter))
        fov_mm = patch_mm * gan.patch_size
        grid = PatchGrid(tuple(center), tuple(spacing), gan.patch_size, patch_mm)
        if grid.needs_padding(image.shape):
            padded_fov_mm = max(padded_fov_mm, fov_mm)
        grids.append(grid)
        patches.append(gan.window.to_unit(grid.extract(image)))
        masks.append((grid.extract(lesion_mask.astype(np.float32)) > 0.5).astype(np.float32))
        target_sizes.append(diameter / fov_mm)
        source_sizes.append(lesion.diameter_mm / fov_mm)
        spacings.append(patch_mm)
    if padded_fov_mm:
        extent = " x ".join(f"{n * s:.0f}" for n, s in zip(image.shape, spacing, strict=True))
        notes.append(
            f"the GAN's patch (up to {padded_fov_mm:.0f} mm across) reaches past the input "
            f"({extent} mm around the lesion); the input was edge-padded to fill it"
        )
    device = next(gan.generator.parameters()).device
    source = torch.from_numpy(np.stack(patches)[:, None]).to(device)
    target_size = torch.tensor(target_sizes, dtype=torch.float32, device=device)
    source_size = torch.tensor(source_sizes, dtype=torch.float32, device=device)
    with torch.no_grad():
        prior, _ = grow_lesion(
            source, torch.from_numpy(np.stack(masks)[:, None]).to(device), target_size / source_size
        )
        rendered = gan.generator(
            source,
            prior,
            torch.tensor([gan.stages.index(f.stage) for f in timeline], device=device),
            target_size,
            source_size,
            torch.tensor(spacings, dtype=torch.float32, device=device),
        )
    rendered_unit = rendered.float().cpu().numpy()[:, 0]
    frames = []
    for frame, grid, patch, out in zip(timeline, grids, patches, rendered_unit, strict=True):
        if frame.months == 0:
            # No time has passed: the frame is the input itself.
            pasted = image.copy()
        else:
            residual_hu = gan.window.to_hu(out) - gan.window.to_hu(patch)
            pasted = grid.paste_residual(image, residual_hu)
        frames.append(pasted)
    return frames


def _draw_spread(
    frames: list[np.ndarray],
    scan: Scan,
    lesion: Lesion,
    timeline: Sequence[TimelineFrame],
    baseline: TimelineFrame,
    m1a_kind: str,
    seed: int,
    notes: list[str],
    mask: np.ndarray | None,
) -> list[np.ndarray]:
    """Draw each frame's nodes and M1a findings beyond the baseline's, never over the tumour.

    `frames` are slices through the lesion (2D GAN) or whole volumes (3D GAN: drawn through
    the volume, `draw_spread_volume`). One plan serves every frame (`plan_spread` on the
    baseline slice), so a node that appears at one month is the same node later. The tumour at
    each frame's size (its mask, or the one found from the point, grown by `tumour_guard`) is
    left to the GAN.
    """
    from lungcancer.progression.spread import (
        draw_spread,
        draw_spread_volume,
        plan_spread,
        plan_spread_volume,
        tumour_guard,
    )

    volume = frames[0].ndim == 3
    targets = [(f.n, f.m) for f in timeline]
    # N levels reached at or before each frame stay drawn (N2 at 6 months, N3 at 12).
    passed = [
        tuple(sorted({f.n for f in timeline if f.months <= frame.months})) for frame in timeline
    ]
    scales = [frame.diameter_mm / lesion.diameter_mm for frame in timeline]
    if volume:
        spacing: tuple[float, ...] = scan.spacing_mm
        center: tuple[float, ...] = lesion.center_zyx
        image = scan.array
    else:
        spacing, center = scan.spacing_mm[1:], lesion.center_zyx[1:]
        image = scan.array[round(lesion.center_zyx[0])]
    if mask is not None:
        lesion_mask = np.asarray(mask if volume else mask[round(lesion.center_zyx[0])], bool)
    else:
        lesion_mask = lesion_mask_from_point(image, center, lesion.diameter_mm, spacing)
    guards = [tumour_guard(lesion_mask, center, scale, spacing) for scale in scales]
    baseline_nm = (baseline.n, baseline.m)
    if volume:
        vplan = plan_spread_volume(
            image, scan.spacing_mm, lesion.center_zyx, cranial=cranial_direction(scan), seed=seed
        )
        out, whats = draw_spread_volume(
            frames,
            vplan,
            baseline=baseline_nm,
            targets=targets,
            m1a_kind=m1a_kind,
            protect=guards,
            n_levels=passed,
            source_hu=image,
        )
    else:
        plan = plan_spread(image, (spacing[0], spacing[1]), (center[0], center[1]), seed)
        out, whats = [], []
        for pasted, target, guard, levels in zip(frames, targets, guards, passed, strict=True):
            drawn, what = draw_spread(
                pasted,
                plan,
                baseline=baseline_nm,
                target=target,
                m1a_kind=m1a_kind,
                protect=guard,
                n_levels=levels,
            )
            out.append(drawn)
            whats.append(what)
    shown: set[str] = set()
    for frame, what in zip(timeline, whats, strict=True):
        new = [w for w in what if w not in shown]
        if new:
            notes.append(f"from month {frame.months:g}: drew {', '.join(new)}")
        shown.update(what)
    notes.append(
        "nodes and M1a findings are drawn procedurally where the schedule raises N or M "
        "(lungcancer.progression.spread), not by the GAN"
    )
    if volume:
        notes.append(
            "spread is drawn through the volume: nodes as ellipsoids, the effusion on every "
            "slice below its top"
        )
    if any(f.m in ("M1b", "M1c") for f in timeline):
        notes.append("M1b/M1c are metastases outside the chest slice: staged, not drawn")
    return out


def cranial_direction(scan: Scan) -> int:
    """+1 when the scan's slice index runs toward the head, -1 toward the feet.

    The slice axis's world direction is the third column of the ITK direction matrix; its z
    (LPS: superior) component says which way the body runs.
    """
    toward_head = scan.direction_xyz[8]
    if abs(toward_head) < 0.5:
        raise SimulationError(
            "spread is drawn through axial volumes only",
            path=scan.source or None,
            expected="slices stacked along the body's long axis (axial CT)",
            found=f"slice-axis direction {scan.direction_xyz[2::3]}",
            hint="resample the volume to axial slices, or leave out --spread",
        )
    return 1 if toward_head > 0 else -1


def simulate(
    gan: str | Path | LoadedGan,
    image: str | Path | Scan,
    *,
    mask: str | Path | np.ndarray | None = None,
    point_zyx: Sequence[float] | None = None,
    diameter_mm: float | None = None,
    classifier: str | Path | None = None,
    months: Sequence[float] = DEFAULT_MONTHS,
    histology: str = "adeno",
    vdt_days: float | None = None,
    n: str | None = None,
    m: str | None = None,
    invasion: str = "none",
    current_stage: str | None = None,
    allow_regression: bool = False,
    patch_size: int | None = None,
    spread: Sequence[tuple[float, str]] = (),
    m1a_kind: str = "effusion",
    spread_seed: int = 0,
    out_dir: str | Path | None = None,
) -> SimulationResult:
    """Simulate a tumour's progression on one CT slice or volume.

    A 2D GAN renders the slice through the lesion (of a volume: the slice where its mask is
    largest); a 3D GAN renders the volume around it, and the frames are that slice of each
    rendered volume (`SimulationResult.volumes_hu` keeps the volumes).

    Args:
        gan: GAN checkpoint (or a loaded one).
        image: CT slice or volume (any format `read_image` reads), or a `Scan`.
        mask: lesion mask (file on the image's grid, or a z-y-x array): where the lesion is,
            and for a 2D GAN which slice of a volume is rendered (see above).
        point_zyx: lesion centre in voxels when there is no mask.
        diameter_mm: lesion diameter (needed with a point; overrides the mask's measurement).
        classifier: classifier checkpoint that scores every frame.
        months: time points from baseline.
        histology: growth-model histology (adeno, squamous, large-cell, ground-glass).
        vdt_days: volume-doubling time; default: the histology's median.
        n: N descriptor held over time (default N0, and the outputs say it was assumed).
        m: M descriptor held over time (default M0, likewise).
        invasion: "chest_wall" (at least T3) or "mediastinum" (T4), held over time.
        current_stage: the lesion's known stage now (I-IV); frames before it are refused.
        allow_regression: allow frames at an earlier stage than the current one.
        patch_size: refuse a GAN trained on another patch size.
        spread: (month, descriptor) pairs, e.g. ((12, "N2"), (18, "M1a")): N or M rises from
            that month, the stage follows, and the new nodes or M1a findings are drawn on the
            frames outside the lesion (`progression.spread`, procedural, not the GAN).
        m1a_kind: what M1a shows: "effusion", "nodule" (other lung) or "both".
        spread_seed: the draw of node sites and sizes.
        out_dir: where to write strip, GIF, timeline JSON and plot (None: write nothing).

    Returns:
        The timeline, the frames (and a 3D GAN's volumes) and the written files.
    """
    from lungcancer.io import read_image, read_mask

    loaded = gan if isinstance(gan, LoadedGan) else load_gan(gan, patch_size=patch_size)
    if patch_size is not None and loaded.patch_size != patch_size:
        raise CheckpointError(
            "the GAN checkpoint was trained on another patch size",
            path=loaded.path,
            expected=f"patch size {patch_size}",
            found=f"patch size {loaded.patch_size}",
        )
    scan = image if isinstance(image, Scan) else read_image(image)
    if scan.intensity != "HU":
        raise SimulationError(
            "the GAN renders CT in Hounsfield units",
            path=scan.source or None,
            expected="a CT image in HU (DICOM, NIfTI, NRRD, MetaImage)",
            found="a raster image with intensities in [0, 1]",
            hint="export the slice from the CT series rather than as PNG/JPEG",
        )
    mask_array = None
    if isinstance(mask, str | Path):
        mask_array = read_mask(mask, like=scan)
    elif mask is not None:
        mask_array = np.asarray(mask).astype(bool).reshape(scan.shape)
    lesion = locate_lesion(scan, mask_array, point_zyx, diameter_mm)
    notes: list[str] = []
    histology_key = resolve_histology(histology)
    if vdt_days is None:
        vdt_days = default_vdt_days(histology_key)
        notes.append(f"volume-doubling time {vdt_days:g} days: the median for {histology_key}")
    if (n is None or m is None) and not spread:
        notes.append(
            f"N and M held at {n or 'N0'} {m or 'M0'} over time (assumed, not modelled: nodal "
            "and distant spread are not visible on the lesion patch); give --n/--m if known"
        )
    held = (n or "N0", m or "M0", resolve_invasion(invasion))
    grown = growth_timeline(lesion.diameter_mm, list(months), vdt_days, *held)
    timeline = apply_spread(grown, spread)
    baseline = growth_timeline(lesion.diameter_mm, [0.0], vdt_days, *held)[0]
    check_no_regression(timeline, current_stage or baseline.stage, allow_regression)
    _check_stages(loaded, timeline)
    rendered = render_frames(loaded, scan, lesion, timeline, notes, mask_array)
    volumes: tuple[np.ndarray, ...] = ()
    frames = rendered
    if loaded.config.spatial_dims == 3:
        volumes = tuple(rendered)
        frames = [volume[round(lesion.center_zyx[0])] for volume in volumes]
    if any((f.n, f.m) != (baseline.n, baseline.m) for f in timeline):
        drawn = _draw_spread(
            list(volumes or frames),
            scan,
            lesion,
            timeline,
            baseline,
            m1a_kind,
            spread_seed,
            notes,
            mask_array,
        )
        if volumes:
            volumes = tuple(drawn)
            frames = [volume[round(lesion.center_zyx[0])] for volume in volumes]
        else:
            frames = drawn
    class_names: tuple[str, ...] = ()
    if classifier is not None:
        from lungcancer.progression.scoring import FrameScorer

        scorer = FrameScorer(classifier)
        class_names = scorer.class_names
        spacing_yx = (scan.spacing_mm[1], scan.spacing_mm[2])
        probs = scorer.probabilities(frames, [spacing_yx] * len(frames))
        timeline = [
            f.with_probabilities(dict(zip(class_names, p.tolist(), strict=True)))
            for f, p in zip(timeline, probs, strict=True)
        ]
    result = SimulationResult(
        timeline=tuple(timeline),
        frames_hu=tuple(frames),
        lesion=lesion,
        vdt_days=float(vdt_days),
        histology=histology_key,
        notes=tuple(dict.fromkeys(notes)),
        class_names=class_names,
        volumes_hu=volumes,
    )
    if out_dir is None:
        return result
    files = write_outputs(result, Path(out_dir), loaded, scan, classifier)
    return replace(result, files=files)


def _crop(
    frame: np.ndarray, lesion: Lesion, spacing_yx: tuple[float, float], fov_mm: float
) -> np.ndarray:
    """A square around the lesion, `fov_mm` across (clipped to the slice)."""
    out = []
    for axis, (c, s) in enumerate(zip(lesion.center_zyx[1:], spacing_yx, strict=True)):
        half = round(fov_mm / 2 / s)
        n = frame.shape[axis]
        lo = max(0, round(c) - half)
        out.append(slice(lo, min(n, lo + 2 * half)))
    return frame[out[0], out[1]]


def _write_months(
    folder: Path,
    arrays: Sequence[np.ndarray],
    timeline: Sequence[TimelineFrame],
    scan: Scan,
    first_voxel_zyx: tuple[float, float, float],
) -> None:
    """One NRRD per month (z-y-x arrays in HU) with the input's spacing and orientation, placed
    where `first_voxel_zyx` of the input lies; no metadata is carried over."""
    from lungcancer.io import write_volume

    folder.mkdir(exist_ok=True)
    origin = scan.voxel_to_world(first_voxel_zyx)
    for array, frame in zip(arrays, timeline, strict=True):
        image = Scan(
            array=np.asarray(array, np.float32),
            spacing_mm=scan.spacing_mm,
            origin_xyz_mm=origin,
            direction_xyz=scan.direction_xyz,
        )
        write_volume(image, folder / f"month_{frame.months:g}.nrrd")


def write_outputs(
    result: SimulationResult,
    out_dir: Path,
    gan: LoadedGan,
    scan: Scan,
    classifier: str | Path | None,
) -> dict[str, Path]:
    """Strip PNG, GIF, timeline JSON and plot, one NRRD per frame (the slice through the
    lesion) and, for a 3D GAN, one NRRD per rendered volume; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spacing_yx = (scan.spacing_mm[1], scan.spacing_mm[2])
    largest = max(f.diameter_mm for f in result.timeline)
    fov_mm = gan.geometry.spacing_for(largest) * gan.patch_size
    first = result.timeline[0]
    if any((f.n, f.m) != (first.n, first.m) for f in result.timeline):
        # Spread is drawn away from the lesion (nodes, effusion): show the whole slice.
        crops = list(result.frames_hu)
    else:
        crops = [_crop(f, result.lesion, spacing_yx, fov_mm) for f in result.frames_hu]
    files = {
        "strip": out_dir / "strip.png",
        "gif": out_dir / "progression.gif",
        "timeline_json": out_dir / "timeline.json",
        "plot": out_dir / "timeline.png",
    }
    save_strip(files["strip"], crops, result.timeline)
    save_gif(files["gif"], crops, result.timeline)
    save_timeline_plot(files["plot"], result.timeline, result.class_names)
    z = round(result.lesion.center_zyx[0])
    files["frames"] = out_dir / "frames"
    frames = [np.asarray(frame)[None] for frame in result.frames_hu]
    _write_months(files["frames"], frames, result.timeline, scan, (float(z), 0.0, 0.0))
    if result.volumes_hu:
        files["volumes"] = out_dir / "volumes"
        _write_months(files["volumes"], result.volumes_hu, result.timeline, scan, (0.0, 0.0, 0.0))
    document = {
        "gan": gan.path,
        "input": scan.source,
        "lesion": {
            "center_zyx": list(result.lesion.center_zyx),
            "diameter_mm": result.lesion.diameter_mm,
            "from": result.lesion.source,
        },
        "growth_model": {
            "kind": "gompertz",
            "histology": result.histology,
            "vdt_days": result.vdt_days,
        },
        "classifier": str(classifier) if classifier else None,
        "class_names": list(result.class_names),
        "notes": list(result.notes),
        "frames": [
            {
                "month": f.months,
                "diameter_mm": round(f.diameter_mm, 3),
                "T": f.t,
                "N": f.n,
                "M": f.m,
                "stage_group": f.stage_group,
                "stage": f.stage,
                "probabilities": {k: round(v, 5) for k, v in f.probabilities.items()},
            }
            for f in result.timeline
        ],
    }
    atomic_write_text(files["timeline_json"], json.dumps(document, indent=1) + "\n")
    return files
