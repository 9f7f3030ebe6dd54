"""`lungcancer explain`, `export` and `predict --engine onnx` on a trained checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lungcancer.cli import app, main

pytestmark = pytest.mark.e2e
runner = CliRunner()


def test_explain_writes_overlay_and_localisation(
    trained_checkpoint: Path, malignant_case: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "explain"
    args = ["explain", str(trained_checkpoint), str(malignant_case["nrrd"])]
    args += ["--mask", str(malignant_case["mask"]), "--method", "gradcampp", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pointing game:" in result.output
    summary = json.loads((out / "explanations.json").read_text())
    item = summary["explanations"][0]
    assert item["method"] == "gradcampp"
    assert isinstance(item["pointing_hit"], bool)
    assert 0.0 <= item["energy_share"] <= 1.0
    assert Path(item["overlay"]).is_file()


def test_export_and_predict_with_onnx_match_torch(
    trained_checkpoint: Path, malignant_case: dict[str, Path], tmp_path: Path
) -> None:
    onnx_path = tmp_path / "model.onnx"
    exported = runner.invoke(
        app, ["export", str(trained_checkpoint), "--format", "onnx", "--out", str(onnx_path)]
    )
    assert exported.exit_code == 0, exported.output
    assert "max |probability difference|" in exported.output and onnx_path.is_file()
    assert str(onnx_path) in exported.output  # the path is printed whole, never wrapped
    inputs = [str(malignant_case["png"]), str(malignant_case["nrrd"])]
    torch_rows = tmp_path / "torch.json"
    onnx_rows = tmp_path / "onnx.json"
    ran = runner.invoke(
        app, ["predict", str(trained_checkpoint), *inputs, "--out", str(torch_rows)]
    )
    assert ran.exit_code == 0, ran.output
    ran = runner.invoke(
        app, ["predict", str(onnx_path), *inputs, "--engine", "onnx", "--out", str(onnx_rows)]
    )
    assert ran.exit_code == 0, ran.output
    want = json.loads(torch_rows.read_text())
    got = json.loads(onnx_rows.read_text())
    assert [(r["path"], r["item"]) for r in got] == [(r["path"], r["item"]) for r in want]
    for a, b in zip(got, want, strict=True):
        # The PyTorch path runs in bf16 on CPUs with native bf16 (the precision policy);
        # ONNX Runtime runs fp32. Exact fp32 parity (<= 1e-4) is tested in tests/export.
        assert (
            max(abs(a["probabilities"][c] - b["probabilities"][c]) for c in b["probabilities"])
            < 2e-2
        )


def test_export_torchscript_reports_parity(trained_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.torchscript.pt"
    result = runner.invoke(
        app, ["export", str(trained_checkpoint), "--format", "torchscript", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and "torchscript" in result.output


def test_bad_input_is_a_clean_error(
    trained_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bogus = tmp_path / "scan.png"
    bogus.write_text("hello")
    monkeypatch.setattr(sys, "argv", ["lungcancer", "explain", str(trained_checkpoint), str(bogus)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "not a supported image format" in err and "Traceback" not in err
    monkeypatch.setattr(
        sys, "argv", ["lungcancer", "predict", str(bogus), str(bogus), "--engine", "onnx"]
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
