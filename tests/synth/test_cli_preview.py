"""The `lungcancer synth` command and the contact sheet."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from lungcancer.cli import app
from lungcancer.errors import ConfigError
from lungcancer.synth import SynthConfig, contact_sheet


def test_synth_command_writes_a_dataset_with_the_requested_classes(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    result = CliRunner().invoke(
        app,
        ["synth", "--out", str(out), "--patients", "2", "--size", "48", "--classes", "binary",
         "--timepoints", "0,6", "--off-centre-slices", "0", "--seed", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4  # 2 patients x 2 visits x 1 slice
    assert {r["requested_class"] for r in rows} == {"benign", "malignant"}
    assert {r["time_point"] for r in rows} == {"0.0", "6.0"}
    assert "malignant" in result.output


def test_synth_command_without_out_or_preview_says_what_to_pass() -> None:
    result = CliRunner().invoke(app, ["synth", "--patients", "2"])
    assert isinstance(result.exception, ConfigError)
    assert "--out" in str(result.exception) and "--preview" in str(result.exception)


def test_synth_command_rejects_a_bad_timepoint_list(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "x"), "--timepoints", "0,a"])
    assert isinstance(result.exception, ConfigError)
    assert "--timepoints" in str(result.exception)


def test_contact_sheet_has_one_row_per_class_with_a_ct_in_each_tile(tmp_path: Path) -> None:
    path = contact_sheet(SynthConfig(size=48, off_centre_slices=0), tmp_path / "s.png", 1)
    sheet = np.asarray(Image.open(path))
    classes = SynthConfig().class_names
    row_h = sheet.shape[0] // len(classes)
    for row in range(len(classes)):
        tile = sheet[row * row_h : row * row_h + 150, 100:280]
        # Lung window: soft tissue is bright, lungs and air dark; a real tile has both.
        assert (tile > 200).mean() > 0.05 and (tile < 110).mean() > 0.2


def test_synth_command_passes_the_followup_settings_and_records_them(tmp_path: Path) -> None:
    out = tmp_path / "twin"
    result = CliRunner().invoke(
        app,
        ["synth", "--out", str(out), "--patients", "2", "--size", "48", "--timepoints", "0,6",
         "--off-centre-slices", "0", "--no-png", "--followup-pose", "baseline",
         "--no-followup-spread"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = (out / "synth_config.yaml").read_text()
    assert "followup_pose: baseline" in saved and "followup_spread: false" in saved
