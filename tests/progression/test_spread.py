"""Nodal and M1a spread drawn outside the lesion (`progression.spread`), the spread schedule
(`apply_spread`, `parse_spread`) and `simulate --spread`.

The unit tests draw on a hand-made chest slice whose anatomy is known exactly: two lung
ellipses, mediastinal fat between them, a spine below and the tumour in one lung.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from lungcancer.cli import app
from lungcancer.io import write_mask, write_volume
from lungcancer.io.record import Scan
from lungcancer.progression.simulate import parse_spread, simulate
from lungcancer.progression.spread import (
    ATELECTASIS_HU,
    EFFUSION_HU,
    NODE_HU,
    NODULE_HU,
    Node,
    SpreadPlan,
    _body_centre,
    _effusion_regions,
    _radial_wall_gap_mm,
    draw_spread,
    plan_spread,
    tumour_guard,
)
from lungcancer.progression.timeline import SimulationError, apply_spread, growth_timeline

SIZE = 128
SPACING = (2.5, 2.5)
NOISE_HU = 20.0
MIDLINE = 64.0
# The plan puts N2 nodes within 4 mm of the midline on the tumour's side.
MIDLINE_SLACK_PX = 4.0 / SPACING[1] + 0.5


@dataclass(frozen=True)
class Chest:
    """A synthetic axial slice and its anatomy."""

    image: np.ndarray
    tumour_lung: np.ndarray
    other_lung: np.ndarray
    mediastinum: np.ndarray
    fat: np.ndarray
    lesion_center: tuple[float, float]
    tumour_side: int  # -1: tumour left of the midline (smaller columns), +1: right


def _chest(tumour_side: int = -1, noise_seed: int = 0, lesion_radius_px: float = 3.0) -> Chest:
    """Body ellipse (40 HU), two lungs (-850), fat between them (-90), spine (400), tumour."""
    rng = np.random.default_rng(noise_seed)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(float)
    image = np.full((SIZE, SIZE), -1000.0)
    body = ((yy - 64) / 46) ** 2 + ((xx - 64) / 60) ** 2 <= 1
    image[body] = 40.0
    left = ((yy - 62) / 34) ** 2 + ((xx - 36) / 19) ** 2 <= 1
    right = ((yy - 62) / 34) ** 2 + ((xx - 92) / 19) ** 2 <= 1
    image[left | right] = -850.0
    mediastinum = body & ~left & ~right & (xx > 50) & (xx < 78) & (yy > 30) & (yy < 94)
    fat = mediastinum & (((yy - 60) / 22) ** 2 + ((xx - 64) / 10) ** 2 <= 1)
    image[fat] = -90.0
    image[np.hypot(yy - 100, xx - 64) <= 8] = 400.0
    center = (55.0, 30.0) if tumour_side < 0 else (55.0, 98.0)
    image[np.hypot(yy - center[0], xx - center[1]) <= lesion_radius_px] = 30.0
    image += NOISE_HU * rng.standard_normal(image.shape)
    tumour_lung, other_lung = (left, right) if tumour_side < 0 else (right, left)
    return Chest(
        image.astype(np.float32), tumour_lung, other_lung, mediastinum, fat, center, tumour_side
    )


def _radius(node: Node, shape: tuple[int, int], spacing: tuple[float, float]) -> np.ndarray:
    """Normalised elliptical radius of every pixel (1 on the node's outline)."""
    yy, xx = np.indices(shape)
    y_mm = (yy - node.center_yx[0]) * spacing[0]
    x_mm = (xx - node.center_yx[1]) * spacing[1]
    c, s = np.cos(node.angle_rad), np.sin(node.angle_rad)
    u, v = c * x_mm + s * y_mm, -s * x_mm + c * y_mm
    return np.hypot(u / node.semi_axes_mm[0], v / node.semi_axes_mm[1])


def _near(nodes: list[Node], shape: tuple[int, int], spacing: tuple[float, float]) -> np.ndarray:
    """Pixels within two pixels of any of the nodes."""
    near = np.zeros(shape, bool)
    for node in nodes:
        near |= _radius(node, shape, spacing) <= 1.0 + 2.0 * max(spacing) / min(node.semi_axes_mm)
    return near


def _grown(mask: np.ndarray) -> np.ndarray:
    """A mask grown by two pixels in every direction (diagonals too): the fluid's soft edge."""
    return ndimage.binary_dilation(mask, structure=np.ones((5, 5), bool))


def _grain(image: np.ndarray) -> np.ndarray:
    return image - ndimage.median_filter(image, size=3)


def _draw(
    chest: Chest,
    plan: SpreadPlan,
    target: tuple[str, str],
    m1a_kind: str = "effusion",
    protect: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str]]:
    """What `target` adds over an N0 M0 baseline on the chest slice."""
    return draw_spread(
        chest.image, plan, baseline=("N0", "M0"), target=target, m1a_kind=m1a_kind, protect=protect
    )


