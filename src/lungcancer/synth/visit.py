"""One visit of a LungSim patient: grow the tumour, let it spread, draw, measure, label.

`render_visit` grows the lesion to the visit's month (Gompertz, the patient's doubling time),
puts the nodes and M1a findings in force (monotone in size), draws the lesion-centred slice and
off-centre slices (2D) or the lesion-centred volume (3D), adds blur and noise, and labels every
sample by the TNM rules from the diameter and invasion measured on what was drawn.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from lungcancer.io.record import Scan
from lungcancer.staging import t_from_diameter
from lungcancer.synth import growth
from lungcancer.synth.acquisition import Acquisition, Pose, add_noise, blur
from lungcancer.synth.case import N_ORDER, PatientModel, SimSample
from lungcancer.synth.findings import NodeSite
from lungcancer.synth.fit import (
    Grid,
    RenderSettings,
    fit_lesion,
    grid_centre_y,
    patient_grid,
    slice_zs,
)
from lungcancer.synth.lesion import LesionShape
from lungcancer.synth.paint import polar_fields
from lungcancer.synth.render import PlacedLesion, Scene, render_slice, to_patient, to_world
from lungcancer.synth.truth import labels_for


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
    n = max(truth.n, growth.n_from_draw(d, model.n_draw), key=N_ORDER.index)
    m = "M1a" if "M1a" in (truth.m, growth.m_from_draw(d, model.m_draw)) else "M0"
    return VisitState(months_since_baseline, d, n, m)


def _scene(model: PatientModel, state: VisitState, shape: LesionShape | None, pose: Pose) -> Scene:
    nodes: list[NodeSite] = []
    if state.n in N_ORDER[1:]:
        rank = N_ORDER.index(state.n)
        for level in N_ORDER[1 : rank + 1]:
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
        # The inside changes with size: solid core, necrosis, cavity (LesionLook.at_size).
        look = model.look.at_size(state.model_diameter_mm, model.baseline_diameter_mm)
        primary = PlacedLesion(shape, look)
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
    settings: RenderSettings, *, pose_visit: int | None = None, spread_at_baseline: bool = False,
) -> list[SimSample]:  # fmt: skip
    """Draw one visit of a patient: its lesion-centred slice and off-centre slices (2D) or
    its lesion-centred volume (3D), labelled by the TNM rules from what was drawn.

    Args:
        model: the patient.
        visit: index of the visit (selects its pose, slice offsets and noise).
        months: the visit's time point.
        baseline_months: the first visit's time point (growth starts there).
        settings: dataset-wide render settings.
        pose_visit: draw in this visit's pose and slice offsets instead (the noise stays the
            visit's own): 0 gives the patient lying exactly as at the baseline.
        spread_at_baseline: keep the baseline's N and M (nodes and M1a findings) instead of
            those the tumour has reached by `months`: only the primary lesion changes.

    Returns:
        The visit's samples, lesion-centred first.
    """
    acq = model.acquisition
    geometry = visit if pose_visit is None else pose_visit
    pose = model.poses[geometry]
    grid = patient_grid(model.anatomy, acq, settings.size)
    state = visit_state(model, months - baseline_months)
    if spread_at_baseline:
        baseline = visit_state(model, 0.0)
        state = dataclasses.replace(state, n=baseline.n, m=baseline.m)
    shape, diameter, invasion, fit_mask = None, 0.0, "none", None
    if model.unit_shape is not None:
        fit = fit_lesion(
            model.anatomy, model.unit_shape, model.unit_diameter_mm, state.model_diameter_mm,
            settings, pose, acq, grid,
        )  # fmt: skip
        shape, diameter, invasion, fit_mask = fit.shape, fit.diameter_mm, fit.invasion, fit.mask
    scene = _scene(model, state, shape, pose)
    zs = slice_zs(model.center_mm, settings, pose, acq.thickness_mm, model.offsets_mm[geometry])
    slab = settings.slab_mm if settings.dims == 2 else 0.0
    # A 2.5D sample's neighbours are rendered after the samples' own slices: (below, above).
    neighbours = [z + d * slab for z in zs for d in (-1.0, 1.0)] if slab > 0 else []
    xs_p, ys_p, _ = to_patient(pose, grid.xs_w, grid.ys_w, 0.0)
    polar = polar_fields(model.anatomy, xs_p[np.newaxis, :], ys_p[:, np.newaxis])
    slices, masks = [], []
    for z_w in [*zs, *neighbours]:
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
    yc = grid_centre_y(model.anatomy)
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
        rows = [k] if slab <= 0 else [len(zs) + 2 * k, k, len(zs) + 2 * k + 1]
        sample_zs = np.array([[*zs, *neighbours][r] for r in rows])
        samples.append(_sample(model, state, labels, stack[rows], mask_stack[rows], grid,
                               sample_zs, center_w, offset, k, shape, invasion, diameter, acq,
                               slab))  # fmt: skip
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
    slab_mm: float = 0.0,
) -> SimSample:
    thick = acq.thickness_mm
    px = grid.pixel_mm
    # A slab's slices are slab_mm apart; a volume's or a single slice's, one thickness.
    step = slab_mm if slab_mm > 0 else thick
    scan = Scan(
        array=hu,
        spacing_mm=(step, px, px),
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
            "lesion_center_z": round((center_w[2] - float(zs_w[0])) / step, 2),
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
        # The sample's own slice inside a slab (the middle one); empty for single slices.
        "slice_index": 1 if slab_mm > 0 else "",
    }
    suffix = "" if slice_no is None else f"_s{slice_no}"
    name = f"{model.patient_id}_m{months_txt.replace('.', 'p')}{suffix}"
    return SimSample(image=scan, mask=mask, label=labels["label"], record=record, name=name)
