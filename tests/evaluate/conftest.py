"""Generated predictions for the evaluation tests (no model, no images)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

Predictions = tuple[np.ndarray, np.ndarray, list[str]]


def _make(
    n_patients: int = 30,
    per_patient: int = 4,
    n_classes: int = 3,
    signal: float = 1.5,
    seed: int = 0,
) -> Predictions:
    """Labels, softmax probabilities and patient keys; one class per patient, as in real data.

    `signal` is how far the true class's logit is pushed up: 0 is a random classifier.
    """
    rng = np.random.default_rng(seed)
    patient_class = np.arange(n_patients) % n_classes
    y = np.repeat(patient_class, per_patient)
    logits = rng.normal(size=(y.shape[0], n_classes))
    logits[np.arange(y.shape[0]), y] += signal
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    keys = [f"patient-{i:03d}" for i in np.repeat(np.arange(n_patients), per_patient)]
    return y, probs, keys


@pytest.fixture
def make_predictions() -> Callable[..., Predictions]:
    return _make