@pytest.fixture(scope="module")
def chest() -> Chest:
    return _chest()


@pytest.fixture(scope="module")
def plan(chest: Chest) -> SpreadPlan:
    return plan_spread(chest.image, SPACING, chest.lesion_center, seed=0)


# -- where the findings go ----------------------------------------------------------------


@pytest.mark.parametrize("side", [-1, 1])
def test_n2_nodes_are_node_density_in_the_mediastinum_on_the_tumours_side(side: int) -> None:
    chest = _chest(tumour_side=side)
    plan = plan_spread(chest.image, SPACING, chest.lesion_center, seed=0)
    out, drawn = _draw(chest, plan, ("N2", "M0"))
    n2 = [n for n in plan.nodes if n.level == "N2"]
    assert n2 and len(drawn) == len(n2)
    assert all(d.startswith("N2 node") for d in drawn)
    for node in n2:
        y, x = (round(c) for c in node.center_yx)
        assert chest.mediastinum[y, x], node
        assert (x - MIDLINE) * side >= -MIDLINE_SLACK_PX, node
    changed = out != chest.image
    assert changed.sum() > 30
    # Mostly in the mediastinum, on the tumour's side, never in the other lung.
    assert (changed & chest.mediastinum).sum() >= 0.6 * changed.sum()
    assert (np.nonzero(changed)[1].mean() - MIDLINE) * side > 0
    assert not (changed & chest.other_lung).any()
    # Node density inside the nodes; everything away from them untouched, bit for bit.
    core = np.zeros_like(changed)
    for node in n2:
        core |= _radius(node, plan.shape, SPACING) <= 0.6
    assert float(out[core].mean()) == pytest.approx(NODE_HU, abs=25)
    far = ~_near(n2, plan.shape, SPACING)
    np.testing.assert_array_equal(out[far], chest.image[far])


def test_n1_is_a_hilar_node_at_the_medial_border_of_the_tumours_lung(
    chest: Chest, plan: SpreadPlan
) -> None:
    out, drawn = _draw(chest, plan, ("N1", "M0"))
    n1 = [n for n in plan.nodes if n.level == "N1"]
    assert n1 and all(d.startswith("N1 node") for d in drawn)
    medial_edge = np.nonzero(chest.tumour_lung.any(axis=0))[0].max()  # left lung: its last column
    for node in n1:
        y, x = (round(c) for c in node.center_yx)
        assert chest.tumour_lung[y, x]
        assert medial_edge - x <= 6.0 / SPACING[1] + 1
    changed = out != chest.image
    assert changed.any() and not (changed & chest.other_lung).any()
    assert not (changed & ~_near(n1, plan.shape, SPACING)).any()


@pytest.mark.parametrize("side", [-1, 1])
def test_n3_nodes_are_across_the_midline_or_at_the_other_hilum(side: int) -> None:
    chest = _chest(tumour_side=side)
    plan = plan_spread(chest.image, SPACING, chest.lesion_center, seed=0)
    out, drawn = _draw(chest, plan, ("N3", "M0"))
    n3 = [n for n in plan.nodes if n.level == "N3"]
    assert n3 and [d.split()[0] for d in drawn] == ["N3"] * len(n3)
    for node in n3:
        y, x = (round(c) for c in node.center_yx)
        contralateral_fat = chest.mediastinum[y, x] and (x - MIDLINE) * side <= MIDLINE_SLACK_PX
        assert contralateral_fat or chest.other_lung[y, x], node
    changed = out != chest.image
    assert (np.nonzero(changed)[1].mean() - MIDLINE) * side < 0
    assert not (changed & chest.tumour_lung).any()
    # N3 over N0 draws the N3 nodes only, not the N2 stations as well.
    others = [n for n in plan.nodes if n.level != "N3"]
    only_others = _near(others, plan.shape, SPACING) & ~_near(n3, plan.shape, SPACING)
    np.testing.assert_array_equal(out[only_others], chest.image[only_others])


