"""evaluate_predictions writes everything a user needs; compare refuses unlike splits."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from lungcancer.errors import LungCancerError
from lungcancer.evaluate.api import EvalResult, evaluate_predictions, load_metrics
from lungcancer.evaluate.compare import compare_runs, write_combined_report
from lungcancer.evaluate.metrics import UndefinedMetricWarning

NAMES = ["adeno", "squamous", "normal"]


def _predictions(n_patients: int, signal: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_patients) % 3, 2)
    logits = rng.normal(size=(y.shape[0], 3)) + signal * np.eye(3)[y]
    return y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def _evaluate(run_dir: Path, sample_keys: list[str], signal: float, model: str) -> EvalResult:
    y, probs = _predictions(len(sample_keys) // 2, signal, seed=len(model))
    patients = [f"SECRET-PATIENT-{i // 2}" for i in range(len(sample_keys))]
    (run_dir / "history.jsonl").parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "history.jsonl").write_text(
        "\n".join(json.dumps({"epoch": e, "train_loss": 1 / e, "val_acc": 0.5}) for e in (1, 2))
    )
    return evaluate_predictions(
        y,
        probs,
        NAMES,
        patient_keys=patients,
        sample_keys=sample_keys,
        out_dir=run_dir / "eval",
        n_boot=30,
        seed=0,
        held_out_patients=True,
        run_info={"model": model, "n_params": 1234, "train_minutes": 1.5},
        history_path=run_dir / "history.jsonl",
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EvalResult]:
    root = tmp_path_factory.mktemp("runs")
    shared = [f"img/{i:03d}.png" for i in range(36)]
    other = [f"img/{i:03d}.png" for i in range(100, 136)]
    return {
        "cnn": _evaluate(root / "cnn", shared, 1.0, "cnn"),
        "densenet": _evaluate(root / "densenet", shared, 2.5, "densenet121"),
        "other_split": _evaluate(root / "other", other, 2.0, "resnet50"),
    }


def test_evaluation_writes_metrics_predictions_plots_and_report(
    runs: dict[str, EvalResult],
) -> None:
    result = runs["cnn"]
    names = sorted(p.name for p in result.out_dir.iterdir())
    for expected in (
        "metrics.json",
        "predictions.csv",
        "report.html",
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "roc_curves.png",
        "pr_curves.png",
        "reliability.png",
        "training_curves.png",
    ):
        assert expected in names
    text = result.metrics_path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    saved = load_metrics(result.metrics_path)
    assert saved["n_samples"] == 36 and saved["n_patients"] == 18
    assert saved["split"]["name"] == "test"
    assert saved["class_names"] == NAMES
    assert saved["ci"]["n_boot"] == 30 and saved["ci"]["seed"] == 0
    assert set(saved["ci"]["headline"]) == set(saved["headline"])


def test_no_raw_patient_key_in_any_output(runs: dict[str, EvalResult]) -> None:
    result = runs["cnn"]
    for path in result.out_dir.iterdir():
        if path.suffix in (".json", ".csv", ".html"):
            assert "SECRET-PATIENT" not in path.read_text(encoding="utf-8"), path.name
    with result.predictions_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 36
    assert rows[0]["sample_key"] == "img/000.png"
    assert len(rows[0]["patient_hash"]) == 16
    assert rows[0]["patient_hash"] == rows[1]["patient_hash"] != rows[2]["patient_hash"]
    assert rows[0]["true"] in NAMES
    assert sum(float(rows[0][f"p_{n}"]) for n in NAMES) == pytest.approx(1.0, abs=1e-5)


def test_compare_tabulates_runs_on_the_same_split(
    runs: dict[str, EvalResult], tmp_path: Path
) -> None:
    result = compare_runs(
        [runs["cnn"].out_dir.parent, runs["densenet"].out_dir.parent], out_dir=tmp_path
    )
    assert result.warnings == []
    assert [r["model"] for r in result.rows] == ["cnn", "densenet121 (densenet)"]
    auc = result.rows[1]["metrics"]["macro_roc_auc"]
    assert auc["value"] == runs["densenet"].metrics["headline"]["macro_roc_auc"]
    assert auc["low"] <= auc["value"] <= auc["high"]
    assert result.rows[0]["n_params"] == 1234
    assert json.loads(result.json_path.read_text())["rows"] == result.rows
    assert result.forest_path.is_file()
    page = result.html_path.read_text()
    assert "http" not in page and f"{auc['value']:.3f}" in page
    # The stronger model is compared with the first one on the same resampled patients.
    (difference,) = result.differences
    assert difference["reference"] == "cnn"
    assert difference["metrics"]["macro_roc_auc"]["difference"] == pytest.approx(
        auc["value"] - result.rows[0]["metrics"]["macro_roc_auc"]["value"], abs=1e-4
    )
    assert "paired bootstrap" in page


def test_compare_refuses_runs_evaluated_on_different_splits(
    runs: dict[str, EvalResult], tmp_path: Path
) -> None:
    dirs = [runs["cnn"].out_dir.parent, runs["other_split"].out_dir.parent]
    with pytest.raises(LungCancerError, match="not evaluated on the same split") as err:
        compare_runs(dirs, out_dir=tmp_path / "refused")
    assert "--allow-different-splits" in str(err.value)
    assert not (tmp_path / "refused" / "compare.json").exists()
    allowed = compare_runs(dirs, out_dir=tmp_path / "allowed", allow_different_splits=True)
    assert allowed.warnings and "different set of samples" in allowed.warnings[0]
    assert allowed.differences == []
    assert "different set of samples" in allowed.html_path.read_text()


def test_compare_without_an_evaluation_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(LungCancerError, match="lungcancer evaluate"):
        compare_runs([tmp_path])


def test_combined_report_holds_every_model_and_the_comparison(
    runs: dict[str, EvalResult], tmp_path: Path
) -> None:
    result = compare_runs(
        [runs["cnn"].out_dir.parent, runs["densenet"].out_dir.parent], out_dir=tmp_path
    )
    page = write_combined_report(tmp_path / "all.html", result).read_text()
    assert page.index("Model comparison") < page.index("cnn</h2>")
    assert "densenet121 (densenet)</h2>" in page
    # Each model's own figures are embedded: 6 per model plus the forest plot.
    assert page.count("data:image/png;base64,") == 13
    assert "http" not in page


def test_missing_class_end_to_end_warns_and_writes_nulls(tmp_path: Path) -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]] * 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_predictions(
            y, probs, NAMES, patient_keys=list("abcdef"), out_dir=tmp_path, n_boot=10
        )
    assert any(issubclass(w.category, UndefinedMetricWarning) for w in caught)
    saved = json.loads(result.metrics_path.read_text())
    assert saved["per_class"]["normal"]["roc_auc"] is None
    assert saved["ci"]["per_class"]["normal"]["roc_auc"]["low"] is None


def test_cli_compare_prints_the_table_and_writes_outputs(
    runs: dict[str, EvalResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from lungcancer import cli
    from lungcancer.cli import app

    dirs = [str(runs["cnn"].out_dir.parent), str(runs["densenet"].out_dir.parent)]
    # The CLI's console measured its width when first imported (maybe by another test).
    monkeypatch.setattr(cli.console, "_width", 250)
    result = CliRunner().invoke(app, ["compare", *dirs, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "densenet121 (densenet)" in result.output
    assert "compare.html" in result.output
    as_json = CliRunner().invoke(app, ["compare", *dirs, "--out", str(tmp_path), "--json"])
    assert json.loads(as_json.output)["rows"][0]["model"] == "cnn"


def test_cli_compare_of_unlike_splits_exits_2_with_the_reason(
    runs: dict[str, EvalResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lungcancer.cli import main

    dirs = [str(runs["cnn"].out_dir.parent), str(runs["other_split"].out_dir.parent)]
    monkeypatch.setattr("sys.argv", ["lungcancer", "compare", *dirs, "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "not evaluated on the same split" in err and "Traceback" not in err
