"""`simulate`: timeline, frames and files, and every bad input named in issue 5."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from gan_builders import disc_view, write_untrained_checkpoint
from PIL import Image
from typer.testing import CliRunner

from lungcancer.cli import app
from lungcancer.config import GanConfig
from lungcancer.errors import CheckpointError
from lungcancer.io import write_mask, write_volume
from lungcancer.io.record import Scan
from lungcancer.progression.patches import disc_mask, greatest_diameter_mm
from lungcancer.progression.simulate import simulate
from lungcancer.progression.timeline import SimulationError
from lungcancer.synth.growth import diameter_at_months


def _scan(size: int = 48, diameter_mm: float = 12.0) -> tuple[Scan, np.ndarray]:
    view = disc_view(diameter_mm, "p1", 0.0, size=size)
    scan = Scan(array=view.image_hu[None], spacing_mm=(2.0, 1.0, 1.0), source="disc.nrrd")
    return scan, view.mask[None]


def test_simulation_writes_strip_gif_timeline_and_plot(
    untrained_checkpoint: Path, tmp_path: Path
) -> None:
    scan, mask = _scan()
    months = (0.0, 6.0, 12.0)
    result = simulate(
        untrained_checkpoint, scan, mask=mask, months=months, vdt_days=120.0, out_dir=tmp_path
    )
    expected = diameter_at_months(result.lesion.diameter_mm, np.asarray(months), 120.0)
    assert [f.diameter_mm for f in result.timeline] == pytest.approx(expected.tolist())
    # Greatest diameter between voxel centres: within one voxel below the drawn 12 mm.
    assert 11.0 <= result.lesion.diameter_mm <= 12.0
    for kind in ("strip", "gif", "timeline_json", "plot"):
        assert result.files[kind].is_file()
    with Image.open(result.files["gif"]) as gif:
        assert gif.n_frames == 3
    document = json.loads(result.files["timeline_json"].read_text())
    assert [f["month"] for f in document["frames"]] == list(months)
    assert document["frames"][2]["diameter_mm"] == pytest.approx(expected[2], abs=1e-3)
    assert any("N and M held" in note for note in document["notes"])
    assert len(list((tmp_path / "frames").glob("*.nrrd"))) == 3
    # Only a 3D GAN renders whole volumes (test_gan3d.py).
    assert result.volumes_hu == () and "volumes" not in result.files
    # An untrained generator returns its geometric prior: the lesion grows to the timeline's
    # diameter and the anatomy away from it is the input's.
    far = ~disc_mask((48, 48), (23.5, 23.5), 2 * expected[-1], (1.0, 1.0))
    for frame, diameter in zip(result.frames_hu, expected, strict=True):
        np.testing.assert_allclose(frame[far], scan.array[0][far], atol=1e-3)
        lesion = (frame > -400) & ~far
        assert greatest_diameter_mm(lesion, (1.0, 1.0)) == pytest.approx(diameter, abs=1.5)


def test_no_mask_and_no_point_asks_for_a_point_and_a_diameter(untrained_checkpoint: Path) -> None:
    scan, _ = _scan()
    with pytest.raises(SimulationError, match="no lesion given") as info:
        simulate(untrained_checkpoint, scan, months=(0, 6))
    assert "--point" in str(info.value) and "--diameter-mm" in str(info.value)
    with pytest.raises(SimulationError, match="needs a lesion diameter"):
        simulate(untrained_checkpoint, scan, point_zyx=(0, 24, 24), months=(0, 6))


def test_a_point_and_diameter_work_without_a_mask(untrained_checkpoint: Path) -> None:
    scan, _ = _scan()
    result = simulate(
        untrained_checkpoint, scan, point_zyx=(0, 23.5, 23.5), diameter_mm=12.0, months=(0, 12)
    )
    assert result.lesion.source == "point"
    assert result.timeline[1].diameter_mm > 12.0


def test_an_input_smaller_than_the_patch_is_padded_and_says_so(untrained_checkpoint: Path) -> None:
    scan, mask = _scan(size=20, diameter_mm=8.0)
    result = simulate(untrained_checkpoint, scan, mask=mask, months=(0, 6))
    assert any("edge-padded" in note for note in result.notes)
    assert result.frames_hu[1].shape == (20, 20)


def test_a_stage_regression_is_refused_unless_allowed(untrained_checkpoint: Path) -> None:
    scan, mask = _scan()
    with pytest.raises(SimulationError, match="earlier than"):
        simulate(untrained_checkpoint, scan, mask=mask, months=(0, 6), current_stage="III")
    result = simulate(
        untrained_checkpoint,
        scan,
        mask=mask,
        months=(0, 6),
        current_stage="III",
        allow_regression=True,
    )
    assert len(result.frames_hu) == 2


def test_a_checkpoint_of_another_patch_size_or_stage_set_is_refused(
    untrained_checkpoint: Path, tiny_gan_cfg: GanConfig, tmp_path: Path
) -> None:
    scan, mask = _scan()
    with pytest.raises(CheckpointError, match="another patch size") as info:
        simulate(untrained_checkpoint, scan, mask=mask, months=(0, 6), patch_size=64)
    assert "patch size 32" in str(info.value)
    other = write_untrained_checkpoint(
        tmp_path / "ab.pt", dataclasses.replace(tiny_gan_cfg, stages=("IA", "IB"))
    )
    with pytest.raises(CheckpointError, match="another stage"):
        simulate(other, scan, mask=mask, months=(0, 6))


def test_the_cli_simulates_from_files_and_reports_bad_input(
    untrained_checkpoint: Path, tmp_path: Path
) -> None:
    scan, mask = _scan()
    image = tmp_path / "slice.nrrd"
    write_volume(scan, image)
    write_mask(mask, scan, tmp_path / "mask.nrrd")
    runner = CliRunner()
    out = tmp_path / "sim"
    args = ["simulate", str(untrained_checkpoint), str(image), "--months", "0,6", "--out", str(out)]
    result = runner.invoke(app, [*args, "--mask", str(tmp_path / "mask.nrrd")])
    assert result.exit_code == 0, result.output
    assert (out / "strip.png").is_file()
    assert "note:" in result.output
    failed = runner.invoke(app, args)
    assert isinstance(failed.exception, SimulationError)


def test_a_volume_with_a_mask_uses_the_slice_through_the_lesion(
    untrained_checkpoint: Path,
) -> None:
    scan, mask = _scan()
    volume = Scan(
        array=np.concatenate([scan.array - 50.0, scan.array, scan.array + 50.0]),
        spacing_mm=scan.spacing_mm,
    )
    volume_mask = np.concatenate([np.zeros_like(mask), mask, np.zeros_like(mask)])
    result = simulate(untrained_checkpoint, volume, mask=volume_mask, months=(0, 6))
    assert result.lesion.center_zyx[0] == 1.0
    np.testing.assert_array_equal(result.frames_hu[0], scan.array[0])
