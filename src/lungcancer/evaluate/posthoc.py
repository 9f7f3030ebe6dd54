"""Post-hoc calibration: a temperature and per-class decision biases fitted on the validation
split, folded into the classifier's last linear layer.

A network trained with label smoothing and class-balanced sampling is neither calibrated (its
confidence is not its accuracy) nor deciding for the best macro F1 (argmax of probabilities
learnt on balanced batches). Two standard fixes, fitted on held-out data the model was not
trained on (the validation split), never on the test split:

- temperature scaling (Guo et al., 2017): logits / T, with T minimising the negative
  log-likelihood. One number; the ranking of the classes in every image, so accuracy, F1 and
  the AUCs, stay exactly the same, and the probabilities become honest.
- class biases: a constant added to each class's calibrated log-probability before the argmax,
  chosen by coordinate ascent over a grid to maximise macro F1. This moves decisions (e.g. less
  "normal" for a small benign nodule), so it can overfit a small validation split: it is
  opt-in (`class_bias=True`), only kept where it gains at least `MIN_F1_GAIN`, and the test
  split must be scored after it, once.

Both are exact in the network's last layer: softmax((W x + b) / T + beta) is the softmax of a
linear layer with weights W / T and bias b / T + beta. So the calibrated checkpoint is an
ordinary one, and predict, evaluate, explain, serve and export all use it with no code of
their own; Grad-CAM maps keep their shape (gradients scale by 1 / T). The checkpoint records
what was fitted, on which split and how many images, under "posthoc_calibration", with the
original head's weights. The source checkpoint is never changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from torch import nn

from lungcancer.evaluate.calibration import calibration_scores, prepare_calibration
from lungcancer.evaluate.metrics import EvaluationError

BIAS_GRID = np.round(np.arange(-2.0, 2.0001, 0.1), 6)
BIAS_PASSES = 3
# A bias is kept only where it lifts the fitting split's macro F1 by this much: smaller gains
# on a few hundred images are noise the test split would not see.
MIN_F1_GAIN = 0.002
ENTRY = "posthoc_calibration"


@dataclass(frozen=True)
class PosthocCalibration:
    """What was fitted, and the fitting split's figures before and after.

    Attributes:
        temperature: logits are divided by it (> 1: the model was overconfident).
        class_bias: added to each class's log-probability after the temperature (0: none).
        split: the split it was fitted on.
        n_samples: images in that split.
        before: nll, ece, accuracy and macro_f1 of the uncalibrated model on that split.
        after: the same, calibrated (optimistic: fitted on these images).
        source: the checkpoint file it was fitted to, and its sha256.
    """

    temperature: float
    class_bias: tuple[float, ...]
    split: str
    n_samples: int
    before: dict[str, float]
    after: dict[str, float]
    source: dict[str, str]

    def describe(self, class_names: Sequence[str]) -> str:
        """One line for logs and reports."""
        biases = ", ".join(
            f"{name} {b:+.1f}" for name, b in zip(class_names, self.class_bias, strict=True) if b
        )
        return (
            f"temperature {self.temperature:.3f}"
            + (f", class biases {biases}" if biases else ", no class bias")
            + f", fitted on the {self.split} split ({self.n_samples} images)"
        )


def calibrated_log_probs(
    log_probs: np.ndarray, temperature: float, class_bias: Sequence[float] | np.ndarray
) -> np.ndarray:
    """log softmax(log_probs / T + bias). `log_probs` may be logits or log-probabilities:
    a per-image constant cancels in the softmax."""
    return np.asarray(log_softmax(log_probs / temperature + np.asarray(class_bias), axis=1))


def fit_temperature(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] that minimises the mean negative log-likelihood."""

    def nll(log_t: float) -> float:
        scaled = calibrated_log_probs(log_probs, math.exp(log_t), np.zeros(log_probs.shape[1]))
        return float(-scaled[np.arange(len(labels)), labels].mean())

    found = minimize_scalar(
        nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded", options={"xatol": 1e-4}
    )
    return float(math.exp(found.x))


