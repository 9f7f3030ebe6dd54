"""Evaluate predictions or a trained run: metrics + CIs, plots, predictions.csv, HTML report.

`evaluate_predictions` is the pure entry point (arrays in, files out) that every other path
goes through; `evaluate_run` loads a run's checkpoint and split, predicts, and calls it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lungcancer.evaluate.bootstrap import DEFAULT_N_BOOT, bootstrap_metrics
from lungcancer.evaluate.metrics import EvaluationError, compute_metrics, validate_predictions
from lungcancer.evaluate.plots import read_history, write_evaluation_plots
from lungcancer.evaluate.report import SectionLike, write_report
from lungcancer.io.atomic import atomic_write_text

SCHEMA = "lungcancer.evaluate/1"


@dataclass(frozen=True)
class EvalResult:
    """What an evaluation wrote and found.

    Attributes:
        out_dir: the folder holding everything below.
        metrics: the content of metrics.json.
        metrics_path: metrics.json.
        predictions_path: predictions.csv (sample key, hashed patient key, true, predicted,
            one probability column per class).
        report_path: report.html.
        plots: plot name -> PNG path.
    """

    out_dir: Path
    metrics: dict[str, Any]
    metrics_path: Path
    predictions_path: Path
    report_path: Path
    plots: dict[str, Path]


def hash_patient_key(key: str) -> str:
    """A short one-way hash of a patient key for files that leave the machine ("" stays "")."""
    if not key:
        return ""
    return hashlib.sha256(f"lungcancer-patient:{key}".encode()).hexdigest()[:16]


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sample_keys_digest(sample_keys: Sequence[str]) -> str:
    """Order-independent fingerprint of a set of samples, to tell whether two runs share a split."""
    joined = "\n".join(sorted(str(k) for k in sample_keys))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def _predictions_csv(
    y: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    sample_keys: Sequence[str],
    patient_keys: Sequence[str],
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["sample_key", "patient_hash", "true", "predicted", *[f"p_{n}" for n in class_names]]
    )
    pred = probs.argmax(axis=1)
    for i in range(y.shape[0]):
        writer.writerow(
            [
                sample_keys[i],
                hash_patient_key(patient_keys[i]),
                class_names[y[i]],
                class_names[pred[i]],
                *[f"{v:.6f}" for v in probs[i]],
            ]
        )
    return buffer.getvalue()


def evaluate_predictions(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    *,
    patient_keys: Sequence[str],
    out_dir: str | Path,
    sample_keys: Sequence[str] | None = None,
    split: str = "test",
    split_file: str | Path | None = None,
    held_out_patients: bool = False,
    grouping: str = "patient",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    run_info: Mapping[str, Any] | None = None,
    history_path: str | Path | None = None,
    title: str | None = None,
    sections: Sequence[SectionLike] = (),
) -> EvalResult:
    """Metrics with patient-bootstrap CIs, plots, predictions.csv and report.html in `out_dir`.

    Args:
        y_true: (N,) true class ids.
        probs: (N, C) predicted probabilities.
        class_names: the C class names in class-id order.
        patient_keys: (N,) patient key per sample ("" when unknown); hashed in every output.
        out_dir: folder to write into (created).
        sample_keys: (N,) sample identifiers for predictions.csv and the split fingerprint;
            defaults to the row number.
        split: name of the split evaluated.
        split_file: the split file used, fingerprinted so `compare` can check runs share it.
        held_out_patients: True when no patient of this split was used in training or model
            selection (the report then says so).
        grouping: what `patient_keys` stand for: "patient", or e.g. "scan file" for data
            without patient ids; shown in the report so nobody mistakes files for patients.
        n_boot: bootstrap resamples (0: no intervals).
        seed: seed of the bootstrap.
        run_info: model/checkpoint/data facts shown in the report and kept in metrics.json.
        history_path: a run's history.jsonl for training curves, if any.
        title: report title.
        sections: extra report sections (see `write_report`).

    Returns:
        The paths written and the metrics.
    """
    y, p = validate_predictions(y_true, probs, class_names)
    names = [str(n) for n in class_names]
    keys = [str(k) for k in (sample_keys if sample_keys is not None else range(y.shape[0]))]
    if len(keys) != y.shape[0] or len(patient_keys) != y.shape[0]:
        raise EvaluationError(
            "sample and patient keys must have one entry per sample",
            expected=f"{y.shape[0]} each",
            found=f"{len(keys)} sample keys, {len(patient_keys)} patient keys",
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    metrics = compute_metrics(y, p, names)
    patients = {str(k) for k in patient_keys if str(k)}
    without_id = sum(1 for k in patient_keys if not str(k))
    split_block: dict[str, Any] = {
        "name": split,
        "n_samples": int(y.shape[0]),
        "n_patients": len(patients),
        "held_out_patients": bool(held_out_patients),
        "sample_keys_sha256": sample_keys_digest(keys),
    }
    if split_file is not None:
        split_block["split_file"] = Path(split_file).name
        split_block["split_file_sha256"] = sha256_file(split_file)
    info = dict(run_info or {})
    metrics = {
        "schema": SCHEMA,
        **metrics,
        "n_patients": len(patients),
        "n_samples_without_patient_id": without_id,
        "split": split_block,
        "seed": int(seed),
        "grouping": grouping,
        "ci": bootstrap_metrics(
            y,
            p,
            patient_keys,
            names,
            n_boot=n_boot,
            seed=seed,
            unit=None if grouping == "patient" else f"{grouping} (the data has no patient ids)",
        ),
        "run": info,
    }

    history = None
    if history_path is not None and Path(history_path).is_file():
        history = read_history(history_path)
    plots = write_evaluation_plots(y, p, metrics, out, history=history)
    # File names only: a combined report finds them beside metrics.json wherever it moved.
    metrics["plots"] = {name: path.name for name, path in plots.items()}

    metrics_path = out / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    predictions_path = out / "predictions.csv"
    atomic_write_text(predictions_path, _predictions_csv(y, p, names, keys, patient_keys))
    report_path = write_report(
        out / "report.html",
        title=title or f"Evaluation on the {split} split",
        metrics=metrics,
        plots=plots,
        run_info={**info, "seed": int(seed)},
        sections=sections,
    )
    return EvalResult(
        out_dir=out,
        metrics=metrics,
        metrics_path=metrics_path,
        predictions_path=predictions_path,
        report_path=report_path,
        plots=plots,
    )


def load_metrics(path: str | Path) -> dict[str, Any]:
    """Read a metrics.json written by `evaluate_predictions`.

    Raises:
        EvaluationError: when the file is missing, not JSON, or not an evaluation.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EvaluationError(
            "no evaluation found",
            path=p,
            expected="eval/metrics.json written by `lungcancer evaluate`",
            hint="run `lungcancer evaluate RUN_DIR` first",
        ) from exc
    except json.JSONDecodeError as exc:
        raise EvaluationError(
            "metrics file is not valid JSON", path=p, found=str(exc), hint="evaluate the run again"
        ) from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise EvaluationError(
            "file is not an evaluation written by lungcancer",
            path=p,
            expected=f"schema {SCHEMA}",
            found=str(data.get("schema") if isinstance(data, dict) else type(data).__name__),
            hint="evaluate the run again with this version",
        )
    return data


