"""Generating LungSim datasets: determinism, labels by the rules, masks, growth, balance, I/O.

One tiny dataset (size 64, a dozen patients, two visits) is generated once per module and
shared; the determinism test generates two more with 4 patients each.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lungcancer.data.measure import measure_lesion
from lungcancer.errors import ConfigError, LungCancerError
from lungcancer.io import read_image, read_mask
from lungcancer.staging import t_from_diameter
from lungcancer.synth import SynthConfig, generate, render_case
from lungcancer.synth.growth import diameter_at_months
from lungcancer.synth.truth import labels_for

_CFG = SynthConfig(patients=12, size=64, seed=11, timepoints_months=(0.0, 6.0), workers=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    out = tmp_path_factory.mktemp("sim")
    result = generate(_CFG, out)
    with open(result.manifest_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return out, rows


def _centred(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if float(r["slice_offset_mm"]) == 0.0]


def test_manifest_has_the_standard_columns_first_and_empty_splits(
    dataset: tuple[Path, list[dict[str, str]]],
) -> None:
    out, rows = dataset
    header = (out / "manifest.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["path", "label", "patient_id", "mask_path", "split", "time_point"]
    for column in ("stage_group", "diameter_mm", "vdt_days", "lesion_center_x", "synthetic"):
        assert column in header
    assert all(r["split"] == "" and r["synthetic"] == "1" for r in rows)
    assert {r["patient_id"] for r in rows} == {f"sim-{i:05d}" for i in range(12)}
    assert (out / "synth_config.yaml").exists()


def test_every_label_follows_the_staging_rules_from_what_was_drawn(
    dataset: tuple[Path, list[dict[str, str]]],
) -> None:
    _, rows = dataset
    for r in rows:
        category = r["stage"] if r["stage"] in ("normal", "benign") else "malignant"
        expected = labels_for("stage", category, r["t"], r["n"], r["m"])
        assert r["label"] == expected["label"], r
        assert r["stage_group"] == expected["stage_group"]
        if category == "malignant":
            assert r["t"] == t_from_diameter(float(r["diameter_mm"]), r["invasion"])  # type: ignore[arg-type]


def test_baseline_classes_are_balanced_as_requested(
    dataset: tuple[Path, list[dict[str, str]]],
) -> None:
    _, rows = dataset
    baseline = [r for r in _centred(rows) if float(r["time_point"]) == 0.0]
    requested = [r["requested_class"] for r in baseline]
    assert sorted(set(requested)) == sorted(_CFG.class_names)
    assert all(requested.count(c) == 2 for c in _CFG.class_names)
    # The drawn label matches the request at baseline for nearly every patient (a tumour may
    # land one voxel over a threshold at this tiny matrix; then the label follows the mask).
    agree = sum(r["label"] == r["requested_class"] for r in baseline)
    assert agree >= len(baseline) - 1


def test_each_visit_has_one_centred_and_the_requested_off_centre_slices(
    dataset: tuple[Path, list[dict[str, str]]],
) -> None:
    _, rows = dataset
    per_visit: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        per_visit.setdefault((r["patient_id"], r["time_point"]), []).append(
            float(r["slice_offset_mm"])
        )
    for offsets in per_visit.values():
        assert len(offsets) == 1 + _CFG.off_centre_slices
        assert offsets[0] == 0.0
        assert all(0 < abs(o) <= _CFG.slice_offset_max_mm + 1e-6 for o in offsets[1:])


def test_written_mask_measures_the_recorded_diameter_within_a_voxel(
    dataset: tuple[Path, list[dict[str, str]]],
) -> None:
    out, rows = dataset
    checked = 0
    for r in _centred(rows):
        mask_scan = read_image(out / r["mask_path"], expect_ct=False)
        if r["stage"] == "normal":
            assert not mask_scan.array.any()
            continue
        measured = measure_lesion(mask_scan.array > 0, mask_scan.spacing_mm).diameter_mm
        assert abs(measured - float(r["diameter_mm"])) <= float(r["pixel_spacing_mm"]), r
        checked += 1
    assert checked >= 8


def test_every_written_file_reads_back_through_lungcancer_io(
    dataset: tuple[Path, list[dict[str, str]]],
) -> None:
    out, rows = dataset
    for r in rows[::5]:
        image = read_image(out / r["path"])
        assert image.intensity == "HU" and image.array.shape == (1, 64, 64)
        assert image.array.min() >= -1024 and image.array.max() <= 3071
        assert image.spacing_mm[1] == pytest.approx(float(r["pixel_spacing_mm"]), rel=1e-3)
        mask = read_mask(out / r["mask_path"], like=image)
        assert mask.shape == image.array.shape
        record = json.loads((out / r["path"]).with_suffix(".json").read_text())
        assert record["label"] == r["label"] and record["path"] == r["path"]
        preview = read_image(out / record["preview_path"])
        assert preview.intensity == "unit" and preview.array.shape == (1, 64, 64)


def test_longitudinal_sizes_follow_the_growth_model_and_spread_never_regresses(
    dataset: tuple[Path, list[dict[str, str]]],
) -> None:
    _, rows = dataset
    by_patient: dict[str, list[dict[str, str]]] = {}
    for r in _centred(rows):
        by_patient.setdefault(r["patient_id"], []).append(r)
    for visits in by_patient.values():
        first, later = sorted(visits, key=lambda r: float(r["time_point"]))
        if first["stage"] == "normal":
            continue
        d0 = float(first["model_diameter_mm"])
        expected = diameter_at_months(d0, float(later["time_point"]), float(first["vdt_days"]))
        assert float(later["model_diameter_mm"]) == pytest.approx(expected, rel=2e-3, abs=0.02)
        assert float(later["diameter_mm"]) >= float(first["diameter_mm"]) - float(
            first["pixel_spacing_mm"]
        )
        if first["n"]:
            assert later["n"] >= first["n"] and later["m"] >= first["m"]


def test_render_case_in_memory_equals_what_generate_writes(
    dataset: tuple[Path, list[dict[str, str]]],
) -> None:
    out, rows = dataset
    samples = render_case(_CFG, 3)
    assert [s.record["label"] for s in samples] == [
        r["label"] for r in rows if r["patient_id"] == "sim-00003"
    ]
    written = read_image(out / "sim-00003" / f"{samples[0].name}.nrrd")
    np.testing.assert_array_equal(written.array, samples[0].image.array)
    # The lesion-centred slices of all visits are centred on the same lesion: GAN pairs.
    assert {s.record["lesion_center_z"] for s in samples if s.record["slice_offset_mm"] == 0.0} in (
        {0.0},
        {""},
    )


def test_output_is_identical_for_one_and_two_workers(tmp_path: Path) -> None:
    cfg = SynthConfig(patients=4, size=48, seed=5, off_centre_slices=1)
    one = generate(cfg, tmp_path / "one").out_dir
    two = generate(SynthConfig(**{**cfg.__dict__, "workers": 2}), tmp_path / "two").out_dir
    files_one = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    files_two = sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert files_one == files_two
    for rel in files_one:
        if rel.name != "synth_config.yaml":
            assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


def test_a_different_seed_gives_different_patients() -> None:
    a = render_case(SynthConfig(patients=2, size=48, seed=1, off_centre_slices=0), 0)[0]
    b = render_case(SynthConfig(patients=2, size=48, seed=2, off_centre_slices=0), 0)[0]
    assert not np.array_equal(a.image.array, b.image.array)


def test_an_id_prefix_renames_the_patients_and_changes_no_pixel(tmp_path: Path) -> None:
    cfg = SynthConfig(patients=2, size=48, seed=1, off_centre_slices=0, previews=False)
    plain = render_case(cfg, 1)
    external = render_case(SynthConfig(**{**cfg.__dict__, "id_prefix": "ext"}), 1)
    assert {s.record["patient_id"] for s in plain} == {"sim-00001"}
    assert {s.record["patient_id"] for s in external} == {"ext-00001"}
    for a, b in zip(plain, external, strict=True):
        np.testing.assert_array_equal(a.image.array, b.image.array)
        assert b.name == a.name.replace("sim-", "ext-")
    result = generate(SynthConfig(**{**cfg.__dict__, "id_prefix": "ext"}), tmp_path)
    with open(result.manifest_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["patient_id"] for r in rows} == {"ext-00000", "ext-00001"}
    assert all(r["path"].startswith(r["patient_id"] + "/") for r in rows)


def test_three_d_volumes_are_lesion_centred_with_a_volume_mask() -> None:
    cfg = SynthConfig(patients=6, size=48, dims=3, depth=12, seed=4, slice_thickness_mm=5.0)
    index = next(i for i in range(6) if render_case(cfg, i)[0].record["stage"] not in ("normal",))
    sample = render_case(cfg, index)[0]
    assert sample.image.array.shape == (12, 48, 48)
    assert sample.image.spacing_mm[0] == 5.0
    assert sample.mask.any()
    assert float(sample.record["lesion_center_z"]) == pytest.approx(5.5, abs=0.01)
    measured = measure_lesion(sample.mask, sample.image.spacing_mm).diameter_mm
    assert measured == pytest.approx(float(sample.record["diameter_mm"]))


def test_binary_datasets_hold_only_nodules() -> None:
    cfg = SynthConfig(patients=4, size=48, classes="binary", seed=2, off_centre_slices=0)
    labels = [render_case(cfg, i)[0] for i in range(4)]
    assert sorted(s.label for s in labels) == ["benign", "benign", "malignant", "malignant"]
    assert all(s.mask.any() for s in labels)


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"dims": 4}, "--dims"),
        ({"classes": "histology"}, "--classes"),
        ({"patients": 0}, "--patients"),
        ({"timepoints_months": (6.0, 0.0)}, "--timepoints"),
        ({"dose": 0.0}, "--dose"),
        ({"class_weights": (1.0, 2.0)}, "--class-weights"),
        ({"id_prefix": "ext-"}, "--id-prefix"),
        ({"id_prefix": "../x"}, "--id-prefix"),
        ({"id_prefix": ""}, "--id-prefix"),
        ({"followup_pose": "first"}, "--followup-pose"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_flag(
    changes: dict[str, object], flag: str
) -> None:
    with pytest.raises(ConfigError) as info:
        SynthConfig(**changes)  # type: ignore[arg-type]
    assert flag in str(info.value)


def test_generate_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(LungCancerError, match="--overwrite"):
        generate(SynthConfig(patients=1, size=48), tmp_path)


def test_slab_samples_are_three_slices_around_the_sample_s_own() -> None:
    plain_cfg = SynthConfig(patients=6, size=48, seed=4, off_centre_slices=1)
    slab_cfg = SynthConfig(**{**plain_cfg.__dict__, "slab_mm": 4.0})
    index = next(
        i for i in range(6) if render_case(plain_cfg, i)[0].record["stage"] not in ("normal",)
    )
    plain, slab = render_case(plain_cfg, index), render_case(slab_cfg, index)
    assert len(slab) == len(plain) == 2
    for one, three in zip(plain, slab, strict=True):
        assert three.image.array.shape == (3, 48, 48)
        assert three.image.spacing_mm[0] == 4.0
        assert three.record["slice_index"] == 1 and one.record["slice_index"] == ""
        # The slab's middle slice is the sample's own slice: same labels, same lesion mask,
        # and the same anatomy (only the noise draw differs).
        assert three.record["label"] == one.record["label"]
        np.testing.assert_array_equal(three.mask[1], one.mask[0])
        assert np.median(np.abs(three.image.array[1] - one.image.array[0])) < 40.0
        # Its neighbours are other slices, 4 mm away on either side.
        assert np.median(np.abs(three.image.array[0] - three.image.array[1])) > 0.0
        origin_z = three.image.origin_xyz_mm[2]
        assert one.image.origin_xyz_mm[2] == pytest.approx(origin_z + 4.0)
    # The lesion centre is given in the slab's own slice units.
    centred = slab[0].record["lesion_center_z"]
    assert float(centred) == pytest.approx(1.0, abs=0.01)


def test_slab_thickness_is_checked() -> None:
    with pytest.raises(ConfigError, match="slab_mm"):
        SynthConfig(slab_mm=-1.0)


def _visits(cfg: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Month-0 and last-visit lesion-centred slices and records of patient `index`."""
    samples = [s for s in render_case(cfg, index) if float(s.record["slice_offset_mm"]) == 0.0]
    first, last = samples[0], samples[-1]
    return first.image.array[0], last.image.array[0], first.record, last.record


