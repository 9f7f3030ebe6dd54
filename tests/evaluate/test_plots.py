"""Figures: training curves from imperfect histories, files written as PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungcancer.evaluate.plots import plot_forest, plot_training_curves, read_history


def _is_png(path: Path) -> bool:
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 100


def test_history_with_missing_fields_and_a_torn_line_still_draws(tmp_path: Path) -> None:
    lines = [
        json.dumps({"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "lr": 1e-3}),
        json.dumps({"epoch": 2, "train_loss": 0.7, "val_macro_auc": 0.8}),
        '{"epoch": 3, "train_lo',  # a run killed mid-write
    ]
    history_path = tmp_path / "history.jsonl"
    history_path.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="line 3"):
        history = read_history(history_path)
    assert [row["epoch"] for row in history] == [1, 2]
    out = plot_training_curves(history, tmp_path / "curves.png")
    assert out is not None and _is_png(out)


def test_history_without_known_fields_draws_nothing(tmp_path: Path) -> None:
    assert plot_training_curves([{"epoch": 1, "other": 3}], tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()


def test_forest_plot_tolerates_missing_intervals(tmp_path: Path) -> None:
    values = {
        "cnn": {"auc": (0.9, 0.85, 0.94), "f1": (0.8, None, None)},
        "densenet": {"auc": (None, None, None), "f1": (0.85, 0.8, 0.9)},
    }
    out = plot_forest(["cnn", "densenet"], ["auc", "f1"], values, tmp_path / "forest.png")
    assert _is_png(out)
    with Image.open(out) as im:
        assert np.asarray(im).std() > 0