def test_effusion_layers_posteriorly_in_the_tumours_lung(chest: Chest, plan: SpreadPlan) -> None:
    # Seed 0 puts the fluid on the tumour's side (85% of seeds do).
    assert (plan.effusion_lung & chest.tumour_lung).sum() > 0.9 * chest.tumour_lung.sum()
    assert not (plan.effusion_lung & chest.other_lung).any()
    out, drawn = _draw(chest, plan, ("N0", "M1a"), m1a_kind="effusion")
    assert len(drawn) == 1 and drawn[0].startswith("M1a effusion")
    fluid = chest.tumour_lung & (chest.image < -400) & (out > -150)  # aerated lung to fluid
    assert fluid.sum() > 50
    rows = np.nonzero(fluid)[0]
    lung_rows = np.nonzero(chest.tumour_lung)[0]
    assert (rows > lung_rows.mean()).mean() >= 0.9  # the posterior (lower) half
    assert rows.max() >= lung_rows.max() - 1  # down to the back of the lung
    core = ndimage.binary_erosion(fluid)
    assert float(out[core].mean()) == pytest.approx(EFFUSION_HU, abs=25)
    # A band of compressed lung above the fluid.
    band = chest.tumour_lung & (out > -500) & (out < -200) & ~fluid
    assert band.sum() >= 5
    # Nothing outside the fluid's lung (two pixels of blur at most).
    near_lung = _grown(chest.tumour_lung)
    np.testing.assert_array_equal(out[~near_lung], chest.image[~near_lung])


def test_the_effusion_is_mostly_on_the_tumours_side_over_many_seeds(chest: Chest) -> None:
    sides = [
        bool(
            (plan_spread(chest.image, SPACING, chest.lesion_center, seed=s).effusion_lung)[
                chest.tumour_lung
            ].any()
        )
        for s in range(60)
    ]
    assert 0.7 <= np.mean(sides) < 1.0


@pytest.mark.parametrize("side", [-1, 1])
def test_an_m1a_nodule_is_round_and_in_the_lung_without_the_tumour(side: int) -> None:
    chest = _chest(tumour_side=side)
    plan = plan_spread(chest.image, SPACING, chest.lesion_center, seed=0)
    out, drawn = _draw(chest, plan, ("N0", "M1a"), m1a_kind="nodule")
    assert len(drawn) == 1 and drawn[0].startswith("M1a nodule")
    nodule = chest.other_lung & (out > -400)
    _, count = ndimage.label(nodule)
    assert count == 1
    radius_px = plan.nodule.semi_axes_mm[0] / SPACING[0]
    assert 0.6 <= nodule.sum() / (np.pi * radius_px**2) <= 1.6
    ys, xs = np.nonzero(nodule)
    assert 0.7 <= (np.ptp(ys) + 1) / (np.ptp(xs) + 1) <= 1.4
    core = _radius(plan.nodule, plan.shape, SPACING) <= 0.6
    assert float(out[core].mean()) == pytest.approx(NODULE_HU, abs=25)
    changed = out != chest.image
    assert not (changed & ~_grown(chest.other_lung)).any()


def test_both_draws_fluid_and_a_nodule(chest: Chest, plan: SpreadPlan) -> None:
    out, drawn = _draw(chest, plan, ("N0", "M1a"), m1a_kind="both")
    assert [d.split()[1] for d in drawn] == ["effusion", "nodule"]
    assert (chest.tumour_lung & (out > -400)).any() and (chest.other_lung & (out > -400)).any()


# -- what is drawn, and what never is ------------------------------------------------------


def test_nothing_new_draws_nothing(chest: Chest, plan: SpreadPlan) -> None:
    for baseline, target in [
        (("N0", "M0"), ("N0", "M0")),
        (("N2", "M1a"), ("N2", "M1a")),
        (("N2", "M0"), ("N1", "M0")),  # spread never recedes on screen
        (("N3", "M1a"), ("N0", "M0")),
    ]:
        out, drawn = draw_spread(chest.image, plan, baseline=baseline, target=target)
        assert drawn == []
        np.testing.assert_array_equal(out, chest.image)
        assert out is not chest.image
    # An M1a baseline draws only the new N level.
    _, drawn = draw_spread(chest.image, plan, baseline=("N0", "M1a"), target=("N2", "M1a"))
    assert drawn and all(d.startswith("N2") for d in drawn)


def test_protected_pixels_are_never_changed(chest: Chest, plan: SpreadPlan) -> None:
    first = next(n for n in plan.nodes if n.level == "N2")
    protect = _near([first], plan.shape, SPACING)
    protect |= np.hypot(*(np.indices(plan.shape) - np.array([80.0, 36.0])[:, None, None])) < 12
    for target, kind in [(("N2", "M0"), "effusion"), (("N3", "M1a"), "both")]:
        out, _ = _draw(chest, plan, target, m1a_kind=kind, protect=protect)
        np.testing.assert_array_equal(out[protect], chest.image[protect])
        assert (out != chest.image).any()  # the rest is still drawn


