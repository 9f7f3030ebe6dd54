"""Post-hoc calibration arithmetic: the temperature, the class biases, and the folded head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax
from sklearn.metrics import f1_score

from lungcancer.evaluate.metrics import EvaluationError
from lungcancer.evaluate.posthoc import (
    ENTRY,
    MIN_F1_GAIN,
    calibrate_checkpoint,
    calibrated_log_probs,
    final_linear_name,
    fit_class_bias,
    fit_posthoc,
    fit_temperature,
    macro_f1,
)
from lungcancer.models import create_model


def sampled(n: int, k: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits, and labels drawn from softmax(logits / temperature): a model whose logits are
    `temperature` times too sharp."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(n, k))
    p = softmax(logits / temperature, axis=1)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_the_temperature_that_generated_the_labels_is_found(true_t: float) -> None:
    logits, labels = sampled(6000, 4, true_t)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.08)


def test_a_temperature_moves_no_decision_and_lowers_the_log_loss() -> None:
    logits, labels = sampled(3000, 5, 2.0, seed=1)
    probs = softmax(logits, axis=1)
    fitted = fit_posthoc(probs, labels, split="val")
    assert fitted.class_bias == (0.0,) * 5
    assert fitted.temperature > 1.5
    assert fitted.after["accuracy"] == fitted.before["accuracy"]
    assert fitted.after["macro_f1"] == fitted.before["macro_f1"]
    assert fitted.after["nll"] < fitted.before["nll"] - 0.05
    assert fitted.after["ece"] < fitted.before["ece"]


def test_macro_f1_is_sklearn_s_over_the_classes_present() -> None:
    rng = np.random.default_rng(2)
    y = rng.choice([0, 2, 3], size=200)  # class 1 never true
    pred = rng.integers(0, 4, size=200)
    want = f1_score(y, pred, labels=[0, 2, 3], average="macro", zero_division=0)
    assert macro_f1(y, pred, 4) == pytest.approx(want)


def test_class_biases_undo_a_prior_shift_and_leave_a_fair_model_alone() -> None:
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), 300)
    fair = rng.normal(size=(900, 3))
    fair[np.arange(900), y] += 1.5
    # A bias is only ever taken for a gain of MIN_F1_GAIN on the fitting split.
    fair_bias = fit_class_bias(fair, y)
    gain = macro_f1(y, (fair + fair_bias).argmax(1), 3) - macro_f1(y, fair.argmax(1), 3)
    assert (not fair_bias.any() and gain == 0.0) or gain >= MIN_F1_GAIN
    shifted = fair.copy()
    shifted[:, 0] += 1.5  # a model that says "class 0" too often
    bias = fit_class_bias(shifted, y)
    assert bias[0] < bias[1] and bias[0] < bias[2]
    assert abs(bias.sum()) < 1e-5  # centred (rounded to 6 decimals)
    before = macro_f1(y, shifted.argmax(1), 3)
    after = macro_f1(y, (shifted + bias).argmax(1), 3)
    assert after > before + 0.05


def test_too_few_rows_are_refused() -> None:
    with pytest.raises(EvaluationError, match="one probability row per labelled image"):
        fit_posthoc(np.full((1, 3), 1 / 3), [0], split="val")
    with pytest.raises(EvaluationError):
        fit_posthoc(np.full((4, 3), 1 / 3), [0, 1], split="val")


@pytest.mark.parametrize("name", ["cnn", "densenet121", "resnet50"])
def test_the_calibration_folds_exactly_into_the_last_linear_layer(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_chans=1, num_classes=3).eval()
    with torch.no_grad():  # a head that is not all zeros, so the test sees the weights
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    layer = final_linear_name(model, 3, model.head_prefixes)
    x = torch.randn(4, 1, 64, 64)
    with torch.no_grad():
        raw = model(x).double().numpy()
    fitted = fit_posthoc(softmax(raw, axis=1), [0, 1, 2, 0], split="val")
    fitted = type(fitted)(**{**fitted.__dict__, "temperature": 1.7, "class_bias": (0.3, 0, -0.3)})
    ckpt = calibrate_checkpoint({"state_dict": model.state_dict()}, fitted, layer)
    model.load_state_dict(ckpt["state_dict"])
    with torch.no_grad():
        folded = torch.log_softmax(model(x).double(), dim=1).numpy()
    # float32 weights: agreement to float32 rounding (a bias of 0.3 would be far outside it).
    want = calibrated_log_probs(raw, 1.7, [0.3, 0, -0.3])
    np.testing.assert_allclose(folded, want, rtol=1e-5, atol=1e-4)
    entry = ckpt[ENTRY]
    assert entry["temperature"] == 1.7 and entry["layer"] == layer
    assert entry["original_weight"].shape == ckpt["state_dict"][f"{layer}.weight"].shape
