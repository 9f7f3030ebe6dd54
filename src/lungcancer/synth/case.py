"""One LungSim patient: built once from its seed, rendered at every visit.

`build_patient` draws everything that stays fixed for a patient (anatomy, vessels, scanner,
the lesion's shape, site, histology and doubling time, where nodes would appear, how an M1a
would show). `render_visit` grows the tumour to the visit's month, lets it spread, draws the
scan, measures the lesion on the mask it drew and labels the result by the TNM rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from lungcancer.data.measure import measure_lesion
from lungcancer.io.record import Scan
from lungcancer.staging import t_from_diameter
from lungcancer.synth import anatomy as an
from lungcancer.synth import growth
from lungcancer.synth.acquisition import (
    Acquisition,
    Pose,
    add_noise,
    blur,
    sample_acquisition,
    sample_pose,
)
from lungcancer.synth.anatomy import Anatomy, sample_anatomy
from lungcancer.synth.findings import (
    Effusion,
    NodeSite,
    lesion_levels_mm,
    place_lesion,
    place_nodes,
    sample_effusion,
)
from lungcancer.synth.lesion import (
    LesionLook,
    LesionShape,
    body_fraction,
    sample_look,
    sample_shape,
)
from lungcancer.synth.paint import label_points, polar_fields, sample_lung_points
from lungcancer.synth.render import (
    PlacedLesion,
    Scene,
    Texture,
    render_slice,
    sample_texture,
    to_patient,
    to_world,
)
from lungcancer.synth.truth import T_BANDS_MM, CaseTruth, labels_for
from lungcancer.synth.vessels import ATTRACTORS_PER_LUNG, VesselTree, grow_vessel_tree

_N_ORDER = ("N0", "N1", "N2", "N3")
_WALL = np.array(an.CHEST_WALL_LABELS)
_DEEP = np.array(an.MEDIASTINUM_LABELS + an.SPINE_LABELS + an.DIAPHRAGM_LABELS)
_INVASION_FRACTION = 0.02  # share of the lesion mask beyond the pleura that counts as invasion
_FIT_TRIES = 4


@dataclass(frozen=True)
class RenderSettings:
    """What every visit of every patient shares (from `SynthConfig`).

    Attributes:
        size: in-plane matrix.
        dims: 2 (slices) or 3 (volumes).
        depth: slices per volume (dims 3).
        classes: "stage", "t" or "binary".
        off_centre_slices: extra slices per visit through the lesion (dims 2).
        slice_offset_max_mm: how far off-centre those slices go.
        dose: relative dose.
        thickness_mm: fixed slice thickness, or None to vary per patient.
    """

    size: int = 256
    dims: int = 2
    depth: int = 64
    classes: str = "stage"
    off_centre_slices: int = 2
    slice_offset_max_mm: float = 6.0
    dose: float = 1.0
    thickness_mm: float | None = None


@dataclass(frozen=True)
class PatientModel:
    """Everything fixed for one patient across visits."""

    patient_id: str
    seed_key: tuple[int, ...]
    truth: CaseTruth
    anatomy: Anatomy
    tree: VesselTree
    acquisition: Acquisition
    hu_table: np.ndarray
    texture: Texture
    center_mm: tuple[float, float, float]
    side: int
    lobe: str
    unit_shape: LesionShape | None
    look: LesionLook | None
    unit_diameter_mm: float
    baseline_diameter_mm: float
    vdt_days: float
    n_draw: float
    m_draw: float
    nodes: dict[str, tuple[NodeSite, ...]]
    show_lower_nodes: dict[str, bool]
    effusion: Effusion | None
    contralateral: PlacedLesion | None
    incidental: tuple[PlacedLesion, ...]
    poses: tuple[Pose, ...]
    offsets_mm: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class SimSample:
    """One generated sample, in memory.

    Attributes:
        image: the scan (HU, z-y-x; a 2D sample is one slice).
        mask: uint8 z-y-x mask of the primary lesion (all zeros for normal).
        label: class name.
        record: every manifest/JSON field of the sample (paths excluded).
        name: file stem, e.g. "sim-00042_m06_s1".
    """

    image: Scan
    mask: np.ndarray
    label: str
    record: dict[str, str | float | int] = field(default_factory=dict)
    name: str = ""


def _rngs(seed_key: tuple[int, ...], n: int) -> list[np.random.Generator]:
    ss = np.random.SeedSequence(entropy=seed_key[0], spawn_key=seed_key[1:])
    return [np.random.default_rng(s) for s in ss.spawn(n)]


def _hu_table(rng: np.random.Generator) -> np.ndarray:
    """Per-patient tissue HU: soft tissues vary a few HU between patients, bone more."""
    table = an.LABEL_HU.copy()
    table += rng.normal(0.0, 5.0, table.shape).astype(np.float32)
    for label in (an.RIB_CORTEX, an.SPINE_CORTEX, an.RIB_MARROW, an.SPINE_MARROW):
        table[label] += float(rng.normal(0.0, 50.0))
    for label in (an.AIR, an.AIRWAY, an.GAS):
        table[label] = an.LABEL_HU[label]
    return table


def build_patient(
    patient_id: str,
    seed_key: tuple[int, ...],
    truth: CaseTruth,
    settings: RenderSettings,
    timepoints_months: tuple[float, ...],
) -> PatientModel:
    """Draw everything fixed for one patient.

    Args:
        patient_id: e.g. "sim-00042".
        seed_key: (dataset seed, patient index): the patient's own random streams.
        truth: what its first visit is asked to show.
        settings: dataset-wide render settings.
        timepoints_months: the visits.

    Returns:
        The patient model, with the lesion placed and sized so that the label measured at the
        first visit is the requested class whenever the anatomy allows it.
    """
    r_anat, r_tree, r_acq, r_les, r_find, r_pose, r_tex = _rngs(seed_key, 7)
    anat = sample_anatomy(r_anat)
    # One cloud of points inside the lungs grows the vessels and offers lesion sites.
    cloud = sample_lung_points(anat, ATTRACTORS_PER_LUNG, r_tree)
    tree = grow_vessel_tree(anat, r_tree, cloud)
    acq = sample_acquisition(
        r_acq,
        2 * anat.habitus.body_a_mm,
        settings.dose,
        settings.thickness_mm,
        min_fov_mm=_min_fov_mm(anat),
    )
    poses = tuple(sample_pose(r_pose) for _ in timepoints_months)
    shape, look, diameter_unit, d0 = None, None, 0.0, 0.0
    z_lo, z_hi = lesion_levels_mm(anat)
    center: tuple[float, float, float] = (0.0, 0.0, float(r_les.uniform(z_lo, z_hi)))
    side, lobe, vdt = an.LUNG_R, "", 0.0
    n_draw = m_draw = 1.0
    nodes: dict[str, tuple[NodeSite, ...]] = {}
    effusion = None
    contralateral = None
    if truth.category != "normal":
        shape = sample_shape(r_les, truth.margin, (0.0, 0.0, 0.0))
        diameter_unit = _unit_diameter(shape, settings.dims)
        grid = patient_grid(anat, acq, settings.size)
        shape, side, d0 = _baseline_fit(
            anat, shape, diameter_unit, truth, settings, poses[0], acq, grid, r_les, cloud
        )
        center = shape.center_mm
        lobe = str(anat.lobe(*(np.array([v]) for v in center))[0])
        look = sample_look(
            r_les, truth.nodule_type, truth.calcification, d0, truth.histology == "squamous"
        )
        vdt = growth.sample_vdt_days(truth.vdt_key, r_les)
    if truth.category == "malignant":
        n_draw = growth.draw_consistent_with(truth.n, d0, r_find, "n")
        m_draw = growth.draw_consistent_with(truth.m, d0, r_find, "m")
        nodes = place_nodes(anat, center, side, r_find)
        other = an.LUNG_L if side == an.LUNG_R else an.LUNG_R
        eff_side = side if r_find.random() < 0.85 else other
        effusion = sample_effusion(center[2], eff_side, r_find)
        size = float(r_find.uniform(6, 14))
        contralateral = _small_nodule(anat, other, center[2], r_find, size, cloud)
    show_lower = {level: bool(r_find.random() < 0.5) for level in _N_ORDER}
    incidental: tuple[PlacedLesion, ...] = ()
    if r_find.random() < 0.12:
        lung = an.LUNG_R if r_find.random() < 0.5 else an.LUNG_L
        size = float(r_find.uniform(2.5, 5.0))
        granuloma = _small_nodule(anat, lung, center[2], r_find, size, cloud)
        incidental = (replace(granuloma, look=replace(granuloma.look, calcification="diffuse")),)
    offsets = tuple(_offsets(settings, shape, d0, r_pose) for _ in timepoints_months)
    return PatientModel(
        patient_id=patient_id, seed_key=seed_key, truth=truth, anatomy=anat, tree=tree,
        acquisition=acq, hu_table=_hu_table(r_tex), texture=sample_texture(r_tex),
        center_mm=center, side=side, lobe=lobe, unit_shape=shape, look=look,
        unit_diameter_mm=diameter_unit, baseline_diameter_mm=d0, vdt_days=vdt, n_draw=n_draw,
        m_draw=m_draw, nodes=nodes, show_lower_nodes=show_lower, effusion=effusion,
        contralateral=contralateral, incidental=incidental, poses=poses, offsets_mm=offsets,
    )  # fmt: skip


def _baseline_fit(
    anat: Anatomy,
    shape: LesionShape,
    unit_diameter_mm: float,
    truth: CaseTruth,
    settings: RenderSettings,
    pose: Pose,
    acq: Acquisition,
    grid: Grid,
    rng: np.random.Generator,
    cloud: dict[int, np.ndarray],
) -> tuple[LesionShape, int, float]:
    """Place and size the lesion so its measured T is the one the truth asked for.

    A tumour drawn on a threshold can measure a voxel over it, and one meant to stay inside
    the lung can graze the pleura in a small chest: the target diameter is nudged back into its
    band, or the lesion re-placed, a few times. What is finally drawn is labelled by what it
    measures either way.

    Returns:
        (unit-radius shape at its centre, lung label, baseline target diameter in mm).
    """
    target = truth.diameter_mm
    wanted_t = t_from_diameter(target, truth.invasion)  # type: ignore[arg-type]
    lo, hi = T_BANDS_MM.get(wanted_t, (0.0, 1e9)) if truth.invasion == "none" else (0.0, 1e9)
    sized = shape.scaled(target / unit_diameter_mm)
    center, side = place_lesion(anat, sized, truth.invasion, rng, cloud=cloud)
    for _ in range(_FIT_TRIES):
        placed = shape.moved(center)
        fit = fit_lesion(anat, placed, unit_diameter_mm, target, settings, pose, acq, grid)
        if truth.category != "malignant":
            break
        if t_from_diameter(fit.diameter_mm, fit.invasion) == wanted_t:  # type: ignore[arg-type]
            break
        if fit.invasion != truth.invasion:
            center, side = place_lesion(anat, sized, truth.invasion, rng, cloud=cloud)
        elif fit.diameter_mm > hi:
            target -= fit.diameter_mm - hi + 0.5 * grid.pixel_mm
        elif fit.diameter_mm <= lo:
            target += lo - fit.diameter_mm + 0.5 * grid.pixel_mm
    return shape.moved(center), side, target


def _grid_centre_y(anat: Anatomy) -> float:
    """y of the image centre: a little below the body's centre so the table shows."""
    hab = anat.habitus
    return 0.5 * (hab.body_b_post_mm - hab.body_b_ant_mm) + 12.0