def macro_f1(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Macro F1 over the classes present in `labels` (a class never true is not scored)."""
    confusion = np.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )
    true_positive = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    called = confusion.sum(axis=0)
    present = support > 0
    f1 = 2 * true_positive / np.maximum(support + called, 1)
    return float(f1[present].mean())


def fit_class_bias(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class biases on the grid `BIAS_GRID` that raise macro F1, by coordinate ascent.

    Each pass tries every grid value for one class at a time, the others fixed, and moves only
    for a gain of at least `MIN_F1_GAIN`. The result is centred (the softmax ignores a common
    shift) and rounded to the grid.
    """
    k = log_probs.shape[1]
    bias = np.zeros(k)
    best = macro_f1(labels, (log_probs + bias).argmax(axis=1), k)
    for _ in range(BIAS_PASSES):
        moved = False
        for c in range(k):
            trial = bias.copy()
            scores = []
            for value in BIAS_GRID:
                trial[c] = value
                scores.append(macro_f1(labels, (log_probs + trial).argmax(axis=1), k))
            i = int(np.argmax(scores))  # the first (smallest |shift| ties go left) best value
            if scores[i] >= best + MIN_F1_GAIN:
                bias[c], best, moved = BIAS_GRID[i], scores[i], True
        if not moved:
            break
    return np.round(bias - bias.mean(), 6)


def split_figures(log_probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """nll, ece (15 equal-width bins, as the evaluation reports it), accuracy, macro F1."""
    probs = np.exp(log_probs)
    predicted = log_probs.argmax(axis=1)
    inputs = prepare_calibration(labels, probs)
    ece = float(calibration_scores(inputs, np.ones((1, len(labels))))["ece"][0])
    return {
        "nll": float(-log_probs[np.arange(len(labels)), labels].mean()),
        "ece": ece,
        "accuracy": float((predicted == labels).mean()),
        "macro_f1": macro_f1(labels, predicted, log_probs.shape[1]),
    }


def fit_posthoc(
    probs: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    split: str,
    class_bias: bool = False,
    source: dict[str, str] | None = None,
) -> PosthocCalibration:
    """Fit the temperature (then, optionally, the class biases) to one split's predictions.

    Args:
        probs: (N, K) probabilities of the uncalibrated model.
        labels: true class ids.
        split: the split's name, recorded.
        class_bias: also fit decision biases for macro F1.
        source: the checkpoint's file name and sha256, recorded.
    """
    y = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(y) or len(y) < 2:
        raise EvaluationError(
            "post-hoc calibration needs one probability row per labelled image, at least two",
            expected="probs (N, K) with N = len(labels) >= 2",
            found=f"probs {probs.shape}, {len(y)} labels",
        )
    log_probs = np.log(np.clip(probs.astype(np.float64), 1e-12, None))
    log_probs = np.asarray(log_softmax(log_probs, axis=1))
    temperature = fit_temperature(log_probs, y)
    scaled = calibrated_log_probs(log_probs, temperature, np.zeros(probs.shape[1]))
    bias = fit_class_bias(scaled, y) if class_bias else np.zeros(probs.shape[1])
    after = calibrated_log_probs(log_probs, temperature, bias)
    return PosthocCalibration(
        temperature=temperature,
        class_bias=tuple(float(b) for b in bias),
        split=split,
        n_samples=len(y),
        before=split_figures(log_probs, y),
        after=split_figures(after, y),
        source=source or {},
    )


def final_linear_name(model: nn.Module, num_classes: int, head_prefixes: Sequence[str]) -> str:
    """The qualified name of the classifier's last linear layer (num_classes outputs and a
    bias, inside the head)."""
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and module.out_features == num_classes
        and module.bias is not None
        and any(f"{name}.".startswith(prefix) for prefix in head_prefixes)
    ]
    if not names:
        raise EvaluationError(
            "the model has no final linear layer to fold a calibration into",
            expected=f"an nn.Linear with {num_classes} outputs and a bias under "
            f"{list(head_prefixes)}",
            found=type(model).__name__,
        )
    return names[-1]


def calibrate_checkpoint(
    checkpoint: dict[str, Any], calibration: PosthocCalibration, layer: str
) -> dict[str, Any]:
    """A copy of `checkpoint` whose `layer` (the last linear) computes the calibrated logits,
    with the calibration and the original layer recorded under "posthoc_calibration"."""
    import torch

    state = dict(checkpoint["state_dict"])
    weight, bias = state[f"{layer}.weight"], state[f"{layer}.bias"]
    shift = torch.tensor(calibration.class_bias, dtype=torch.float64)
    state[f"{layer}.weight"] = (weight.double() / calibration.temperature).to(weight.dtype)
    state[f"{layer}.bias"] = (bias.double() / calibration.temperature + shift).to(bias.dtype)
    return {
        **checkpoint,
        "state_dict": state,
        ENTRY: {
            **asdict(calibration),
            "class_bias": list(calibration.class_bias),
            "layer": layer,
            "original_weight": weight.clone(),
            "original_bias": bias.clone(),
        },
    }


@dataclass(frozen=True)
class CalibrateResult:
    """What `calibrate_run` wrote."""

    calibration: PosthocCalibration
    checkpoint: Path
    class_names: tuple[str, ...]


def calibrate_run(
    run_dir_or_ckpt: str | Path,
    *,
    split: str = "val",
    class_bias: bool = False,
    out: str | Path | None = None,
    device: str = "cpu",
    data_source: str | None = None,
    batch_size: int = 64,
) -> CalibrateResult:
    """Fit a post-hoc calibration on one split of a run and write a calibrated checkpoint.

    Args:
        run_dir_or_ckpt: a run folder (its best.pt) or a checkpoint file.
        split: the split to fit on: "val" (default). "test" is refused: the test split scores
            the calibrated model afterwards, so it cannot also choose it.
        class_bias: also fit per-class decision biases for macro F1 (default: the temperature
            only, which changes no decision).
        out: the calibrated checkpoint's path (default: RUN_DIR/calibrated.pt).
        device: "cpu", "cuda" or "auto".
        data_source: the dataset's location when it moved since training.
        batch_size: images per forward pass.

    Raises:
        EvaluationError: the test split, an already calibrated checkpoint, an empty split.
        CheckpointError: an unreadable or unsafe checkpoint.
    """
    from lungcancer.evaluate.api import resolve_run, sha256_file, split_dataset
    from lungcancer.train.checkpoint import save_checkpoint
    from lungcancer.train.inference import load_classifier, predict_dataset

    run_dir, ckpt_path = resolve_run(run_dir_or_ckpt)
    if split == "test":
        raise EvaluationError(
            "calibrating on the test split would let it choose the model it then scores",
            path=ckpt_path,
            expected="--split val (or train)",
            found="--split test",
        )
    clf = load_classifier(ckpt_path, device=device)
    if ENTRY in clf.checkpoint:
        raise EvaluationError(
            "this checkpoint is already calibrated; a second fit would stack on the first",
            path=ckpt_path,
            expected="the checkpoint training wrote (best.pt)",
            found=clf.checkpoint[ENTRY].get("split", "a calibrated checkpoint"),
            hint="calibrate the run's best.pt again; its calibrated copy is replaced",
        )
    _, _, dataset, _ = split_dataset(clf, run_dir, split, data_source)
    probs = predict_dataset(clf, dataset, batch_size=batch_size)
    source = {"file": ckpt_path.name, "sha256": sha256_file(ckpt_path)}
    calibration = fit_posthoc(
        probs, dataset.labels, split=split, class_bias=class_bias, source=source
    )
    layer = final_linear_name(clf.model, len(clf.class_names), clf.model.head_prefixes)
    target = Path(out) if out is not None else run_dir / "calibrated.pt"
    if target.resolve() == ckpt_path.resolve():
        raise EvaluationError(
            "the calibrated checkpoint would overwrite the one it is fitted to",
            path=target,
            hint="give --out another file name",
        )
    save_checkpoint(target, calibrate_checkpoint(clf.checkpoint, calibration, layer))
    return CalibrateResult(calibration, target, clf.class_names)