def test_the_same_seed_gives_the_same_plan_and_frames_keep_their_nodes(
    chest: Chest, plan: SpreadPlan
) -> None:
    again = plan_spread(chest.image, SPACING, chest.lesion_center, seed=0)
    assert again.nodes == plan.nodes and again.nodule == plan.nodule
    np.testing.assert_array_equal(again.effusion_depth_mm, plan.effusion_depth_mm)
    other = plan_spread(chest.image, SPACING, chest.lesion_center, seed=1)
    assert [n.center_yx for n in other.nodes] != [n.center_yx for n in plan.nodes]
    # A later frame (bigger tumour, fresh noise) gets the same nodes at the same place.
    later = _chest(noise_seed=5, lesion_radius_px=5.0)
    first, _ = _draw(chest, plan, ("N2", "M0"))
    second, _ = draw_spread(later.image, plan, baseline=("N0", "M0"), target=("N2", "M0"))
    np.testing.assert_array_equal(first != chest.image, second != later.image)


def test_drawn_nodes_keep_the_scans_noise(chest: Chest, plan: SpreadPlan) -> None:
    out, _ = _draw(chest, plan, ("N2", "M0"))
    biggest = max((n for n in plan.nodes if n.level == "N2"), key=lambda n: n.semi_axes_mm[1])
    inside = _radius(biggest, plan.shape, SPACING) <= 0.6
    assert inside.sum() >= 15
    flat = ndimage.binary_erosion(chest.fat, iterations=2)
    reference = float(_grain(chest.image)[flat].std())
    measured = float(_grain(out)[inside].std())
    assert 0.5 * reference <= measured <= 2.0 * reference


# -- bad input --------------------------------------------------------------------------------


def test_bad_slices_and_arguments_are_refused(chest: Chest, plan: SpreadPlan) -> None:
    with pytest.raises(SimulationError, match="2D"):
        plan_spread(chest.image[None], SPACING, chest.lesion_center)
    rng = np.random.default_rng(0)
    soft_tissue = (40.0 + NOISE_HU * rng.standard_normal((SIZE, SIZE))).astype(np.float32)
    with pytest.raises(SimulationError, match="lung field") as info:
        plan_spread(soft_tissue, SPACING, (64.0, 64.0))
    assert "0 lung field" in str(info.value)
    one_lung = np.where(chest.other_lung, 40.0, chest.image).astype(np.float32)
    with pytest.raises(SimulationError, match="1 lung field"):
        plan_spread(one_lung, SPACING, chest.lesion_center)
    with pytest.raises(SimulationError, match="unknown N or M") as info:
        draw_spread(chest.image, plan, baseline=("N0", "M0"), target=("N5", "M0"))
    assert "N5" in str(info.value)
    with pytest.raises(SimulationError, match="unknown N or M"):
        draw_spread(chest.image, plan, baseline=("N0", "M2"), target=("N1", "M0"))
    with pytest.raises(SimulationError, match="unknown M1a finding"):
        _draw(chest, plan, ("N0", "M1a"), m1a_kind="pleural")
    with pytest.raises(SimulationError, match="another slice"):
        draw_spread(chest.image[:-1], plan, baseline=("N0", "M0"), target=("N2", "M0"))


# -- the schedule -----------------------------------------------------------------------------


def test_a_spread_schedule_raises_n_and_m_from_its_months_and_restages() -> None:
    months = [0, 6, 12, 18, 24]
    grown = growth_timeline(14.0, months, 1e6)  # no growth: T1b throughout
    assert {(f.t, f.stage_group) for f in grown} == {("T1b", "IA2")}
    frames = apply_spread(grown, [(12.0, "N2"), (18.0, "M1a")])
    assert [(f.n, f.m) for f in frames] == [
        ("N0", "M0"),
        ("N0", "M0"),
        ("N2", "M0"),
        ("N2", "M1a"),
        ("N2", "M1a"),
    ]
    assert [f.stage_group for f in frames] == ["IA2", "IA2", "IIIA", "IVA", "IVA"]
    assert [f.stage for f in frames] == ["I", "I", "III", "IV", "IV"]
    assert [f.diameter_mm for f in frames] == [f.diameter_mm for f in grown]
    assert apply_spread(grown, ()) == grown


