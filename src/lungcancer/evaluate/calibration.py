"""Calibration: does a predicted probability of 0.8 come true 80% of the time?

Three numbers, all computed from sample weights so the bootstrap can reuse them unchanged
(a resample is the same samples with integer weights = how often each was drawn):

- Expected calibration error (ECE): the top-class probability (the "confidence") is put into
  15 equal-width bins over [0, 1] (bin k holds confidences in (k/15, (k+1)/15]; 0 goes to the
  first bin). ECE = sum over bins of (share of samples in the bin) x |accuracy - mean
  confidence| in that bin. 0 is perfect; it is in probability units (0.05 = 5 points off).
- Brier score: mean over samples of sum over classes of (p_c - 1[c is true])^2. Range 0..2;
  0 is perfect, a uniform guess over C classes scores 1 - 1/C.
- Log-loss: mean of -ln p(true class), with p clipped to at least 1e-15 so one confidently
  wrong prediction costs about 34.5 instead of infinity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ECE_BINS = 15
LOG_LOSS_EPS = 1e-15


@dataclass(frozen=True)
class CalibrationInputs:
    """Per-sample quantities the calibration metrics are weighted sums of.

    Attributes:
        bin_onehot: (N, ECE_BINS) one-hot of each sample's confidence bin.
        confidence: (N,) top-class probability.
        correct: (N,) 1.0 where the top class is the true class.
        brier: (N,) per-sample Brier term.
        log_loss: (N,) per-sample -ln p(true class).
    """

    bin_onehot: np.ndarray
    confidence: np.ndarray
    correct: np.ndarray
    brier: np.ndarray
    log_loss: np.ndarray


def prepare_calibration(y_true: np.ndarray, probs: np.ndarray) -> CalibrationInputs:
    """Precompute the per-sample terms of ECE, Brier score and log-loss.

    Args:
        y_true: (N,) integer class ids.
        probs: (N, C) probabilities, rows summing to 1.

    Returns:
        The per-sample terms; weight and sum them with `calibration_scores`.
    """
    n, n_classes = probs.shape
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    bins = np.clip(np.ceil(confidence * ECE_BINS).astype(np.int64) - 1, 0, ECE_BINS - 1)
    bin_onehot = np.zeros((n, ECE_BINS), dtype=np.float64)
    bin_onehot[np.arange(n), bins] = 1.0
    onehot = np.zeros((n, n_classes), dtype=np.float64)
    onehot[np.arange(n), y_true] = 1.0
    brier = ((probs - onehot) ** 2).sum(axis=1)
    p_true = np.clip(probs[np.arange(n), y_true], LOG_LOSS_EPS, 1.0)
    return CalibrationInputs(
        bin_onehot=bin_onehot,
        confidence=confidence.astype(np.float64),
        correct=correct,
        brier=brier,
        log_loss=-np.log(p_true),
    )


def calibration_scores(inputs: CalibrationInputs, weights: np.ndarray) -> dict[str, np.ndarray]:
    """ECE, Brier score and log-loss for each row of sample weights.

    Args:
        inputs: from `prepare_calibration`.
        weights: (B, N) non-negative sample weights (ones for the plain estimate).

    Returns:
        "ece", "brier" and "log_loss", each a (B,) array (NaN where a row's weights are all 0).
    """
    total = weights.sum(axis=1)
    safe_total = np.where(total > 0, total, np.nan)
    conf_sum = weights @ (inputs.bin_onehot * inputs.confidence[:, None])
    acc_sum = weights @ (inputs.bin_onehot * inputs.correct[:, None])
    return {
        "ece": np.abs(acc_sum - conf_sum).sum(axis=1) / safe_total,
        "brier": (weights @ inputs.brier) / safe_total,
        "log_loss": (weights @ inputs.log_loss) / safe_total,
    }


def reliability_bins(inputs: CalibrationInputs) -> list[dict[str, Any]]:
    """The reliability table: one row per confidence bin (unweighted).

    Returns:
        Rows with lower, upper, count, and mean confidence and accuracy (None for empty bins).
    """
    counts = inputs.bin_onehot.sum(axis=0)
    conf_sum = (inputs.bin_onehot * inputs.confidence[:, None]).sum(axis=0)
    acc_sum = (inputs.bin_onehot * inputs.correct[:, None]).sum(axis=0)
    rows = []
    for k in range(ECE_BINS):
        n = int(counts[k])
        rows.append(
            {
                "lower": k / ECE_BINS,
                "upper": (k + 1) / ECE_BINS,
                "count": n,
                "confidence": float(conf_sum[k] / n) if n else None,
                "accuracy": float(acc_sum[k] / n) if n else None,
            }
        )
    return rows
