"""Evaluate predictions or a trained run: metrics + CIs, plots, predictions.csv, HTML report.

`evaluate_predictions` is the pure entry point (arrays in, files out) that every other path
goes through; `evaluate_run` loads a run's checkpoint and split, predicts, and calls it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lungcancer.config import DataConfig
from lungcancer.evaluate.bootstrap import DEFAULT_N_BOOT, bootstrap_metrics
from lungcancer.evaluate.metrics import EvaluationError, compute_metrics, validate_predictions
from lungcancer.evaluate.plots import read_history, write_evaluation_plots
from lungcancer.evaluate.report import SectionLike, subgroup_section, write_report
from lungcancer.evaluate.subgroups import GroupSpec, subgroup_metrics
from lungcancer.io.atomic import atomic_write_text

if TYPE_CHECKING:  # imported lazily at run time: evaluating predictions needs no torch
    from lungcancer.data import ClassificationDataset
    from lungcancer.data.prepare import PreparedData
    from lungcancer.train.inference import LoadedClassifier

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


def _finite_or_none(values: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe copy: NaN (no sample had a mask) becomes null."""
    return {
        k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in values.items()
    }


def _localisation_section(scores: Mapping[str, Any]) -> tuple[str, str]:
    """Report block: did the evidence for the true class lie on the lesion?"""
    rate, share = scores.get("pointing_game_hit_rate"), scores.get("mean_energy_share")
    if rate is None or share is None:
        return ("Where the model looked", "<p>No sample of this split has a lesion mask.</p>")
    body = (
        f"<p>Grad-CAM for the true class on the {scores.get('n', 0)} samples with a lesion mask. "
        f"Pointing game (the heat map's maximum within {scores.get('tolerance_px')} input pixels "
        f"of the lesion): <b>{rate:.1%}</b> hits. Share of the heat map's energy inside the "
        f"lesion mask: <b>{share:.1%}</b> on average. Stage also depends on nodes and "
        "effusions outside the primary lesion, so a good stage model need not point at the "
        "lesion only.</p>"
    )
    return ("Where the model looked", body)


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
    localisation: Mapping[str, Any] | None = None,
    subgroups: Sequence[tuple[GroupSpec, Sequence[str]]] = (),
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
        localisation: Grad-CAM localisation scores over the samples with lesion masks
            (`lungcancer.explain.localisation_scores`), kept in metrics.json and the report.
        subgroups: (column and bins, each sample's value of that column) pairs: the metrics
            within each group (`evaluate.subgroups`), in metrics.json and the report.

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
    report_sections = list(sections)
    if subgroups:
        metrics["subgroups"] = [
            subgroup_metrics(y, p, names, patient_keys, values, spec, n_boot=n_boot, seed=seed)
            for spec, values in subgroups
        ]
        report_sections[:0] = [subgroup_section(block) for block in metrics["subgroups"]]
    if localisation is not None:
        metrics["localisation"] = _finite_or_none(localisation)
        report_sections.insert(0, _localisation_section(metrics["localisation"]))

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
        run_info=info,
        sections=report_sections,
    )
    return EvalResult(
        out_dir=out,
        metrics=metrics,
        metrics_path=metrics_path,
        predictions_path=predictions_path,
        report_path=report_path,
        plots=plots,
    )


def resolve_run(run_dir_or_ckpt: str | Path) -> tuple[Path, Path]:
    """The run folder and checkpoint for a run folder (best.pt, else last.pt) or a .pt file.

    Raises:
        EvaluationError: when the path does not exist or the folder holds no checkpoint.
    """
    p = Path(run_dir_or_ckpt)
    if p.is_file():
        return p.parent, p
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p, p / name
        raise EvaluationError(
            "no checkpoint in this folder",
            path=p,
            expected="a run folder from `lungcancer train` (best.pt or last.pt)",
            found=", ".join(sorted(c.name for c in p.iterdir())[:8]) or "an empty folder",
            hint="pass the run folder or the checkpoint file",
        )
    raise EvaluationError(
        "run folder or checkpoint not found",
        path=p,
        expected="a run folder from `lungcancer train` or a .pt checkpoint",
        hint="check the path",
    )


def _run_split_file(run_dir: Path, configured: str) -> Path:
    """The split the run was trained with; never a new one, which could leak test patients."""
    for candidate in (run_dir / "splits.json", Path(configured) if configured else None):
        if candidate is not None and candidate.is_file():
            return candidate
    raise EvaluationError(
        "the run's split file is missing, so its test patients are unknown",
        path=run_dir / "splits.json",
        expected="splits.json in the run folder (written by `lungcancer train`)",
        hint="copy the run's splits.json back; evaluating on a fresh split could score the "
        "model on patients it was trained on",
    )


