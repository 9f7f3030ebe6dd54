"""Evaluation figures as PNG files.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas directly, never through
pyplot: no global backend switch, no figure left open, safe to call from a web app's threads.
PNG metadata is stripped so a file carries no software banner or link.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lungcancer.io.atomic import atomic_path

_DPI = 110
# Fields of a run's history.jsonl that are drawn, grouped into panels; missing ones are skipped.
_HISTORY_PANELS = (
    ("loss", ("train_loss", "val_loss")),
    ("accuracy", ("train_acc", "val_acc")),
    ("validation ranking", ("val_macro_auc", "val_macro_f1")),
    ("learning rate", ("lr",)),
)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return target


def _colors(n: int) -> list[Any]:
    return list(sns.color_palette("colorblind" if n <= 10 else "husl", n))


def plot_confusion_matrix(
    counts: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | Path,
    *,
    normalized: bool = False,
) -> Path:
    """Heatmap of the confusion matrix, true classes as rows.

    Args:
        counts: C x C sample counts.
        class_names: row/column labels.
        path: PNG file to write.
        normalized: show each row as shares of the true class (rows without samples stay blank).

    Returns:
        The written path.
    """
    matrix = np.asarray(counts, dtype=np.float64)
    size = max(4.0, 0.7 * len(class_names) + 2.5)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot()
    if normalized:
        rows = matrix.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            shown = np.where(rows > 0, matrix / rows, np.nan)
        sns.heatmap(
            shown, annot=True, fmt=".2f", vmin=0.0, vmax=1.0, cmap="Blues", square=True, ax=ax
        )
        ax.set_title("Confusion matrix (share of each true class)")
    else:
        sns.heatmap(matrix.astype(int), annot=True, fmt="d", cmap="Blues", square=True, ax=ax)
        ax.set_title("Confusion matrix (counts)")
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    # A true class without samples leaves an empty row; say why rather than leave it blank.
    row_labels = [
        name if matrix[k].sum() > 0 else f"{name} (no samples)"
        for k, name in enumerate(class_names)
    ]
    ax.set_yticklabels(row_labels, rotation=0)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return _save(fig, path)


def _curve_axes(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    fig = _figure(6.0, 5.0)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    return fig, ax


def _format(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def plot_roc_curves(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    auc_by_class: Mapping[str, float | None],
) -> Path:
    """One-vs-rest ROC curve of every class, its ROC-AUC in the legend.

    A class without samples (or without other samples) has no curve; the legend says so.
    """
    from sklearn.metrics import roc_curve

    fig, ax = _curve_axes("ROC curves (one class vs the rest)", "false positive rate", "recall")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for k, (name, color) in enumerate(zip(class_names, _colors(len(class_names)), strict=True)):
        auc = auc_by_class.get(name)
        positive = y_true == k
        if auc is None or positive.all() or not positive.any():
            ax.plot([], [], color=color, label=f"{name}: AUC undefined (no curve)")
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, k])
        ax.plot(fpr, tpr, color=color, linewidth=1.8, label=f"{name}: AUC {auc:.3f}")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_pr_curves(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    ap_by_class: Mapping[str, float | None],
) -> Path:
    """Precision-recall curve of every class, its average precision (PR-AUC) in the legend.

    The dotted line of each class's colour is its prevalence, the precision of guessing.
    """
    from sklearn.metrics import precision_recall_curve

    fig, ax = _curve_axes("Precision-recall curves", "recall", "precision")
    for k, (name, color) in enumerate(zip(class_names, _colors(len(class_names)), strict=True)):
        ap = ap_by_class.get(name)
        positive = y_true == k
        if ap is None or not positive.any():
            ax.plot([], [], color=color, label=f"{name}: PR-AUC undefined (no samples)")
            continue
        precision, recall, _ = precision_recall_curve(positive, probs[:, k])
        ax.plot(recall, precision, color=color, linewidth=1.8, label=f"{name}: PR-AUC {ap:.3f}")
        ax.axhline(positive.mean(), color=color, linestyle=":", linewidth=1)
    ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_reliability(calibration: Mapping[str, Any], path: str | Path) -> Path:
    """Reliability diagram: accuracy against confidence per bin, with a sample histogram.

    Args:
        calibration: the "calibration" block of `compute_metrics` (bins, ece, n_bins).
        path: PNG file to write.
    """
    bins = calibration["bins"]
    fig = _figure(6.0, 6.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    width = bins[0]["upper"] - bins[0]["lower"]
    centers = np.array([(b["lower"] + b["upper"]) / 2 for b in bins])
    filled = [i for i, b in enumerate(bins) if b["count"] > 0]
    accuracy = np.array([bins[i]["accuracy"] for i in filled], dtype=np.float64)
    confidence = np.array([bins[i]["confidence"] for i in filled], dtype=np.float64)
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    top.bar(centers[filled], accuracy, width=width, edgecolor="black", alpha=0.8, label="accuracy")
    top.bar(
        confidence,
        confidence - accuracy,
        bottom=accuracy,
        width=width * 0.35,
        color="tab:red",
        alpha=0.6,
        label="gap to confidence",
    )
    ece = calibration.get("ece")
    top.set_title(f"Reliability diagram (ECE {_format(ece)}, {calibration['n_bins']} bins)")
    top.set_ylabel("accuracy in bin")
    top.set_ylim(0, 1.01)
    top.legend(loc="upper left", fontsize="small")
    top.grid(alpha=0.3)
    bottom.bar(centers, [b["count"] for b in bins], width=width, color="grey", edgecolor="black")
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("samples")
    bottom.set_xlim(0, 1)
    return _save(fig, path)


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """Read a run's history.jsonl: one JSON object per epoch.

    A line that is not a JSON object (e.g. cut short by a crash) is skipped with a warning, so
    a partly written history still draws what it has.
    """
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            warnings.warn(f"{path}: line {number} is not a JSON object; skipped", stacklevel=2)
            continue
        rows.append(row)
    return rows


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(history):
        value = row.get(key)
        if isinstance(value, int | float) and np.isfinite(value):
            epoch = row.get("epoch", i + 1)
            xs.append(float(epoch) if isinstance(epoch, int | float) else float(i + 1))
            ys.append(float(value))
    return xs, ys


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Loss, accuracy, validation AUC/F1 and learning rate per epoch.

    Fields missing from the history are left out; panels with no data are dropped.

    Returns:
        The written path, or None when the history has nothing to draw.
    """
    panels = []
    for title, keys in _HISTORY_PANELS:
        series = [(key, *_series(history, key)) for key in keys]
        series = [s for s in series if s[1]]
        if series:
            panels.append((title, series))
    if not panels:
        return None
    fig = _figure(4.2 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, series) in zip(axes, panels, strict=True):
        for key, xs, ys in series:
            ax.plot(xs, ys, marker="o", markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    return _save(fig, path)


def plot_forest(
    models: Sequence[str],
    metrics: Sequence[str],
    values: Mapping[str, Mapping[str, tuple[float | None, float | None, float | None]]],
    path: str | Path,
) -> Path:
    """Forest plot: each metric's point estimate and interval per model, one panel per metric.

    Args:
        models: model labels, top to bottom.
        metrics: metric names, one panel each.
        values: values[model][metric] = (estimate, low, high); None parts are not drawn.
        path: PNG file to write.
    """
    fig = _figure(3.4 * len(metrics), 1.0 + 0.5 * len(models))
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    positions = np.arange(len(models))[::-1]
    colors = _colors(len(models))
    for ax, metric in zip(axes, metrics, strict=True):
        for y, model, color in zip(positions, models, colors, strict=True):
            estimate, low, high = values.get(model, {}).get(metric, (None, None, None))
            if low is not None and high is not None:
                ax.plot([low, high], [y, y], color=color, linewidth=2)
            if estimate is not None:
                ax.plot([estimate], [y], marker="o", color=color, markersize=6)
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3)
        ax.set_ylim(-0.7, len(models) - 0.3)
    axes[0].set_yticks(positions, labels=list(models))
    return _save(fig, path)


