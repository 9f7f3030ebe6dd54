"""Bootstrap confidence intervals, resampled by patient.

Slices of one patient are not independent: a model that is right about one slice of a patient
is usually right about the others. Resampling slices would pretend there are more independent
observations than there are and give intervals that are too narrow. So this is a cluster
bootstrap: each resample draws as many patients as the split has, with replacement, and takes
all samples of every drawn patient (a patient drawn twice counts twice). The interval is the
percentile interval of the metric over the resamples.

A resample in which a metric is undefined - e.g. it happens to contain no patient of a class,
so that class's recall and the macro averages over it cannot be computed - is skipped for that
metric; the number of resamples actually used is reported next to every interval.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from lungcancer.evaluate.metrics import (
    HEADLINE_METRICS,
    PER_CLASS_METRICS,
    EvaluationError,
    defined_classes,
    headline_scores,
    json_number,
    prepare,
    validate_predictions,
    weighted_scores,
)

DEFAULT_N_BOOT = 1000
# Bound on resamples x samples held in memory at once (float64: 8 bytes each).
_CHUNK_ELEMENTS = 2_000_000


def cluster_ids(patient_keys: Sequence[str]) -> tuple[np.ndarray, int, str]:
    """Map patient keys to cluster ids.

    Samples without a patient key ("") each form their own cluster: nothing is known about
    which of them belong together, and guessing would be a silent assumption.

    Returns:
        (cluster id per sample, number of clusters, resampling unit described in words).
    """
    keys = [str(k) for k in patient_keys]
    lookup: dict[str, int] = {}
    ids = np.empty(len(keys), dtype=np.int64)
    missing = 0
    for i, key in enumerate(keys):
        if key == "":
            ids[i] = len(lookup) + missing
            missing += 1
            continue
        if key not in lookup:
            lookup[key] = len(lookup) + missing
        ids[i] = lookup[key]
    if missing == len(keys):
        unit = "sample (the data has no patient ids, so intervals may be too narrow)"
    elif missing:
        unit = f"patient ({missing} samples without a patient id resampled one by one)"
    else:
        unit = "patient"
    return ids, len(lookup) + missing, unit


def resample_weights(
    clusters: np.ndarray, n_clusters: int, n_boot: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Yield (B, N) sample weights of cluster-bootstrap resamples, in memory-bounded chunks.

    A sample's weight is the number of times its cluster was drawn, so each resample has the
    same number of clusters as the data.
    """
    n_samples = clusters.shape[0]
    chunk = max(1, min(n_boot, _CHUNK_ELEMENTS // max(n_samples, n_clusters)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        draws = rng.integers(0, n_clusters, size=(b, n_clusters))
        offsets = np.arange(b)[:, None] * n_clusters
        times_drawn = np.bincount((draws + offsets).ravel(), minlength=b * n_clusters)
        yield times_drawn.reshape(b, n_clusters)[:, clusters].astype(np.float64)
        done += b


def _interval(values: np.ndarray, confidence: float) -> dict[str, Any]:
    used = values[np.isfinite(values)]
    if used.size == 0:
        return {"low": None, "high": None, "n_used": 0}
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(used, [tail, 100.0 - tail])
    return {"low": json_number(low), "high": json_number(high), "n_used": int(used.size)}


def bootstrap_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    patient_keys: Sequence[str],
    class_names: Sequence[str],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    confidence: float = 0.95,
    unit: str | None = None,
) -> dict[str, Any]:
    """Percentile confidence intervals of every headline and per-class metric.

    Args:
        y_true: (N,) integer class ids.
        probs: (N, C) predicted probabilities.
        patient_keys: (N,) patient key of each sample ("" when unknown).
        class_names: the C class names.
        n_boot: number of resamples; 0 gives no intervals.
        seed: seed of the resampling, so a report can be reproduced exactly.
        confidence: coverage of the intervals.
        unit: what a key stands for, in words, when it is not a patient (e.g. "scan file").

    Returns:
        A JSON-ready dict: method, unit, n_boot, seed, confidence, n_patients, headline
        {metric: {low, high, n_used}} and per_class {class: {metric: {low, high, n_used}}}.
        An interval with n_used 0 has low and high None.

    Raises:
        EvaluationError: when patient_keys has the wrong length or the settings are invalid.
    """
    y, p = validate_predictions(y_true, probs, class_names)
    if len(patient_keys) != y.shape[0]:
        raise EvaluationError(
            "there must be one patient key per sample",
            expected=f"{y.shape[0]} patient keys",
            found=f"{len(patient_keys)}",
        )
    if n_boot < 0:
        raise EvaluationError(
            "the number of bootstrap resamples cannot be negative",
            expected="0 (no intervals) or more; 1000 is the usual choice",
            found=str(n_boot),
        )
    if not 0.0 < confidence < 1.0:
        raise EvaluationError(
            "the confidence level must lie between 0 and 1",
            expected="e.g. 0.95",
            found=str(confidence),
        )
    clusters, n_clusters, described = cluster_ids(patient_keys)
    prep = prepare(y, p)
    # The classes each macro average covers are fixed by the full data, not by each resample.
    over = defined_classes(weighted_scores(prep, np.ones((1, y.shape[0]))))

    headline_parts: dict[str, list[np.ndarray]] = {m: [] for m in HEADLINE_METRICS}
    per_class_parts: dict[str, list[np.ndarray]] = {m: [] for m in PER_CLASS_METRICS}
    rng = np.random.default_rng(seed)
    for weights in resample_weights(clusters, n_clusters, n_boot, rng):
        scores = weighted_scores(prep, weights)
        for name, values in headline_scores(scores, over).items():
            headline_parts[name].append(values)
        for name in PER_CLASS_METRICS:
            per_class_parts[name].append(scores[name])

    n_classes = len(class_names)
    headline = {
        name: _interval(np.concatenate(parts) if parts else np.empty(0), confidence)
        for name, parts in headline_parts.items()
    }
    stacked = {
        name: np.concatenate(parts) if parts else np.empty((0, n_classes))
        for name, parts in per_class_parts.items()
    }
    per_class = {
        str(cls): {name: _interval(stacked[name][:, k], confidence) for name in PER_CLASS_METRICS}
        for k, cls in enumerate(class_names)
    }
    return {
        "method": "cluster bootstrap by patient, percentile interval",
        "unit": described if unit is None else unit,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "confidence": float(confidence),
        "n_patients": int(n_clusters),
        "headline": headline,
        "per_class": per_class,
    }


def paired_difference(
    y_true: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    patient_keys: Sequence[str],
    class_names: Sequence[str],
    *,
    metrics: Sequence[str] = HEADLINE_METRICS,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """Confidence interval of metric(B) - metric(A) for two models scored on the same samples.

    Both models are scored on the same resampled patients in every resample, so the shared
    luck of the draw cancels: this is the interval to read when asking whether B beats A, and
    it is much narrower than what comparing two separate intervals suggests.

    Args:
        y_true: (N,) class ids.
        probs_a: (N, C) probabilities of the reference model.
        probs_b: (N, C) probabilities of the other model, same samples in the same order.
        patient_keys: (N,) patient key per sample.
        class_names: the C class names.
        metrics: which HEADLINE_METRICS to compare.
        n_boot: resamples.
        seed: seed of the resampling.
        confidence: coverage of the intervals.

    Returns:
        {metric: {difference, low, high, n_used}}; the difference is B minus A (for ECE, Brier
        and log-loss a negative difference means B is better).
    """
    y, p_a = validate_predictions(y_true, probs_a, class_names)
    _, p_b = validate_predictions(y_true, probs_b, class_names)
    if len(patient_keys) != y.shape[0]:
        raise EvaluationError(
            "there must be one patient key per sample",
            expected=f"{y.shape[0]} patient keys",
            found=f"{len(patient_keys)}",
        )
    clusters, n_clusters, _ = cluster_ids(patient_keys)
    prep_a, prep_b = prepare(y, p_a), prepare(y, p_b)
    ones = np.ones((1, y.shape[0]))
    full_a, full_b = weighted_scores(prep_a, ones), weighted_scores(prep_b, ones)
    over = defined_classes(full_a)
    point = {
        name: headline_scores(full_b, over)[name][0] - headline_scores(full_a, over)[name][0]
        for name in metrics
    }
    parts: dict[str, list[np.ndarray]] = {name: [] for name in metrics}
    rng = np.random.default_rng(seed)
    for weights in resample_weights(clusters, n_clusters, n_boot, rng):
        head_a = headline_scores(weighted_scores(prep_a, weights), over)
        head_b = headline_scores(weighted_scores(prep_b, weights), over)
        for name in metrics:
            parts[name].append(head_b[name] - head_a[name])
    return {
        name: {
            "difference": json_number(point[name]),
            **_interval(np.concatenate(parts[name]) if parts[name] else np.empty(0), confidence),
        }
        for name in metrics
    }
