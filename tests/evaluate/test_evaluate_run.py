"""End to end: train a tiny CNN for one epoch, then evaluate the run folder."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lungcancer.config import DataConfig, ModelConfig, TrainConfig
from lungcancer.errors import LungCancerError
from lungcancer.evaluate.api import EvalResult, evaluate_run

CLASSES = ("adeno", "normal", "squamous")
# One epoch on 36 images often predicts a single class; the warning that follows is expected.
pytestmark = pytest.mark.filterwarnings(
    "ignore::lungcancer.evaluate.metrics.UndefinedMetricWarning"
)


def _dataset(root: Path) -> Path:
    """36 PNGs of 32x32 from 18 patients, two images each; each class has its own bright box."""
    rng = np.random.default_rng(0)
    rows = ["path,label,patient_id,mask_path,size_mm,scanner"]
    boxes = {"adeno": np.s_[8:20, 8:20], "squamous": np.s_[18:28, 4:28]}
    for p in range(18):
        label = CLASSES[p % 3]
        for k in range(2):
            image = rng.integers(0, 60, size=(32, 32)).astype(np.uint8)
            mask_name = ""
            if label in boxes:
                image[boxes[label]] += 150 if label == "adeno" else 120
                mask = np.zeros((32, 32), np.uint8)
                mask[boxes[label]] = 255
                mask_name = f"p{p}_{k}_mask.png"
                Image.fromarray(mask).save(root / mask_name)
            Image.fromarray(image).save(root / f"p{p}_{k}.png")
            # Findings to group by: a size for lesions (none for normal), a scanner per patient.
            size = {"adeno": "12", "squamous": "20"}.get(label, "")
            rows.append(f"p{p}_{k}.png,{label},SECRET-ID-{p},{mask_name},{size},{'AB'[p % 2]}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def _train_one_epoch(root: Path, source: Path, **data: object) -> Path:
    """A tiny CNN trained for one epoch on `source` into root/run; returns the run folder."""
    from lungcancer.train.api import train

    data_cfg = DataConfig(
        source=str(source),
        image_size=32,
        cache_dir=str(root / "cache"),
        val_fraction=0.2,
        test_fraction=0.35,
        **data,  # type: ignore[arg-type]
    )
    train_cfg = TrainConfig(
        out_dir=str(root / "run"), epochs=1, batch_size=8, device="cpu", precision="fp32"
    )
    return train(data_cfg, ModelConfig(name="cnn"), train_cfg).run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("e2e")
    (root / "data").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LUNGCANCER_PHI_SALT", "test-salt")
        mp.setenv("XDG_CACHE_HOME", str(root / "xdg"))
        yield _train_one_epoch(root, _dataset(root / "data"))


@pytest.fixture(scope="module")
def evaluated(run_dir: Path) -> EvalResult:
    return evaluate_run(run_dir, n_boot=20, seed=0)


def test_evaluate_run_writes_the_eval_folder(run_dir: Path, evaluated: EvalResult) -> None:
    assert evaluated.out_dir == run_dir / "eval"
    for name in ("metrics.json", "predictions.csv", "report.html", "roc_curves.png"):
        assert (run_dir / "eval" / name).is_file(), name
    assert "training_curves" in evaluated.plots
    metrics = json.loads(evaluated.metrics_path.read_text())
    test_keys = json.loads((run_dir / "splits.json").read_text())["splits"]["test"]
    assert metrics["n_samples"] == len(test_keys)
    assert metrics["split"]["held_out_patients"] is True
    assert metrics["grouping"] == "patient"
    assert metrics["n_patients"] == len(test_keys) // 2
    assert metrics["class_names"] == list(CLASSES)
    assert metrics["run"]["model"] == "cnn" and metrics["run"]["n_params"] > 0
    assert metrics["split"]["split_file_sha256"]
    with evaluated.predictions_path.open(newline="") as fh:
        keys = sorted(row[0] for row in list(csv.reader(fh))[1:])
    assert keys == sorted(test_keys)


def test_lesion_masks_give_localisation_scores(evaluated: EvalResult) -> None:
    saved = json.loads(evaluated.metrics_path.read_text())
    scores = saved["localisation"]
    # Only the two lesion classes have masks; every masked test sample is scored.
    support = saved["support"]
    assert scores["n"] == support["adeno"] + support["squamous"] > 0
    assert 0.0 <= scores["pointing_game_hit_rate"] <= 1.0
    assert 0.0 <= scores["mean_energy_share"] <= 1.0
    assert "Where the model looked" in evaluated.report_path.read_text()


def test_subgroups_split_the_test_samples_by_a_manifest_column(
    run_dir: Path, tmp_path: Path
) -> None:
    from lungcancer.cli import app

    result = evaluate_run(run_dir, n_boot=20, out_dir=tmp_path / "by", by=("size_mm:15", "scanner"))
    by_size, by_scanner = result.metrics["subgroups"]
    support = result.metrics["support"]
    sizes = {g["group"]: g for g in by_size["groups"]}
    # Edges in the column's unit: adeno (12 mm) below 15, squamous (20 mm) above; normal
    # slices have no size and are kept as their own group, not dropped.
    assert sizes["< 15"]["classes"] == ["adeno"] and sizes["< 15"]["n_samples"] == support["adeno"]
    assert sizes[">= 15"]["classes"] == ["squamous"]
    assert sizes["(not recorded)"]["classes"] == ["normal"]
    assert sum(g["n_samples"] for g in by_scanner["groups"]) == result.metrics["n_samples"]
    assert [g["group"] for g in by_scanner["groups"]] == ["A", "B"]
    # A group's accuracy is the share right among its own samples.
    with result.predictions_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    adeno = [r for r in rows if r["true"] == "adeno"]
    right = sum(r["predicted"] == "adeno" for r in adeno) / len(adeno)
    assert sizes["< 15"]["metrics"]["accuracy"] == pytest.approx(right)
    assert sizes["< 15"]["recall"] == {"adeno": pytest.approx(right)}
    report = result.report_path.read_text(encoding="utf-8")
    assert "By size_mm" in report and "By scanner" in report
    with pytest.raises(LungCancerError, match=r"columns: .*scanner.*size_mm"):
        evaluate_run(run_dir, n_boot=0, out_dir=tmp_path / "bad", by=("size",))
    args = ["evaluate", str(run_dir), "--n-boot", "0", "--out", str(tmp_path / "cli")]
    shown = CliRunner().invoke(app, [*args, "--by", "scanner"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "by scanner" in shown.output


def test_no_patient_id_reaches_the_outputs(evaluated: EvalResult) -> None:
    for path in evaluated.out_dir.iterdir():
        if path.suffix in (".json", ".csv", ".html"):
            assert "SECRET-ID" not in path.read_text(encoding="utf-8"), path.name


def test_cli_evaluate_prints_the_headline_and_the_report_path(
    run_dir: Path, tmp_path: Path
) -> None:
    from lungcancer.cli import app

    args = ["evaluate", str(run_dir / "best.pt"), "--n-boot", "10", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Macro ROC-AUC" in result.output
    assert "report.html" in result.output
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert json.loads(as_json.output)["ci"]["n_boot"] == 10


def test_compare_a_run_with_itself_shows_zero_difference(run_dir: Path, tmp_path: Path) -> None:
    from lungcancer.evaluate.compare import compare_runs

    twin = tmp_path / "twin"
    shutil.copytree(run_dir, twin)
    result = compare_runs([run_dir, twin], out_dir=tmp_path / "cmp")
    assert result.differences[0]["metrics"]["accuracy"]["difference"] == 0.0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: (d / "splits.json").unlink(), "split file is missing"),
        (lambda d: [p.unlink() for p in d.glob("*.pt")], "no checkpoint"),
    ],
)
def test_broken_run_folders_give_clear_errors(
    run_dir: Path, tmp_path: Path, mutate: Callable[[Path], object], message: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken, ignore=shutil.ignore_patterns("eval"))
    mutate(broken)
    with pytest.raises(LungCancerError, match=message):
        evaluate_run(broken, n_boot=0)


def test_unknown_split_is_refused(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LungCancerError, match="'holdout' split is empty"):
        evaluate_run(run_dir, split="holdout", out_dir=tmp_path, n_boot=0)


def test_a_run_with_training_only_data_evaluates_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lungcancer.errors import DatasetError

    monkeypatch.setenv("LUNGCANCER_PHI_SALT", "test-salt")
    (tmp_path / "data").mkdir()
    (tmp_path / "more").mkdir()
    source = _dataset(tmp_path / "data")
    # The same images as other patients: training-only data.
    more = _dataset(tmp_path / "more")
    more.write_text(more.read_text().replace("SECRET-ID-", "MORE-ID-"))
    run = _train_one_epoch(tmp_path, source, train_extra=(str(more),))
    shutil.rmtree(tmp_path / "more")
    evaluated = evaluate_run(run, out_dir=tmp_path / "eval", n_boot=0)
    test_split = json.loads((run / "splits.json").read_text())["splits"]["test"]
    assert evaluated.metrics["n_samples"] == len(test_split)
    # The training split does need it, and says which dataset is gone.
    with pytest.raises(DatasetError, match="more"):
        evaluate_run(run, split="train", out_dir=tmp_path / "eval2", n_boot=0)


def test_calibrate_fits_on_val_writes_a_new_checkpoint_and_evaluate_says_so(
    run_dir: Path, tmp_path: Path
) -> None:
    import torch

    from lungcancer.cli import app
    from lungcancer.evaluate.api import sha256_file
    from lungcancer.evaluate.posthoc import ENTRY, calibrate_run
    from lungcancer.train.checkpoint import load_checkpoint

    source = run_dir / "best.pt"
    before = sha256_file(source)
    # Inside the run folder: evaluate finds the run's splits.json beside the checkpoint.
    out = run_dir / "calibrated_by_test.pt"
    shown = CliRunner().invoke(app, ["calibrate", str(run_dir), "--out", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "fitted on the val split" in shown.output and "no class bias" in shown.output
    assert sha256_file(source) == before  # the source checkpoint is never changed
    calibrated = load_checkpoint(out)
    entry = calibrated[ENTRY]
    val_keys = json.loads((run_dir / "splits.json").read_text())["splits"]["val"]
    assert entry["split"] == "val" and entry["n_samples"] == len(val_keys)
    assert entry["source"] == {"file": "best.pt", "sha256": before}
    assert entry["after"]["nll"] <= entry["before"]["nll"] + 1e-9
    layer = entry["layer"]
    torch.testing.assert_close(
        calibrated["state_dict"][f"{layer}.weight"],
        (entry["original_weight"].double() / entry["temperature"]).float(),
    )
    # Evaluating the calibrated checkpoint on the test split records what it carries.
    result = evaluate_run(out, n_boot=0, out_dir=tmp_path / "eval", localisation_samples=0)
    info = json.loads(result.metrics_path.read_text())["run"]
    assert info["post-hoc calibration"].startswith("temperature ")
    assert "fitted on the val split" in info["post-hoc calibration"]
    # A calibrated checkpoint is not calibrated again, and the test split never fits one.
    with pytest.raises(LungCancerError, match="already calibrated"):
        calibrate_run(out, out=tmp_path / "x.pt")
    with pytest.raises(LungCancerError, match="test split"):
        calibrate_run(run_dir, split="test")
    with pytest.raises(LungCancerError, match="overwrite"):
        calibrate_run(source, out=source)
    assert not (run_dir / "calibrated.pt").exists()
    out.unlink()  # the module's other tests share the run folder
