"""Classification metrics from true labels and predicted probabilities.

Every metric is computed from per-sample weights (the plain estimate is all ones), so the
patient bootstrap in `bootstrap.py` reuses exactly this code: a resample is the same samples
weighted by how often their patient was drawn. Numbers therefore never disagree between the
point estimate and its confidence interval.

Definitions (C classes, "present" = at least one sample of the class in `y_true`):

- accuracy: share of samples whose top-probability class is the true class.
- precision_c = TP/(TP+FP); 0 when a present class is never predicted (the conservative
  convention, with a warning).  recall_c = TP/(TP+FN).  F1_c = 2TP/(2TP+FP+FN).
- ROC-AUC_c: one class against the rest, from ranks (ties count half) - the probability that a
  random sample of the class scores higher than a random sample of another class.
- PR-AUC_c: average precision, sum over thresholds of (recall step) x precision, as in
  scikit-learn's `average_precision_score`.
- A class absent from `y_true` has every per-class metric undefined (None in JSON); ROC-AUC is
  also undefined for a class that makes up every sample. Macro averages are the unweighted mean
  over the classes where the metric is defined (listed in `macro_over`); weighted averages
  weight by support. Balanced accuracy is macro recall.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lungcancer.errors import LungCancerError
from lungcancer.evaluate.calibration import (
    ECE_BINS,
    CalibrationInputs,
    calibration_scores,
    prepare_calibration,
    reliability_bins,
)

PER_CLASS_METRICS = ("precision", "recall", "f1", "roc_auc", "pr_auc")

# Scalar metrics shown first and given bootstrap confidence intervals; lower is better for the
# last three.
HEADLINE_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_precision",
    "macro_f1",
    "weighted_f1",
    "macro_roc_auc",
    "macro_pr_auc",
    "ece",
    "brier",
    "log_loss",
)
LOWER_IS_BETTER = frozenset({"ece", "brier", "log_loss"})

# Float32 softmax outputs sum to 1 only up to rounding.
_SUM_TOLERANCE = 1e-3


class EvaluationError(LungCancerError):
    """Predictions, labels or saved evaluations that cannot be evaluated as given."""


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for a class (e.g. the class has no samples in the split)."""


def validate_predictions(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and values; return int64 labels and float64 probabilities.

    Raises:
        EvaluationError: on a shape mismatch, a label outside the class list, or rows that are
            not probabilities.
    """
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    n_classes = len(class_names)
    if n_classes < 2:
        raise EvaluationError(
            "evaluation needs at least two classes",
            expected="two or more class names",
            found=f"{n_classes}: {list(class_names)}",
        )
    if p.ndim != 2 or p.shape[1] != n_classes:
        raise EvaluationError(
            "probabilities do not match the class list",
            expected=f"an (N, {n_classes}) array",
            found=f"shape {p.shape}",
            hint="check that the checkpoint and the data use the same classes",
        )
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise EvaluationError(
            "labels and probabilities have different lengths",
            expected=f"{p.shape[0]} labels",
            found=f"shape {y.shape}",
        )
    if y.shape[0] == 0:
        raise EvaluationError(
            "there is nothing to evaluate", expected="at least one sample", found="0 samples"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise EvaluationError(
            "labels must be class ids",
            expected=f"integers in 0..{n_classes - 1}",
            found=f"dtype {y.dtype}, range {y.min()}..{y.max()}",
        )
    if not np.isfinite(p).all() or (p < 0).any():
        raise EvaluationError(
            "probabilities contain NaN, infinite or negative values",
            expected="softmax outputs in [0, 1]",
            found=f"{int((~np.isfinite(p)).sum())} non-finite, {int((p < 0).sum())} negative",
            hint="the model diverged or the outputs are logits; apply softmax first",
        )
    sums = p.sum(axis=1)
    worst = float(np.abs(sums - 1.0).max())
    if worst > _SUM_TOLERANCE:
        raise EvaluationError(
            "probability rows do not sum to 1",
            expected=f"row sums within {_SUM_TOLERANCE} of 1",
            found=f"a row sum off by {worst:.4g}",
            hint="pass softmax probabilities, not logits or per-class sigmoids",
        )
    return y.astype(np.int64), p


@dataclass(frozen=True)
class _RankGroups:
    """One class's samples sorted by score, with the starts of runs of equal scores."""

    order: np.ndarray
    starts: np.ndarray
    positive: np.ndarray


@dataclass(frozen=True)
class PreparedPredictions:
    """Everything the weighted metrics need, computed once per prediction set."""

    y_true: np.ndarray
    probs: np.ndarray
    n_classes: int
    cell: np.ndarray
    ranks: tuple[_RankGroups, ...]
    calibration: CalibrationInputs


def prepare(y_true: np.ndarray, probs: np.ndarray) -> PreparedPredictions:
    """Sort scores and precompute per-sample terms (labels/probs already validated)."""
    n_classes = probs.shape[1]
    pred = probs.argmax(axis=1)
    ranks = []
    for c in range(n_classes):
        order = np.argsort(probs[:, c], kind="stable")
        sorted_scores = probs[order, c]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_scores)) + 1))
        ranks.append(_RankGroups(order=order, starts=starts, positive=y_true[order] == c))
    return PreparedPredictions(
        y_true=y_true,
        probs=probs,
        n_classes=n_classes,
        cell=y_true * n_classes + pred,
        ranks=tuple(ranks),
        calibration=prepare_calibration(y_true, probs),
    )