def test_a_schedule_that_lowers_spread_or_names_an_unknown_descriptor_is_refused() -> None:
    held = growth_timeline(14.0, [0, 12], 1e6, n="N2", m="M1a")
    with pytest.raises(SimulationError, match="lowers N or M") as info:
        apply_spread(held, [(12.0, "N1")])
    assert "N1 at month 12" in str(info.value)
    with pytest.raises(SimulationError, match="lowers N or M"):
        apply_spread(held, [(6.0, "M0")])
    plain = growth_timeline(14.0, [0, 12], 1e6)
    with pytest.raises(SimulationError, match="lowers N or M"):
        apply_spread(plain, [(3.0, "N3"), (6.0, "N2")])
    for bad in ("N5", "M2", "T2", "n2"):
        with pytest.raises(SimulationError, match="unknown spread descriptor"):
            apply_spread(plain, [(6.0, bad)])


def test_parse_spread_reads_month_descriptor_pairs_in_month_order() -> None:
    assert parse_spread("18:M1a, 12:N2") == ((12.0, "N2"), (18.0, "M1a"))
    assert parse_spread("6.5:N1") == ((6.5, "N1"),)
    assert parse_spread("") == ()
    for bad in ("12N2", "x:N2", "12:N2,18"):
        with pytest.raises(SimulationError, match="MONTH:DESCRIPTOR"):
            parse_spread(bad)


# -- simulate on a LungSim slice ---------------------------------------------------------------


@pytest.fixture(scope="module")
def lungsim_slice() -> tuple[Scan, np.ndarray]:
    """A LungSim stage I (N0 M0) slice through both lungs, 128 x 128 (about 3 mm pixels)."""
    from lungcancer.synth import SynthConfig, render_case

    cfg = SynthConfig(patients=8, size=128, seed=3, off_centre_slices=0)
    sample = render_case(cfg, 4)[0]
    assert (sample.record["stage"], sample.record["n"], sample.record["m"]) == ("I", "N0", "M0")
    return sample.image, sample.mask


def test_simulate_draws_the_schedules_spread_outside_the_lesion(
    untrained_checkpoint: Path, lungsim_slice: tuple[Scan, np.ndarray], tmp_path: Path
) -> None:
    scan, mask = lungsim_slice
    months = (0.0, 6.0, 12.0)
    common = {"mask": mask, "months": months, "vdt_days": 120.0}
    plain = simulate(untrained_checkpoint, scan, **common, out_dir=tmp_path / "plain")
    spread = simulate(
        untrained_checkpoint,
        scan,
        **common,
        spread=((6.0, "N2"), (12.0, "M1a")),
        m1a_kind="both",
        out_dir=tmp_path / "spread",
    )
    assert [(f.n, f.m, f.stage) for f in spread.timeline] == [
        ("N0", "M0", "I"),
        ("N2", "M0", "III"),
        ("N2", "M1a", "IV"),
    ]
    assert [f.diameter_mm for f in spread.timeline] == [f.diameter_mm for f in plain.timeline]
    assert any(n.startswith("from month 6: drew N2 node") for n in spread.notes)
    month_12 = next(n for n in spread.notes if n.startswith("from month 12: drew"))
    assert "M1a effusion" in month_12 and "M1a nodule" in month_12 and "N2" not in month_12
    assert not any("N and M held" in n for n in spread.notes)
    # Month 0 is the input; later frames differ only where the findings go, never in the ROI.
    np.testing.assert_array_equal(spread.frames_hu[0], plain.frames_hu[0])
    z_center = spread.lesion.center_zyx
    image = scan.array[0]
    spacing = (scan.spacing_mm[1], scan.spacing_mm[2])
    plan = plan_spread(image, spacing, (z_center[1], z_center[2]), seed=0)
    n2 = [n for n in plan.nodes if n.level == "N2"]
    nodes_only = _near(n2, plan.shape, spacing)
    m1a = _grown(plan.effusion_lung) | _near([plan.nodule], plan.shape, spacing) | nodes_only
    changed = []
    for frame, allowed, before, after in zip(
        spread.timeline[1:],
        (nodes_only, m1a),
        plain.frames_hu[1:],
        spread.frames_hu[1:],
        strict=True,
    ):
        diff = before != after
        assert diff.sum() > 20
        assert not (diff & ~allowed).any()
        # Nothing is drawn over the tumour at the frame's size (plus its margin); the rest of
        # the GAN's ROI may take fluid, as a real effusion layers behind a tumour.
        scale = frame.diameter_mm / spread.lesion.diameter_mm
        lesion_slice = mask[round(z_center[0])] > 0
        guard = tumour_guard(lesion_slice, (z_center[1], z_center[2]), scale, spacing)
        assert guard.sum() >= 5
        assert not (diff & guard).any()
        changed.append(diff)
    # The month-6 nodes are still there at month 12, at the same place.
    assert (changed[0] & ~changed[1]).sum() == 0
    # With spread the strip shows the whole slice, not the crop around the lesion.
    with Image.open(plain.files["strip"]) as a, Image.open(spread.files["strip"]) as b:
        assert b.size[1] > a.size[1]
    document = json.loads(spread.files["timeline_json"].read_text())
    assert [(f["N"], f["M"], f["stage_group"]) for f in document["frames"]] == [
        (f.n, f.m, f.stage_group) for f in spread.timeline
    ]