def _min_fov_mm(anat: Anatomy) -> float:
    """Diameter of the smallest reconstruction circle around the image centre that holds the
    body with room for a few millimetres of table shift."""
    theta = np.linspace(-np.pi, np.pi, 360, endpoint=False)
    r = anat.habitus.body_radius(theta)
    dist = np.hypot(r * np.cos(theta), r * np.sin(theta) - _grid_centre_y(anat))
    return float(2.0 * (dist.max() + 10.0))


def _unit_diameter(shape: LesionShape, dims: int) -> float:
    """Greatest diameter of a unit-radius shape where it is measured (axial plane in 2D)."""
    return shape.axial_diameter_mm() if dims == 2 else shape.diameter_3d_mm()


def _small_nodule(
    anat: Anatomy,
    lung: int,
    z_mm: float,
    rng: np.random.Generator,
    diameter_mm: float,
    cloud: dict[int, np.ndarray],
) -> PlacedLesion:
    """A small smooth solid nodule in `lung` at about height `z_mm`."""
    shape = sample_shape(rng, "smooth", (0.0, 0.0, 0.0))
    shape = shape.scaled(diameter_mm / shape.axial_diameter_mm())
    z_range = (z_mm - 3.0, z_mm + 3.0)
    center, _ = place_lesion(anat, shape, "none", rng, side=lung, z_range_mm=z_range, cloud=cloud)
    return PlacedLesion(shape.moved(center), sample_look(rng, "solid", "none", diameter_mm))