def _train_minutes(run_dir: Path, checkpoint: Mapping[str, Any]) -> float | None:
    history_path = run_dir / "history.jsonl"
    rows: Sequence[Mapping[str, Any]]
    if history_path.is_file():
        with warnings.catch_warnings():
            # A torn last line is already reported by the training curves' reader.
            warnings.simplefilter("ignore")
            rows = read_history(history_path)
    else:
        rows = list(checkpoint.get("history") or [])
    seconds = [r.get("seconds") for r in rows]
    valid = [float(s) for s in seconds if isinstance(s, int | float) and math.isfinite(s)]
    return round(sum(valid) / 60.0, 2) if valid else None


def split_dataset(
    clf: LoadedClassifier, run_dir: Path, split: str, data_source: str | None = None
) -> tuple[DataConfig, PreparedData, ClassificationDataset, Path]:
    """One split of a run's own data as the checkpoint preprocesses it, un-augmented.

    Args:
        clf: the loaded classifier (its data config and classes).
        run_dir: the run folder (its splits.json names the split's samples).
        split: "test", "val" or "train".
        data_source: the dataset's location when it moved since training.

    Returns:
        (data config, prepared data, the split's ClassificationDataset, split file).

    Raises:
        EvaluationError: no split file, other classes in the data, or an empty split.
    """
    from lungcancer.data import ClassificationDataset, SampleCache, prepare_data

    split_file = _run_split_file(run_dir, clf.data_config.split_file)
    changes: dict[str, Any] = {"split_file": str(split_file)}
    if split != "train":
        # Training-only data adds nothing to val or test (it was audited against them when
        # the run trained), so evaluating does not need it to still be on disk.
        changes["train_extra"] = ()
    if data_source is not None:
        changes["source"] = data_source
    cfg = dataclasses.replace(clf.data_config, **changes)
    prepared = prepare_data(cfg, run_dir)
    if tuple(prepared.class_names) != tuple(clf.class_names):
        raise EvaluationError(
            "the data's classes differ from the checkpoint's",
            path=cfg.source,
            expected=", ".join(clf.class_names),
            found=", ".join(prepared.class_names),
            hint="evaluate on the dataset (and class map) the model was trained on",
        )
    members = prepared.splits.get(split, [])
    if not members:
        raise EvaluationError(
            f"the '{split}' split is empty",
            path=split_file,
            expected="a split with at least one sample",
            found=", ".join(f"{k}: {len(v)}" for k, v in prepared.splits.items()),
            hint="choose another --split",
        )
    cache = SampleCache(cfg.cache_dir) if cfg.cache_dir else None
    dataset = ClassificationDataset(prepared.index, members, cfg, train=False, cache=cache)
    return cfg, prepared, dataset, split_file