def write_evaluation_plots(
    y_true: np.ndarray,
    probs: np.ndarray,
    metrics: Mapping[str, Any],
    out_dir: str | Path,
    *,
    history: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Every evaluation figure of one prediction set into `out_dir`.

    Args:
        y_true: (N,) class ids.
        probs: (N, C) probabilities.
        metrics: the output of `compute_metrics` for the same predictions.
        out_dir: folder for the PNG files.
        history: a run's epochs (from `read_history`) for training curves, if any.

    Returns:
        Plot name -> path, in the order a report shows them.
    """
    out = Path(out_dir)
    names = metrics["class_names"]
    per_class = metrics["per_class"]
    cm = metrics["confusion_matrix"]["counts"]
    plots = {
        "confusion_matrix": plot_confusion_matrix(cm, names, out / "confusion_matrix.png"),
        "confusion_matrix_normalized": plot_confusion_matrix(
            cm, names, out / "confusion_matrix_normalized.png", normalized=True
        ),
        "roc_curves": plot_roc_curves(
            y_true,
            probs,
            names,
            out / "roc_curves.png",
            auc_by_class={n: per_class[n]["roc_auc"] for n in names},
        ),
        "pr_curves": plot_pr_curves(
            y_true,
            probs,
            names,
            out / "pr_curves.png",
            ap_by_class={n: per_class[n]["pr_auc"] for n in names},
        ),
        "reliability": plot_reliability(metrics["calibration"], out / "reliability.png"),
    }
    if history:
        curves = plot_training_curves(history, out / "training_curves.png")
        if curves is not None:
            plots["training_curves"] = curves
    return plots