def _offsets(
    settings: RenderSettings, shape: LesionShape | None, d0: float, rng: np.random.Generator
) -> tuple[float, ...]:
    """Off-centre slice offsets (mm) for one visit: within the lesion so it stays visible."""
    if settings.dims != 2 or settings.off_centre_slices <= 0:
        return ()
    limit = settings.slice_offset_max_mm
    if shape is not None:
        limit = min(limit, 0.45 * d0 * shape.z_scale)
    limit = max(limit, 0.5)
    mags = rng.uniform(min(1.0, limit), limit, settings.off_centre_slices)
    return tuple(
        float(m * s) for m, s in zip(mags, rng.choice([-1.0, 1.0], len(mags)), strict=True)
    )


@dataclass(frozen=True)
class Grid:
    """The scanner's pixel grid for one patient (world mm)."""

    xs_w: np.ndarray
    ys_w: np.ndarray
    pixel_mm: float


def patient_grid(anat: Anatomy, acq: Acquisition, size: int) -> Grid:
    """The FOV (512 x native spacing) resampled to `size` pixels, centred on the body."""
    fov = acq.fov_mm
    px = fov / size
    yc = _grid_centre_y(anat)
    centres = (np.arange(size) + 0.5) * px - fov / 2
    # float32 grids: every per-pixel computation downstream runs in single precision.
    return Grid(
        xs_w=centres.astype(np.float32), ys_w=(centres + yc).astype(np.float32), pixel_mm=px
    )


