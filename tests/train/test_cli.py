"""`lungcancer train` and `lungcancer predict` end to end on a tiny PNG dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from io_builders import ct_dataset, write_dataset
from train_builders import write_png_dataset
from typer.testing import CliRunner

from lungcancer.cli import app, main
from lungcancer.train.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    data = write_png_dataset(root / "data", per_class=10)
    config = root / "quick.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"image_size": 48, "cache_dir": str(root / "cache")},
                "model": {"name": "densenet121"},
                "train": {"epochs": 5, "batch_size": 4, "precision": "fp32"},
            }
        )
    )
    args = [
        "train", "--config", str(config), "--data", str(data), "--model", "cnn",
        "--epochs", "1", "--image-size", "32", "--out", str(root / "run"), "--threads", "1",
        "--max-steps", "1000", "--precise-bn-batches", "3",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best:" in result.output
    return root / "run", data


def test_flags_override_the_yaml_sections(trained: tuple[Path, Path]) -> None:
    run, data = trained
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["name"] == "cnn"  # flag beats YAML
    assert saved["data"]["image_size"] == 32
    assert saved["data"]["source"] == str(data)
    assert saved["train"]["epochs"] == 1 and saved["train"]["batch_size"] == 4  # YAML kept
    # --max-steps beyond what one epoch holds: recorded, and the epoch ends the run.
    assert saved["train"]["max_steps"] == 1000
    assert "the epochs end the run" in (run / "train.log").read_text()
    # Precise BN from the flag, on the un-augmented training images `train` builds.
    assert saved["train"]["precise_bn_batches"] == 3
    assert "from 3 training batches of 4 (no augmentation)" in (run / "train.log").read_text()
    assert (run / "splits.json").is_file()
    assert load_checkpoint(run / "best.pt")["data_config"]["image_size"] == 32


def test_predict_prints_json_and_writes_csv(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = trained
    images = [
        str(data / "benign" / "patient_000_a.png"),
        str(data / "malignant" / "patient_100_a.png"),
    ]
    out = tmp_path / "preds.csv"
    result = CliRunner().invoke(
        app, ["predict", str(run / "best.pt"), *images, "--json", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["path"] for r in rows] == images
    assert out.read_text().count("\n") == 3


def test_resume_continues_the_run(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = trained
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("best.pt", "last.pt", "splits.json"):
        (copy / name).write_bytes((run / name).read_bytes())
    args = [
        "train", "--data", str(data), "--model", "cnn", "--epochs", "2", "--image-size", "32",
        "--out", str(copy), "--resume", "--threads", "1", "--precision", "fp32",
        "--batch-size", "4",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(copy / "last.pt")["epoch"] == 2


def _mr_slice(path: Path) -> Path:
    ds = ct_dataset(np.zeros((16, 16), np.int16), position_xyz_mm=(0, 0, 0), modality="MR")
    return write_dataset(ds, path)


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> str:
    """Run the `lungcancer` entry point in-process; returns stderr of a failing command."""
    monkeypatch.setattr(sys, "argv", ["lungcancer", *args])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    return err


def test_predict_on_an_mr_image_exits_2_with_a_message(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    run, _ = trained
    mr = _mr_slice(tmp_path / "mr.dcm")
    # The real entry point, in its own process, as a user runs it.
    proc = subprocess.run(
        [sys.executable, "-m", "lungcancer.cli", "predict", str(run / "best.pt"), str(mr),
         "--threads", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "true"},
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:")
    assert "MR" in proc.stderr and str(mr) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_predict_on_a_non_image_exits_2(
    trained: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run, _ = trained
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is text")
    err = run_main(
        monkeypatch, capsys, "predict", str(run / "best.pt"), str(text), "--threads", "1"
    )
    assert str(text) in err


def test_train_with_an_unknown_model_is_a_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_png_dataset(tmp_path / "data", per_class=4)
    out = tmp_path / "run"
    err = run_main(
        monkeypatch, capsys, "train", "--data", str(data), "--model", "vgg", "--out", str(out)
    )
    assert "unknown model 'vgg'" in err
    assert not out.exists()  # refused before any file was written


def test_train_extra_with_the_test_split_s_patients_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_png_dataset(tmp_path / "data", per_class=6)
    # The same file names mean the same patient ids: some are in data's val and test splits.
    copy = write_png_dataset(tmp_path / "copy", per_class=6)
    err = run_main(
        monkeypatch, capsys, "train", "--data", str(data), "--train-extra", str(copy),
        "--model", "cnn", "--epochs", "1", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert "shares patient ids with the validation or test split" in err
    assert str(copy) in err


def test_progressive_resizing_flags_reach_the_config_checks(tmp_path: Path) -> None:
    data = write_png_dataset(tmp_path / "data", per_class=2)
    args = [
        "train", "--data", str(data), "--model", "cnn", "--image-size", "64",
        "--out", str(tmp_path / "run"), "--low-res-px", "64", "--low-res-fraction", "0.5",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "low_res_px must be smaller than the input" in str(result.exception)
    assert "expected: 32 <= low_res_px < 64" in str(result.exception)


@pytest.mark.parametrize(
    ("crop", "message"),
    [
        ("16,48", "low_res_crop_px must give one size per spatial axis, each at least 32"),
        ("40,4x", "--low-res-crop-px must be comma-separated whole numbers"),
    ],
)
def test_the_crop_phase_flag_is_parsed_and_checked(tmp_path: Path, crop: str, message: str) -> None:
    data = write_png_dataset(tmp_path / "data", per_class=2)
    args = [
        "train", "--data", str(data), "--model", "cnn", "--image-size", "64",
        "--out", str(tmp_path / "run"), "--low-res-crop-px", crop, "--low-res-fraction", "0.5",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert message in str(result.exception)


@pytest.mark.parametrize("args", [["train", "--bogus"], ["gan", "evaluate", "--bogus"], ["nosuch"]])
def test_an_unknown_flag_or_command_is_a_usage_message_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["lungcancer", *args])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Usage:" in err and "Traceback" not in err
    assert ("No such option: --bogus" in err) or ("No such command" in err)


def test_tables_in_logs_are_not_cut_to_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped to a log, rich assumed 80 columns and cut the timeline's headers to "mon…"; now
    the log gets LOG_WIDTH, and COLUMNS, where set, still decides."""
    from lungcancer import cli

    monkeypatch.delenv("COLUMNS", raising=False)
    if cli._console().is_terminal:
        pytest.skip("run with output to a terminal (pytest -s in a shell)")
    assert cli._console().width == cli.LOG_WIDTH
    monkeypatch.setenv("COLUMNS", "100")
    assert cli._console().width == 100