def _ranking_scores(groups: _RankGroups, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted one-vs-rest ROC-AUC and average precision of one class, per weight row."""
    w = weights[:, groups.order]
    if groups.starts.shape[0] == w.shape[1]:
        # No tied scores (the usual case for softmax outputs): every sample is its own group.
        total = w
        pos = w * groups.positive
    else:
        total = np.add.reduceat(w, groups.starts, axis=1)
        pos = np.add.reduceat(w * groups.positive, groups.starts, axis=1)
    neg = total - pos
    n_pos = pos.sum(axis=1)
    n_neg = neg.sum(axis=1)
    # Ascending scores: a positive beats every negative in lower groups and ties half of its own.
    neg_below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan)
        # Average precision walks thresholds from the highest score down.
        pos_down = pos[:, ::-1]
        tp = np.cumsum(pos_down, axis=1)
        predicted = np.cumsum(total[:, ::-1], axis=1)
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        ap = np.where(n_pos > 0, (pos_down * precision).sum(axis=1) / n_pos, np.nan)
    return auc, ap


def weighted_scores(prep: PreparedPredictions, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each row of sample weights (NaN = undefined).

    Args:
        prep: from `prepare`.
        weights: (B, N) non-negative weights; integer counts for bootstrap resamples.

    Returns:
        "confusion" (B, C, C) with true classes as rows; per-class metrics (B, C) under
        PER_CLASS_METRICS names plus "support"; "accuracy", "ece", "brier", "log_loss" (B,).
    """
    c = prep.n_classes
    b = weights.shape[0]
    flat = np.zeros((prep.cell.shape[0], c * c), dtype=np.float64)
    flat[np.arange(prep.cell.shape[0]), prep.cell] = 1.0
    confusion = (weights @ flat).reshape(b, c, c)
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    support = confusion.sum(axis=2)
    predicted = confusion.sum(axis=1)
    present = support > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(present, tp / support, np.nan)
        precision = np.where(present, np.where(predicted > 0, tp / predicted, 0.0), np.nan)
        f1 = np.where(present, 2 * tp / (support + predicted), np.nan)
        total = support.sum(axis=1)
        accuracy = np.where(total > 0, tp.sum(axis=1) / total, np.nan)
    auc = np.empty((b, c))
    ap = np.empty((b, c))
    for k, groups in enumerate(prep.ranks):
        auc[:, k], ap[:, k] = _ranking_scores(groups, weights)
    scores = {
        "confusion": confusion,
        "support": support,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": auc,
        "pr_auc": ap,
        "accuracy": accuracy,
    }
    scores.update(calibration_scores(prep.calibration, weights))
    return scores


def macro_average(per_class: np.ndarray, over: Sequence[int]) -> np.ndarray:
    """Unweighted mean over the classes `over`; NaN in a row where any of them is undefined.

    A bootstrap resample that loses one of the classes would otherwise average over fewer
    classes than the point estimate and measure a different quantity.
    """
    if not over:
        return np.full(per_class.shape[0], np.nan)
    return per_class[:, list(over)].mean(axis=1)


def weighted_average(per_class: np.ndarray, support: np.ndarray, over: Sequence[int]) -> np.ndarray:
    """Support-weighted mean over the classes `over` (NaN where one of them is undefined)."""
    if not over:
        return np.full(per_class.shape[0], np.nan)
    idx = list(over)
    w = support[:, idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (per_class[:, idx] * w).sum(axis=1) / w.sum(axis=1)


def headline_scores(
    scores: dict[str, np.ndarray], macro_over: dict[str, list[int]]
) -> dict[str, np.ndarray]:
    """The HEADLINE_METRICS, each a (B,) array, given which classes the averages cover."""
    support = scores["support"]
    return {
        "accuracy": scores["accuracy"],
        "balanced_accuracy": macro_average(scores["recall"], macro_over["recall"]),
        "macro_precision": macro_average(scores["precision"], macro_over["precision"]),
        "macro_f1": macro_average(scores["f1"], macro_over["f1"]),
        "weighted_f1": weighted_average(scores["f1"], support, macro_over["f1"]),
        "macro_roc_auc": macro_average(scores["roc_auc"], macro_over["roc_auc"]),
        "macro_pr_auc": macro_average(scores["pr_auc"], macro_over["pr_auc"]),
        "ece": scores["ece"],
        "brier": scores["brier"],
        "log_loss": scores["log_loss"],
    }


def defined_classes(scores: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """For each per-class metric, the class ids where it is defined in the first weight row."""
    return {
        name: [int(k) for k in np.flatnonzero(np.isfinite(scores[name][0]))]
        for name in PER_CLASS_METRICS
    }


def json_number(value: float | np.floating[Any] | None) -> float | None:
    """A float for JSON, or None for undefined (NaN/inf never reach a JSON file)."""
    if value is None:
        return None
    as_float = float(value)
    return as_float if math.isfinite(as_float) else None


def _undefined_warnings(
    scores: dict[str, np.ndarray], class_names: Sequence[str]
) -> tuple[list[str], list[str]]:
    support = scores["support"][0]
    predicted = scores["confusion"][0].sum(axis=0)
    absent = [class_names[k] for k in range(len(class_names)) if support[k] == 0]
    messages = []
    for name in absent:
        messages.append(
            f"class '{name}' has no samples in this split: its precision, recall, F1, ROC-AUC "
            "and PR-AUC are undefined (null) and the macro averages use the other classes"
        )
    total = support.sum()
    for k, name in enumerate(class_names):
        if support[k] == total:
            messages.append(
                f"every sample is class '{name}': ROC-AUC and balanced accuracy cannot tell "
                "classes apart here"
            )
        if support[k] > 0 and predicted[k] == 0:
            messages.append(f"class '{name}' was never predicted: its precision counts as 0")
    return absent, messages


def compute_metrics(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """All classification and calibration metrics of one prediction set, JSON-ready.

    Classes absent from `y_true` do not crash anything: their per-class metrics are None, an
    `UndefinedMetricWarning` names them, and `macro_over` lists the classes each macro average
    covers.

    Args:
        y_true: (N,) integer class ids.
        probs: (N, C) predicted probabilities, rows summing to 1.
        class_names: the C class names, in class-id order.

    Returns:
        A dict with n_samples, class_names, support, headline (the HEADLINE_METRICS), per_class,
        macro, weighted, macro_over, undefined_classes, confusion_matrix (counts and
        row-normalised), calibration (ece, brier, log_loss, bins) and warnings. Undefined values
        are None, never NaN.
    """
    y, p = validate_predictions(y_true, probs, class_names)
    names = [str(n) for n in class_names]
    prep = prepare(y, p)
    scores = weighted_scores(prep, np.ones((1, y.shape[0])))
    over = defined_classes(scores)
    headline = headline_scores(scores, over)
    absent, messages = _undefined_warnings(scores, names)
    for message in messages:
        warnings.warn(message, UndefinedMetricWarning, stacklevel=2)

    support = scores["support"][0]
    counts = scores["confusion"][0]
    per_class = {
        name: {
            "support": int(support[k]),
            **{m: json_number(scores[m][0, k]) for m in PER_CLASS_METRICS},
        }
        for k, name in enumerate(names)
    }
    normalized = [
        [float(v) for v in counts[k] / support[k]] if support[k] > 0 else None
        for k in range(len(names))
    ]
    weighted = {
        m: json_number(weighted_average(scores[m], scores["support"], over[m])[0])
        for m in ("precision", "recall", "f1")
    }
    macro = {m: json_number(macro_average(scores[m], over[m])[0]) for m in PER_CLASS_METRICS}
    return {
        "n_samples": int(y.shape[0]),
        "class_names": names,
        "support": {name: int(support[k]) for k, name in enumerate(names)},
        "headline": {k: json_number(v[0]) for k, v in headline.items()},
        "per_class": per_class,
        "macro": macro,
        "weighted": weighted,
        "macro_over": {m: [names[k] for k in ks] for m, ks in over.items()},
        "undefined_classes": absent,
        "confusion_matrix": {
            "rows": "true class",
            "columns": "predicted class",
            "counts": [[int(v) for v in row] for row in counts],
            "normalized": normalized,
        },
        "calibration": {
            "ece": json_number(scores["ece"][0]),
            "brier": json_number(scores["brier"][0]),
            "log_loss": json_number(scores["log_loss"][0]),
            "n_bins": ECE_BINS,
            "confidence": "top-class probability",
            "bins": reliability_bins(prep.calibration),
        },
        "warnings": messages,
    }