@dataclass(frozen=True)
class SavedPredictions:
    """The content of a predictions.csv.

    Attributes:
        sample_keys: (N,) sample identifiers.
        patient_hashes: (N,) hashed patient keys ("" where unknown).
        y_true: (N,) class ids.
        probs: (N, C) probabilities.
    """

    sample_keys: list[str]
    patient_hashes: list[str]
    y_true: np.ndarray
    probs: np.ndarray


def load_predictions(path: str | Path, class_names: Sequence[str]) -> SavedPredictions:
    """Read a predictions.csv written by `evaluate_predictions`.

    Raises:
        EvaluationError: when the file is missing or its columns or values do not fit.
    """
    p = Path(path)
    columns = [f"p_{n}" for n in class_names]
    lookup = {str(n): i for i, n in enumerate(class_names)}
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError as exc:
        raise EvaluationError(
            "predictions file not found", path=p, hint="evaluate the run again"
        ) from exc
    needed = {"sample_key", "patient_hash", "true", *columns}
    if not rows or not needed <= set(rows[0]):
        raise EvaluationError(
            "predictions file does not have the expected columns",
            path=p,
            expected=", ".join(sorted(needed)),
            found=", ".join(rows[0]) if rows else "no rows",
            hint="evaluate the run again",
        )
    try:
        y = np.array([lookup[r["true"]] for r in rows], dtype=np.int64)
        probs = np.array([[float(r[c]) for c in columns] for r in rows], dtype=np.float64)
    except (KeyError, ValueError) as exc:
        raise EvaluationError(
            "predictions file has a value that is not a known class or a number",
            path=p,
            found=str(exc),
            hint="evaluate the run again",
        ) from exc
    return SavedPredictions(
        sample_keys=[r["sample_key"] for r in rows],
        patient_hashes=[r["patient_hash"] for r in rows],
        y_true=y,
        probs=probs,
    )