def _slice_zs(
    center_mm: tuple[float, float, float],
    settings: RenderSettings,
    pose: Pose,
    thickness_mm: float,
    offsets_mm: tuple[float, ...],
) -> np.ndarray:
    """World z of every slice of a visit: lesion-centred first (2D) or the volume (3D)."""
    z_c = to_world(pose, center_mm)[2]
    if settings.dims == 2:
        return np.array([z_c, *(z_c + o for o in offsets_mm)])
    return z_c + (np.arange(settings.depth) - (settings.depth - 1) / 2) * thickness_mm


def _lesion_mask(
    shape: LesionShape, pose: Pose, grid: Grid, zs_w: np.ndarray, thick: float
) -> np.ndarray:
    """Mask (z, y, x) of a lesion body on the scanner grid: body fraction >= 0.5."""
    mask = np.zeros((len(zs_w), len(grid.ys_w), len(grid.xs_w)), dtype=bool)
    for k, z_w in enumerate(zs_w):
        xs, ys, z = to_patient(pose, grid.xs_w, grid.ys_w, float(z_w))
        mask[k] = body_fraction(shape, xs, ys, z, thick / pose.scale) >= 0.5
    return mask


def _invasion(anat: Anatomy, pose: Pose, grid: Grid, zs_w: np.ndarray, mask: np.ndarray) -> str:
    """What a drawn lesion invades, read from the anatomy under its mask."""
    k, r, c = np.nonzero(mask)
    if len(k) == 0:
        return "none"
    sx, sy, sz = pose.shift_mm
    x = (grid.xs_w[c] - sx) / pose.scale
    y = (grid.ys_w[r] - sy) / pose.scale
    z = (zs_w[k] - sz) / pose.scale
    labels = label_points(anat, x, y, z)
    need = max(3, int(np.ceil(_INVASION_FRACTION * len(k))))
    if np.isin(labels, _DEEP).sum() >= need:
        return "mediastinum"
    if np.isin(labels, _WALL).sum() >= need:
        return "chest_wall"
    return "none"


