"""One LungSim patient: built once from its seed, rendered at every visit.

`build_patient` draws everything that stays fixed for a patient (anatomy, vessels, scanner,
the lesion's shape, site, histology and doubling time, where nodes would appear, how an M1a
would show), and places and sizes the lesion so its first visit measures as the requested
class. `lungcancer.synth.visit.render_visit` then draws each visit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from lungcancer.io.record import Scan
from lungcancer.staging import t_from_diameter
from lungcancer.synth import anatomy as an
from lungcancer.synth import growth
from lungcancer.synth.acquisition import Acquisition, Pose, sample_acquisition, sample_pose
from lungcancer.synth.anatomy import Anatomy, sample_anatomy
from lungcancer.synth.findings import (
    Effusion,
    NodeSite,
    lesion_levels_mm,
    place_lesion,
    place_nodes,
    sample_effusion,
)
from lungcancer.synth.fit import Grid, RenderSettings, fit_lesion, min_fov_mm, patient_grid
from lungcancer.synth.lesion import LesionLook, LesionShape, sample_look, sample_shape
from lungcancer.synth.paint import sample_lung_points
from lungcancer.synth.render import PlacedLesion, Texture, sample_texture
from lungcancer.synth.truth import T_BANDS_MM, CaseTruth
from lungcancer.synth.vessels import ATTRACTORS_PER_LUNG, VesselTree, grow_vessel_tree

N_ORDER = ("N0", "N1", "N2", "N3")
_FIT_TRIES = 4


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


def _patient_rngs(seed_key: tuple[int, ...], n: int) -> list[np.random.Generator]:
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
    r_anat, r_tree, r_acq, r_les, r_find, r_pose, r_tex = _patient_rngs(seed_key, 7)
    anat = sample_anatomy(r_anat)
    # One cloud of points inside the lungs grows the vessels and offers lesion sites.
    cloud = sample_lung_points(anat, ATTRACTORS_PER_LUNG, r_tree)
    tree = grow_vessel_tree(anat, r_tree, cloud)
    acq = sample_acquisition(
        r_acq,
        2 * anat.habitus.body_a_mm,
        settings.dose,
        settings.thickness_mm,
        min_fov_mm=min_fov_mm(anat),
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
        # Spicule widths (mm) and lobulation depths are as drawn at the baseline size; growth
        # beyond it is not self-similar (lungcancer.synth.lesion).
        shape = shape.with_baseline(d0 / diameter_unit)
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
        size = float(r_find.uniform(8, 18))
        contralateral = _small_nodule(anat, other, center[2], r_find, size, cloud)
    show_lower = {level: bool(r_find.random() < 0.5) for level in N_ORDER}
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