def test_the_cli_simulates_spread_and_reports_bad_spread(
    untrained_checkpoint: Path, lungsim_slice: tuple[Scan, np.ndarray], tmp_path: Path
) -> None:
    scan, mask = lungsim_slice
    image = tmp_path / "slice.nrrd"
    write_volume(scan, image)
    write_mask(mask, scan, tmp_path / "mask.nrrd")
    runner = CliRunner()
    args = [
        "simulate",
        str(untrained_checkpoint),
        str(image),
        "--mask",
        str(tmp_path / "mask.nrrd"),
    ]
    args += ["--months", "0,6,12", "--out", str(tmp_path / "sim")]
    result = runner.invoke(app, [*args, "--spread", "6:N2,12:M1a", "--m1a", "nodule", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [(f["N"], f["M"]) for f in document["frames"]] == [
        ("N0", "M0"),
        ("N2", "M0"),
        ("N2", "M1a"),
    ]
    assert document["frames"][2]["stage"] == "IV"
    notes = " ".join(document["notes"])
    assert "drew N2 node" in notes and "M1a nodule" in notes and "effusion" not in notes
    table = runner.invoke(app, [*args, "--spread", "6:N2"])
    assert table.exit_code == 0, table.output
    assert "N2" in table.output and "drew N2 node" in table.output
    for bad in (["--spread", "6N2"], ["--spread", "6:N9"], ["--spread", "6:M1a", "--m1a", "x"]):
        failed = runner.invoke(app, [*args, *bad])
        assert isinstance(failed.exception, SimulationError), (bad, failed.output)


# -- regressions: overlapping findings, and nodes kept when a higher N follows -----------------


def test_overlapping_nodes_are_not_painted_twice() -> None:
    shape = (64, 64)
    lung = np.full(shape, -850.0, np.float32)
    empty = np.zeros(shape, np.float32)
    # Two N2 nodes 20 mm apart (the plan keeps them > 18 mm apart), 26 mm across: they overlap.
    nodes = (
        Node("N2", (32.0, 22.0), (13.0, 13.0), 0.0),
        Node("N2", (32.0, 42.0), (13.0, 13.0), 0.0),
    )
    nodule = Node("M1a", (8.0, 8.0), (4.0, 4.0), 0.0)
    plan = SpreadPlan(
        shape, (1.0, 1.0), nodes, empty > 0, empty, empty, nodule, (32.0, 32.0), 32.0, -1, 30.0
    )
    out, _ = draw_spread(lung, plan, baseline=("N0", "M0"), target=("N2", "M0"))
    assert float(out.max()) <= NODE_HU + 1.0


def test_nodes_stay_when_a_higher_n_follows(
    untrained_checkpoint: Path, lungsim_slice: tuple[Scan, np.ndarray]
) -> None:
    scan, mask = lungsim_slice
    common = {"mask": mask, "months": (0.0, 6.0, 12.0), "vdt_days": 120.0}
    plain = simulate(untrained_checkpoint, scan, **common)
    spread = simulate(untrained_checkpoint, scan, **common, spread=((6.0, "N2"), (12.0, "N3")))
    n2_at_6 = plain.frames_hu[1] != spread.frames_hu[1]
    still_at_12 = plain.frames_hu[2] != spread.frames_hu[2]
    assert n2_at_6.any()
    assert not (n2_at_6 & ~still_at_12).any()


def test_an_unknown_descriptor_after_the_last_month_is_still_refused() -> None:
    with pytest.raises(SimulationError, match="unknown spread descriptor"):
        apply_spread(growth_timeline(14.0, [0.0, 6.0], 1e6), [(12.0, "N5")])


def test_the_tumour_guard_is_the_lesion_grown_to_the_frame_s_size() -> None:
    mask = np.zeros((64, 64), bool)
    yy, xx = np.indices(mask.shape)
    mask[np.hypot(yy - 32, xx - 20) <= 5] = True  # 10 px across, off the image centre
    guard = tumour_guard(mask, (32.0, 20.0), 2.0, (1.0, 1.0), margin_mm=2.0)
    distance = np.hypot(yy - 32, xx - 20)
    assert guard[distance <= 11.5].all()  # radius 5 x 2, plus the 2 mm margin
    assert not guard[distance >= 13.5].any()
    same = tumour_guard(mask, (32.0, 20.0), 1.0, (1.0, 1.0), margin_mm=0.0)
    assert (same == mask).mean() > 0.98


def test_an_effusion_behind_a_big_tumour_is_still_drawn() -> None:
    # A 60 mm tumour in the lung: its ROI (0.75 x 60 + 3 mm) would cover the whole lung's
    # back; only the tumour itself (and 3 mm) is kept from the drawing.
    big = _chest(lesion_radius_px=12.0)
    mask = np.hypot(*(np.indices(big.image.shape) - np.array(big.lesion_center)[:, None, None]))
    lesion = mask <= 12.0
    plan = plan_spread(big.image, SPACING, big.lesion_center, seed=0)
    guard = tumour_guard(lesion, big.lesion_center, 1.0, SPACING)
    out, what = _draw(big, plan, ("N0", "M1a"), protect=guard)
    assert any(w.startswith("M1a effusion") for w in what)
    changed = np.abs(out - big.image) > 1.0
    assert changed.sum() > 50 and not (changed & guard).any()


def test_effusion_depth_is_measured_along_the_ray_not_to_the_nearest_wall() -> None:
    # A square "lung" 100 mm wide around the chest centre, 1 mm pixels.
    yy, xx = np.mgrid[-60:61, -60:61].astype(float)
    lung = (np.abs(yy) <= 50) & (np.abs(xx) <= 50)
    gap = _radial_wall_gap_mm(lung, np.hypot(yy, xx), np.arctan2(yy, xx))
    # Straight back: the ray meets the wall square on, so depth is the plain distance.
    assert gap[60 + 30, 60] == pytest.approx(20.0, abs=1.5)
    # On the diagonal the ray runs to the corner: 70.7 - 42.4 = 28.3 mm, not the 20 mm to
    # the nearest wall (which drew fluid too far in wherever the wall is oblique).
    assert gap[60 + 30, 60 + 30] == pytest.approx(28.3, abs=1.5)
    assert np.isinf(gap[0, 0]) and not np.isinf(gap[lung]).any()
    assert (gap[lung] >= 0).all()


def test_effusion_rays_start_at_the_bodys_centre_not_the_lungs_centroid() -> None:
    # LungSim (and a real chest) measures the fluid's depth about the body's centre. Here the
    # lungs sit behind it and one is larger, so their centroid is 8 px behind and 4 px to the
    # side; a dense table shell touches the back and must not pull the centre down.
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(float)
    image = np.full((SIZE, SIZE), -1000.0)
    image[((yy - 64) / 46) ** 2 + ((xx - 64) / 60) ** 2 <= 1] = 40.0
    left = ((yy - 72) / 24) ** 2 + ((xx - 36) / 20) ** 2 <= 1
    right = ((yy - 72) / 24) ** 2 + ((xx - 90) / 14) ** 2 <= 1
    image[left | right] = -850.0
    image[109:112, 10:118] = 300.0
    image += NOISE_HU * np.random.default_rng(0).standard_normal(image.shape)
    plan = plan_spread(image.astype(np.float32), SPACING, (60.0, 36.0), seed=0)
    lung_rows, lung_cols = np.nonzero(left | right)
    assert lung_rows.mean() - 64 > 7 and abs(lung_cols.mean() - 64) > 3
    assert plan.chest_centre_yx == pytest.approx((64.0, 64.0), abs=1.0)
    # With no body to find (nothing above -500 HU), the lung fields give the centre.
    assert _body_centre(np.full((8, 8), -900.0), SPACING, fallback=np.eye(8, dtype=bool)) == (
        pytest.approx(3.5),
        pytest.approx(3.5),
    )


@pytest.mark.slow
def test_the_drawn_effusion_lies_where_lungsim_puts_it() -> None:
    # benchmarks/spread_effusion_check.py on a few LungSim patients: LungSim's own effusion
    # painted into the month-0 slice's tissue labels against the renderer's fluid at the same
    # side and depth. The body centre must sit near LungSim's origin and overlap as well as it.
    path = Path(__file__).parents[2] / "benchmarks" / "spread_effusion_check.py"
    spec = importlib.util.spec_from_file_location("spread_effusion_check", path)
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    pairs = check.measure(patients=120, seed=51)  # 10 pairs
    assert len(pairs) >= 5
    lungs, body, exact = (np.array([p[name][0] for p in pairs]) for name in check.CENTRES)
    assert np.mean([p["offset"][1] for p in pairs]) < 3.0
    assert np.mean([p["offset"][0] for p in pairs]) > 6.0
    assert body.mean() > lungs.mean() + 0.03
    assert body.mean() > exact.mean() - 0.02


def test_fluid_reaches_the_wall_without_a_soft_edge_there() -> None:
    # Real and LungSim lungs meet the wall through a pixel that is part lung, part wall; the
    # lung field read from the image stops short of it. Fluid fills the pleural space up to
    # the wall: the last pixels of the field and that part-lung rim must read as fluid, not
    # as a blend of fluid and lung (-150..-20 HU), and the wall itself must not change.
    base = _chest(noise_seed=3)
    image = base.image.copy()
    lung = base.tumour_lung
    rim = ndimage.binary_dilation(lung) & ~lung & (image > -200)
    image[rim] = -400.0  # the partial-volume ring
    plan = plan_spread(image, SPACING, base.lesion_center, seed=0)
    out, _ = draw_spread(image, plan, baseline=("N0", "M0"), target=("N0", "M1a"))
    fluid, _ = _effusion_regions(plan)
    assert fluid.sum() > 50
    # The field's last pixels and the ring behind the fluid's deep part (the back).
    deep = ndimage.binary_erosion(fluid, iterations=2)
    back = ndimage.binary_dilation(deep, iterations=4)
    edge = fluid & back & ~ndimage.binary_erosion(plan.effusion_lung)
    ring = rim & back
    assert edge.sum() >= 5 and ring.sum() >= 5
    assert np.median(out[edge]) > -20.0
    assert np.median(out[ring]) > -60.0
    wall = back & ~ndimage.binary_dilation(plan.effusion_lung, iterations=2)
    np.testing.assert_array_equal(out[wall], image[wall])


def test_fluid_meets_the_band_of_compressed_lung_without_lung_between() -> None:
    # A scanner blurs the new labels once: where fluid meets the band the edge blends fluid
    # with the band, so the two pixels either side of it average the two layers' HU. Painting
    # the band and then the fluid, each with its own blurred weight, blended the fluid's last
    # pixels with the lung under the band and pulled that edge about 80 HU down.
    chest = _chest(noise_seed=3)
    plan = plan_spread(chest.image, SPACING, chest.lesion_center, seed=0)
    out, _ = draw_spread(chest.image, plan, baseline=("N0", "M0"), target=("N0", "M1a"))
    fluid, band = _effusion_regions(plan)
    # Away from the wall (whose pixels count as fluid) and from the band's inner edge.
    inner = ndimage.binary_erosion(plan.effusion_lung, iterations=3)
    fluid_side = fluid & ndimage.binary_dilation(band) & inner
    band_side = band & ndimage.binary_dilation(fluid) & ndimage.binary_erosion(band | fluid)
    band_side &= inner
    assert fluid_side.sum() >= 10 and band_side.sum() >= 10
    edge_mean = 0.5 * (out[fluid_side].mean() + out[band_side].mean())
    assert abs(edge_mean - 0.5 * (EFFUSION_HU + ATELECTASIS_HU)) < 40.0
    assert np.median(out[fluid_side]) > -110.0


def test_vessels_run_on_through_the_band_of_compressed_lung() -> None:
    # Compressed lung is still aerated tissue: LungSim draws its vessels through it, and only
    # the parenchyma around them turns denser. Painting the band over a vessel flattened it
    # to about -250 HU.
    chest = _chest(noise_seed=3)
    plan = plan_spread(chest.image, SPACING, chest.lesion_center, seed=0)
    _, band = _effusion_regions(plan)
    places = np.argwhere(band & ndimage.binary_erosion(plan.effusion_lung, iterations=3))
    assert len(places) > 0
    y, x = places[len(places) // 2]
    image = chest.image.copy()
    vessel = np.zeros(image.shape, bool)
    vessel[y - 1 : y + 2, x - 1 : x + 2] = True
    image[vessel] = 40.0  # a vessel in cross-section, three pixels wide
    plan = plan_spread(image, SPACING, chest.lesion_center, seed=0)
    out, _ = draw_spread(image, plan, baseline=("N0", "M0"), target=("N0", "M1a"))
    assert out[y, x] > 0.0
    around = band & ~ndimage.binary_dilation(vessel, iterations=2)
    assert abs(float(np.median(out[around])) - ATELECTASIS_HU) < 40.0