def _measure(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Greatest diameter of a mask, measured on its bounding box (same result, far faster)."""
    box = tuple(
        slice(int(idx.min()), int(idx.max()) + 1)
        for idx in (np.nonzero(mask.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1)))
    )
    return measure_lesion(mask[box], spacing).diameter_mm


def _nearest_voxel(
    center_mm: tuple[float, float, float], pose: Pose, grid: Grid, zs_w: np.ndarray
) -> tuple[int, int, int]:
    x, y, z = to_world(pose, center_mm)
    return (
        int(np.argmin(np.abs(zs_w - z))),
        int(np.argmin(np.abs(grid.ys_w - y))),
        int(np.argmin(np.abs(grid.xs_w - x))),
    )


@dataclass(frozen=True)
class Fit:
    """A lesion scaled to a target diameter on a visit's grid, as measured on its mask."""

    shape: LesionShape
    mask: np.ndarray
    diameter_mm: float
    invasion: str


def fit_lesion(
    anat: Anatomy,
    unit_shape: LesionShape,
    unit_diameter_mm: float,
    target_mm: float,
    settings: RenderSettings,
    pose: Pose,
    acq: Acquisition,
    grid: Grid,
) -> Fit:
    """Scale a lesion so the greatest diameter measured on its drawn mask is `target_mm`.

    The continuous shape gives the first scale; one or two corrections by the ratio of target
    to measured diameter absorb the voxelisation, so the mask measures within a voxel of the
    growth model's diameter. The mask is the lesion-centred slice (2D) or the volume (3D).
    """
    thick = acq.thickness_mm
    zs = _slice_zs(unit_shape.center_mm, settings, pose, thick, ())
    spacing = (thick, grid.pixel_mm, grid.pixel_mm)
    radius = target_mm / unit_diameter_mm
    shape = unit_shape.scaled(radius)
    mask = _lesion_mask(shape, pose, grid, zs, thick)
    # Only a lesion a few pixels wide can be tuned by whole-voxel measurements; a smaller one
    # keeps its true size and is measured for what it is.
    tunable = target_mm >= 3.0 * grid.pixel_mm
    for _ in range(2):
        if not tunable or not mask.any():
            break
        measured = _measure(mask, spacing)
        if abs(measured - target_mm) <= 0.3 * grid.pixel_mm:
            break
        radius *= float(np.clip(target_mm / measured, 0.8, 1.25))
        shape = unit_shape.scaled(radius)
        mask = _lesion_mask(shape, pose, grid, zs, thick)
    if not mask.any():
        # Smaller than a voxel: mark the voxel holding its centre, so it is found and measured.
        mask[_nearest_voxel(shape.center_mm, pose, grid, zs)] = True
    measured = _measure(mask, spacing)
    invasion = _invasion(anat, pose, grid, zs, mask)
    return Fit(shape=shape, mask=mask, diameter_mm=float(measured), invasion=invasion)


@dataclass(frozen=True)
class VisitState:
    """The disease at one visit: the growth model's size and the N and M in force."""

    months: float
    model_diameter_mm: float
    n: str
    m: str


def visit_state(model: PatientModel, months_since_baseline: float) -> VisitState:
    """Grow the tumour (Gompertz, the patient's VDT) and let it spread (monotone in size)."""
    truth = model.truth
    if truth.category == "normal":
        return VisitState(months_since_baseline, 0.0, "", "")
    d = growth.diameter_at_months(model.baseline_diameter_mm, months_since_baseline, model.vdt_days)
    if truth.category != "malignant":
        return VisitState(months_since_baseline, d, "", "")
    n = max(truth.n, growth.n_from_draw(d, model.n_draw), key=_N_ORDER.index)
    m = "M1a" if "M1a" in (truth.m, growth.m_from_draw(d, model.m_draw)) else "M0"
    return VisitState(months_since_baseline, d, n, m)


def _scene(model: PatientModel, state: VisitState, shape: LesionShape | None, pose: Pose) -> Scene:
    nodes: list[NodeSite] = []
    if state.n in _N_ORDER[1:]:
        rank = _N_ORDER.index(state.n)
        for level in _N_ORDER[1 : rank + 1]:
            # The defining level always shows; lower stations are involved in about half.
            if level == state.n or model.show_lower_nodes[level]:
                nodes.extend(model.nodes[level])
    kind = model.truth.m_kind
    m1a = state.m == "M1a"
    others = list(model.incidental)
    if m1a and kind in ("nodule", "both") and model.contralateral is not None:
        others.append(model.contralateral)
    primary = None
    if shape is not None and model.look is not None:
        primary = PlacedLesion(shape, model.look)
    return Scene(
        anatomy=model.anatomy,
        tree=model.tree,
        hu_table=model.hu_table,
        texture=model.texture,
        primary=primary,
        others=tuple(others),
        nodes=tuple(nodes),
        effusion=model.effusion if m1a and kind in ("effusion", "both") else None,
        pose=pose,
    )


def render_visit(
    model: PatientModel, visit: int, months: float, baseline_months: float,
    settings: RenderSettings,
) -> list[SimSample]:  # fmt: skip
    """Draw one visit of a patient: its lesion-centred slice and off-centre slices (2D) or
    its lesion-centred volume (3D), labelled by the TNM rules from what was drawn.

    Args:
        model: the patient.
        visit: index of the visit (selects its pose, offsets and noise).
        months: the visit's time point.
        baseline_months: the first visit's time point (growth starts there).
        settings: dataset-wide render settings.

    Returns:
        The visit's samples, lesion-centred first.
    """
    acq = model.acquisition
    pose = model.poses[visit]
    grid = patient_grid(model.anatomy, acq, settings.size)
    state = visit_state(model, months - baseline_months)
    shape, diameter, invasion, fit_mask = None, 0.0, "none", None
    if model.unit_shape is not None:
        fit = fit_lesion(
            model.anatomy, model.unit_shape, model.unit_diameter_mm, state.model_diameter_mm,
            settings, pose, acq, grid,
        )  # fmt: skip
        shape, diameter, invasion, fit_mask = fit.shape, fit.diameter_mm, fit.invasion, fit.mask
    scene = _scene(model, state, shape, pose)
    zs = _slice_zs(model.center_mm, settings, pose, acq.thickness_mm, model.offsets_mm[visit])
    xs_p, ys_p, _ = to_patient(pose, grid.xs_w, grid.ys_w, 0.0)
    polar = polar_fields(model.anatomy, xs_p[np.newaxis, :], ys_p[:, np.newaxis])
    slices, masks = [], []
    for z_w in zs:
        out = render_slice(scene, grid.xs_w, grid.ys_w, float(z_w), acq.thickness_mm, polar)
        slices.append(out.hu)
        masks.append(out.body_frac >= 0.5)
    noise_rng = np.random.default_rng(
        np.random.SeedSequence(
            entropy=model.seed_key[0], spawn_key=(*model.seed_key[1:], 100 + visit)
        )
    )
    stack = add_noise(blur(np.stack(slices), grid.pixel_mm, acq), grid.pixel_mm, acq, noise_rng)
    stack = np.clip(np.rint(stack), -1024.0, 3071.0).astype(np.float32)
    # Outside the reconstruction circle a scanner writes -1024 (air), with no noise.
    yc = _grid_centre_y(model.anatomy)
    outside = np.hypot(grid.xs_w[np.newaxis, :], grid.ys_w[:, np.newaxis] - yc) > acq.fov_mm / 2
    stack[:, outside] = -1024.0
    mask_stack = np.stack(masks).astype(np.uint8)
    if fit_mask is not None:
        # The measured mask is the one the label comes from (it marks sub-voxel lesions too).
        mask_stack[: len(fit_mask)] = fit_mask
    labels = _labels(model, state, diameter, invasion, settings.classes)
    center_w = to_world(pose, shape.center_mm) if shape is not None else None
    if settings.dims == 3:
        return [_sample(model, state, labels, stack, mask_stack, grid, zs, center_w, 0.0, None,
                        shape, invasion, diameter, acq)]  # fmt: skip
    samples = []
    for k, z_w in enumerate(zs):
        offset = float(z_w - zs[0])
        samples.append(_sample(model, state, labels, stack[k : k + 1], mask_stack[k : k + 1],
                               grid, zs[k : k + 1], center_w, offset, k, shape, invasion,
                               diameter, acq))  # fmt: skip
    return samples


def _labels(
    model: PatientModel, state: VisitState, diameter_mm: float, invasion: str, classes: str
) -> dict[str, str]:
    """T, N, M, stage group, coarse stage and class from what was drawn."""
    if model.truth.category != "malignant":
        return labels_for(classes, model.truth.category)
    t = t_from_diameter(diameter_mm, invasion)  # type: ignore[arg-type]
    return labels_for(classes, "malignant", t, state.n, state.m)


def _sample(
    model: PatientModel,
    state: VisitState,
    labels: dict[str, str],
    hu: np.ndarray,
    mask: np.ndarray,
    grid: Grid,
    zs_w: np.ndarray,
    center_w: tuple[float, float, float] | None,
    offset_mm: float,
    slice_no: int | None,
    shape: LesionShape | None,
    invasion: str,
    diameter_mm: float,
    acq: Acquisition,
) -> SimSample:
    thick = acq.thickness_mm
    px = grid.pixel_mm
    scan = Scan(
        array=hu,
        spacing_mm=(thick, px, px),
        origin_xyz_mm=(float(grid.xs_w[0]), float(grid.ys_w[0]), float(zs_w[0])),
        modality="CT",
        intensity="HU",
        meta={"synthetic": True, "generator": "lungcancer.synth"},
        source=model.patient_id,
    )
    centre: dict[str, str | float] = {"lesion_center_z": "", "lesion_center_y": "",
                                      "lesion_center_x": ""}  # fmt: skip
    if center_w is not None:
        centre = {
            "lesion_center_z": round((center_w[2] - float(zs_w[0])) / thick, 2),
            "lesion_center_y": round((center_w[1] - float(grid.ys_w[0])) / px, 2),
            "lesion_center_x": round((center_w[0] - float(grid.xs_w[0])) / px, 2),
        }
    truth = model.truth
    malignant_or_benign = truth.category != "normal"
    months_txt = f"{state.months + 0.0:g}"
    record: dict[str, str | float | int] = {
        "label": labels["label"],
        "patient_id": model.patient_id,
        "time_point": round(state.months, 3),
        "t": labels["t"],
        "n": labels["n"],
        "m": labels["m"],
        "stage_group": labels["stage_group"],
        "stage": labels["stage"],
        "diameter_mm": round(diameter_mm, 2),
        "volume_ml": round(shape.volume_ml(), 4) if shape is not None else 0.0,
        "nodule_type": truth.nodule_type,
        "margin": truth.margin,
        "histology": truth.histology,
        "vdt_days": round(model.vdt_days, 1) if malignant_or_benign else "",
        "slice_offset_mm": round(offset_mm, 2),
        **centre,
        "synthetic": 1,
        "requested_class": truth.requested_class,
        "model_diameter_mm": round(state.model_diameter_mm, 2),
        "invasion": invasion,
        "lobe": model.lobe,
        "calcification": truth.calcification if malignant_or_benign else "",
        "m1a_findings": truth.m_kind if labels["m"] == "M1a" else "",
        "slice_thickness_mm": round(thick, 3),
        "pixel_spacing_mm": round(px, 4),
        "dose": round(acq.dose, 3),
    }
    suffix = "" if slice_no is None else f"_s{slice_no}"
    name = f"{model.patient_id}_m{months_txt.replace('.', 'p')}{suffix}"
    return SimSample(image=scan, mask=mask, label=labels["label"], record=record, name=name)
