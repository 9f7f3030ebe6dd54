"""inspect_dataset and the `data inspect|split|audit` and `measure` commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from data_builders import class_folders, sphere_volume, write_png
from PIL import Image
from typer.testing import CliRunner

from lungcancer.cli import app, main
from lungcancer.data.inspect import inspect_dataset

runner = CliRunner()


def test_inspect_summarises_classes_splits_formats_and_intensities(tmp_path: Path) -> None:
    class_folders(tmp_path, {"adenocarcinoma_x_T1_N0_M0_Ia": 3, "normal": 2}, split="train")
    class_folders(tmp_path, {"adenocarcinoma": 1, "normal": 1}, split="test", seed=3)
    (tmp_path / "train" / "normal" / "junk.txt").write_text("x")
    summary = inspect_dataset(tmp_path, files=4)
    assert summary.counts == {
        "adenocarcinoma": {"train": 3, "test": 1},
        "normal": {"train": 2, "test": 1},
    }
    assert summary.formats == {"png": 7}
    assert summary.files_read == 4 and summary.intensity == "unit"
    assert 0.0 <= summary.intensity_p1_p99["p1"].min <= summary.intensity_p1_p99["p99"].max <= 1
    assert summary.spacing_mm["y"].median == 1.0
    assert summary.n_patients == 0 and not summary.has_patient_ids
    assert any("junk.txt" in p for p in summary.problems)


def test_cli_inspect_json_and_table(tmp_path: Path) -> None:
    class_folders(tmp_path, {"a": 2, "b": 2})
    result = runner.invoke(app, ["data", "inspect", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["class_names"] == ["a", "b"] and document["n_samples"] == 4
    table = runner.invoke(app, ["data", "inspect", str(tmp_path)])
    assert table.exit_code == 0
    assert "4 samples" in table.stdout and "decoded" in table.stdout


def test_cli_split_writes_a_file_that_audits_clean(tmp_path: Path) -> None:
    class_folders(tmp_path / "d", {"a": 5, "b": 5})
    out = tmp_path / "splits.json"
    result = runner.invoke(
        app, ["data", "split", str(tmp_path / "d"), "--out", str(out), "--seed", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sizes"]["test"] >= 1
    audited = runner.invoke(app, ["data", "audit", str(tmp_path / "d"), "--splits", str(out)])
    assert audited.exit_code == 0, audited.output
    assert "no leakage found" in audited.stdout


def test_cli_audit_exits_non_zero_on_leakage(tmp_path: Path) -> None:
    class_folders(tmp_path, {"a": 3, "b": 3}, split="train")
    class_folders(tmp_path, {"a": 1, "b": 1}, split="test", seed=5)
    copied = np.asarray(Image.open(tmp_path / "train" / "a" / "img_000.png")) / 255
    write_png(tmp_path / "test" / "a" / "copy.png", copied)
    result = runner.invoke(app, ["data", "audit", str(tmp_path), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["leakage"] and report["audited"] == "the layout's own splits"
    assert len(report["cross_split"]) == 1


def test_cli_measure_json(tmp_path: Path) -> None:
    image, mask = sphere_volume(
        tmp_path,
        "c",
        shape=(16, 24, 24),
        spacing_mm=(1.0, 1.0, 1.0),
        centres_zyx=((8, 12, 12),),
        radius_mm=5.0,
    )
    result = runner.invoke(app, ["measure", str(image), "--mask", str(mask), "--json"])
    assert result.exit_code == 0, result.output
    lesion = json.loads(result.stdout)["lesions"][0]
    assert abs(lesion["diameter_mm"] - 10.0) <= 1.0
    assert lesion["t_descriptor"] == "T1a" and lesion["lung_rads_band"] == "4A"
    table = runner.invoke(app, ["measure", str(image), "--mask", str(mask)])
    assert "T1a" in table.stdout and "size alone" in table.stdout


def test_bad_input_is_a_clean_message_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class_folders(tmp_path, {"only": 2})
    monkeypatch.setattr(sys, "argv", ["lungcancer", "data", "inspect", str(tmp_path)])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "at least two classes" in error and "Traceback" not in error
