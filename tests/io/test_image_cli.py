"""`lungcancer image info|series|convert` on a tiny DICOM series."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from io_builders import write_ct_series
from typer.testing import CliRunner

from lungcancer.cli import app
from lungcancer.io import read_image


def test_image_commands_describe_list_and_convert(tmp_path: Path) -> None:
    truth = write_ct_series(tmp_path / "s", n_slices=3)
    runner = CliRunner()
    info = runner.invoke(app, ["image", "info", str(tmp_path / "s"), "--json"])
    assert info.exit_code == 0, info.output
    summary = json.loads(info.output)
    assert summary["shape_zyx"] == [3, 16, 16] and summary["intensity"] == "HU"
    assert summary["min"] == float(truth.hu_volume.min())
    assert "TEST-PATIENT" not in info.output
    listing = runner.invoke(app, ["image", "series", str(tmp_path / "s"), "--json"])
    assert [row["n_files"] for row in json.loads(listing.output)] == [3]
    out = tmp_path / "ct.nii.gz"
    converted = runner.invoke(app, ["image", "convert", str(tmp_path / "s"), str(out)])
    assert converted.exit_code == 0, converted.output
    np.testing.assert_array_equal(read_image(out).array, truth.hu_volume)