_FOLLOWUP = SynthConfig(
    patients=12, size=64, seed=5, timepoints_months=(0.0, 12.0), off_centre_slices=0
)


def test_followups_in_the_baseline_pose_differ_only_by_the_disease_and_the_noise() -> None:
    # A follow-up normally lies differently (pose), which moves every structure; with
    # followup_pose "baseline" the same slice is drawn later: away from the lesion only the
    # noise changes, and the baseline visit is exactly the default's.
    posed = SynthConfig(**{**_FOLLOWUP.__dict__, "followup_pose": "baseline"})
    index = next(i for i in range(12) if render_case(_FOLLOWUP, i)[0].record["stage"] == "normal")
    before, after, _, _ = _visits(_FOLLOWUP, index)
    same_before, same_after, _, _ = _visits(posed, index)
    np.testing.assert_array_equal(same_before, before)
    body = before > -500.0
    moved = float(np.abs(after - before)[body].mean())
    still = float(np.abs(same_after - same_before)[body].mean())
    # Noise alone: two independent draws of about 10-20 HU in soft tissue.
    assert still < 40.0
    assert moved > 2.0 * still


def test_followups_without_spread_keep_the_baseline_n_and_m_and_the_same_lesion() -> None:
    fixed = {**_FOLLOWUP.__dict__, "followup_pose": "baseline"}
    spread_cfg = SynthConfig(**fixed)
    lesion_cfg = SynthConfig(**{**fixed, "followup_spread": False})
    gained = []
    for index in range(12):
        _, with_spread, first, last = _visits(spread_cfg, index)
        if first["stage"] in ("normal", "benign"):
            continue
        _, lesion_only, first_b, last_b = _visits(lesion_cfg, index)
        assert (last_b["n"], last_b["m"]) == (first_b["n"], first_b["m"])
        assert last_b["diameter_mm"] == last["diameter_mm"]
        if (last["n"], last["m"]) != (first["n"], first["m"]):
            gained.append(index)
            # The spread is drawn only where it was asked for.
            assert np.abs(with_spread - lesion_only).max() > 100.0
    assert gained, "no patient of the fixture gained N or M by month 12"