def evaluate_run(
    run_dir_or_ckpt: str | Path,
    *,
    split: str = "test",
    out_dir: str | Path | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    data_source: str | None = None,
    localisation_samples: int = 60,
    by: Sequence[str] = (),
) -> EvalResult:
    """Evaluate a trained run on one of its own splits and write RUN_DIR/eval.

    The checkpoint supplies the model, class list and preprocessing; the run's splits.json
    supplies the split, so the test patients are exactly those training held out.

    Args:
        run_dir_or_ckpt: a run folder (best.pt is used, else last.pt) or a checkpoint file.
        split: "test" (default), "val" or "train".
        out_dir: where to write; default RUN_DIR/eval.
        n_boot: bootstrap resamples (0: no intervals).
        seed: bootstrap seed.
        batch_size: images per forward pass.
        device: "cpu", "cuda" or "auto".
        data_source: the dataset's location when it moved since training.
        localisation_samples: when the split has lesion masks, how many masked samples (a
            seeded random subset; 0: none) get Grad-CAM pointing-game and energy scores.
        by: subgroup analyses, "COLUMN" or "COLUMN:EDGE,EDGE,..." over manifest columns
            (`evaluate.subgroups`), e.g. ("diameter_mm:10,20,30", "nodule_type").

    Returns:
        The paths written and the metrics.

    Raises:
        EvaluationError: no checkpoint, no split file, an empty split, or other classes in
            the data than in the checkpoint.
        CheckpointError: an unreadable or unsafe checkpoint.
        DatasetError: the dataset cannot be read or no longer fits the split file.
    """
    from lungcancer.data import sample_key
    from lungcancer.train.inference import load_classifier, predict_dataset

    specs = [GroupSpec.parse(text) for text in by]
    run_dir, ckpt_path = resolve_run(run_dir_or_ckpt)
    clf = load_classifier(ckpt_path, device=device)
    cfg, prepared, dataset, split_file = split_dataset(clf, run_dir, split, data_source)
    # Checked before the forward pass: a misspelt column should not cost a whole prediction.
    subgroups = [(spec, _column_values(dataset.samples, spec, cfg.source)) for spec in specs]
    probs = predict_dataset(clf, dataset, batch_size=batch_size)

    index = prepared.index
    keys = [sample_key(s, index.root) for s in dataset.samples]
    if index.has_patient_ids:
        grouping, groups = "patient", list(dataset.patient_ids)
    else:
        # Slices or patches of one file come from one scan: resample them together.
        grouping = "image file"
        groups = [
            "file:" + (k.removesuffix(f"#{s.selector}") if s.selector else k)
            for k, s in zip(keys, dataset.samples, strict=True)
        ]
    localisation = _localisation(clf, dataset.samples, localisation_samples, seed)
    model = clf.checkpoint["model"]
    run_info = {
        "model": model["name"],
        "n_params": int(sum(p.numel() for p in clf.model.parameters())),
        "train_minutes": _train_minutes(run_dir, clf.checkpoint),
        "checkpoint": ckpt_path.name,
        "checkpoint epoch": clf.checkpoint.get("epoch"),
        "run folder": run_dir.name,
        "data source": Path(cfg.source).name,
        "image size": cfg.image_size,
        "spatial dims": model["args"].get("spatial_dims"),
        "split seed": cfg.seed,
        "git hash": str(clf.checkpoint.get("git_hash", ""))[:12],
        "inference": f"{clf.policy.device} {clf.policy.name}",
    }
    posthoc = clf.checkpoint.get("posthoc_calibration")
    if posthoc:
        # Decisions and probabilities are the calibrated model's: say so beside the figures.
        biased = any(posthoc["class_bias"])
        run_info["post-hoc calibration"] = (
            f"temperature {posthoc['temperature']:.3f}"
            + (" + class biases" if biased else "")
            + f", fitted on the {posthoc['split']} split ({posthoc['n_samples']} images)"
        )
    return evaluate_predictions(
        np.asarray(dataset.labels, dtype=np.int64),
        probs,
        clf.class_names,
        patient_keys=groups,
        sample_keys=keys,
        out_dir=out_dir if out_dir is not None else run_dir / "eval",
        split=split,
        split_file=split_file,
        held_out_patients=split == "test",
        grouping=grouping,
        n_boot=n_boot,
        seed=seed,
        run_info=run_info,
        history_path=run_dir / "history.jsonl",
        title=f"{model['name']} on the {split} split",
        localisation=localisation,
        subgroups=subgroups,
    )


def _column_values(samples: Sequence[Any], spec: GroupSpec, source: str) -> list[str]:
    """Each sample's cell of `spec.column`; an error naming the columns that exist if none has
    it (a misspelling, or a layout without a manifest)."""
    if not any(spec.column in s.extra for s in samples):
        available = sorted({key for s in samples for key in s.extra})
        raise EvaluationError(
            f"no sample of this split has a {spec.column!r} field to group by",
            path=source,
            expected="a manifest column (--by COLUMN or COLUMN:EDGES)",
            found=f"columns: {', '.join(available) or 'none (this layout has no manifest)'}",
            hint="pick one of the columns above",
        )
    return [s.extra.get(spec.column, "") for s in samples]


def _localisation(clf: Any, samples: Sequence[Any], limit: int, seed: int) -> dict[str, Any] | None:
    """Grad-CAM localisation scores over a seeded subset of the masked samples, or None."""
    masked = [s for s in samples if s.mask_path]
    # A 3D whole-volume lung crop cannot be replayed on a mask (explain refuses it): skip.
    cfg = clf.data_config
    volume_crop = cfg.lung_crop and cfg.spatial_dims == 3
    if limit <= 0 or not masked or volume_crop:
        return None
    from lungcancer.explain import localisation_scores

    order = np.random.default_rng(seed).permutation(len(masked))[:limit]
    return localisation_scores(clf, [masked[i] for i in sorted(order)])


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
