"""The HTML report: one file, nothing external, the numbers and the notice in it."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungcancer.errors import LungCancerError
from lungcancer.evaluate.bootstrap import bootstrap_metrics
from lungcancer.evaluate.metrics import compute_metrics
from lungcancer.evaluate.report import NOTICE, ReportSection, model_section, write_report

NAMES = ["adeno", "squamous", "normal"]


@pytest.fixture
def metrics() -> dict[str, object]:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 8)
    logits = rng.normal(size=(24, 3)) + 2.0 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    keys = [f"p{i // 2}" for i in range(24)]
    m = compute_metrics(y, probs, NAMES)
    m["ci"] = bootstrap_metrics(y, probs, keys, NAMES, n_boot=20, seed=0)
    m["split"] = {"name": "test", "held_out_patients": True}
    m["n_patients"] = 12
    return m


def _png(path: Path, color: tuple[int, int, int]) -> Path:
    Image.new("RGB", (8, 8), color).save(path)
    return path


def _gif(path: Path) -> Path:
    frames = [Image.new("L", (8, 8), v) for v in (0, 128, 255)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def test_report_is_one_self_contained_file(tmp_path: Path, metrics: dict[str, object]) -> None:
    png = _png(tmp_path / "roc.png", (255, 0, 0))
    gif = _gif(tmp_path / "growth.gif")
    out = write_report(
        tmp_path / "report" / "report.html",
        title="Demo <model>",
        metrics=metrics,
        plots={"roc_curves": png},
        run_info={"model": "cnn", "checkpoint": "best.pt"},
        sections=[("Tumour growth", gif, "one frame per month"), ("Notes", "<p>extra</p>")],
    )
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]
    page = out.read_text(encoding="utf-8")
    assert "http" not in page.lower()
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith(("data:", "#")) for s in sources)
    # The embedded images are the files, byte for byte.
    assert base64.b64encode(gif.read_bytes()).decode() in page
    assert "data:image/gif;base64," in page
    assert "data:image/png;base64," in page
    assert "Demo &lt;model&gt;" in page  # text is escaped, not injected
    assert page.count(NOTICE) >= 1


def test_report_shows_headline_numbers_with_intervals(
    tmp_path: Path, metrics: dict[str, object]
) -> None:
    page = write_report(
        tmp_path / "r.html", title="t", metrics=metrics, plots={}, run_info={"seed": 3}
    ).read_text(encoding="utf-8")
    headline = metrics["headline"]
    ci = metrics["ci"]["headline"]  # type: ignore[index]
    assert isinstance(headline, dict)
    assert f"{headline['macro_roc_auc']:.3f}" in page
    auc_ci = ci["macro_roc_auc"]
    assert f"{auc_ci['low']:.3f} – {auc_ci['high']:.3f}" in page
    assert f"{headline['accuracy']:.3f}" in page
    assert "20 bootstrap resamples" in page
    assert "<b>24</b> images from <b>12</b> patients" in page
    assert "kept out of training" in page
    for name in NAMES:
        assert name in page


def test_undefined_class_is_shown_as_undefined(tmp_path: Path) -> None:
    y = np.array([0, 1, 0, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.4, 0.5, 0.1]])
    with pytest.warns(UserWarning):
        m = compute_metrics(y, probs, NAMES)
    page = write_report(tmp_path / "r.html", title="t", metrics=m, plots={}, run_info={}).read_text(
        encoding="utf-8"
    )
    assert "undefined" in page
    assert "has no samples in this split" in page


def test_multi_model_page_has_a_section_per_model(
    tmp_path: Path, metrics: dict[str, object]
) -> None:
    sections = [
        model_section("DenseNet121", metrics, {}, {"model": "densenet121"}),
        model_section("Custom CNN", metrics, {}, {"model": "cnn"}),
        ReportSection("Comparison", "<table><tr><td>x</td></tr></table>"),
    ]
    page = write_report(
        tmp_path / "all.html", title="All", metrics=None, plots={}, run_info={}, sections=sections
    ).read_text(encoding="utf-8")
    assert page.count("<h2>") == 3
    assert 'href="#sec-2"' in page
    assert page.index("DenseNet121") < page.index("Custom CNN") < page.index("Comparison")


@pytest.mark.parametrize(
    ("body", "message"),
    [(Path("missing.png"), "not found"), (Path("notes.txt"), "cannot embed")],
)
def test_bad_image_section_raises(
    tmp_path: Path, body: Path, message: str, metrics: dict[str, object]
) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LungCancerError, match=message):
        write_report(
            tmp_path / "r.html",
            title="t",
            metrics=metrics,
            plots={},
            run_info={},
            sections=[("bad", tmp_path / body)],
        )
    assert not (tmp_path / "r.html").exists()


def test_data_without_patient_ids_is_not_called_patients(
    tmp_path: Path, metrics: dict[str, object]
) -> None:
    page = write_report(
        tmp_path / "r.html",
        title="t",
        metrics={**metrics, "grouping": "scan file"},
        plots={},
        run_info={},
    ).read_text(encoding="utf-8")
    assert "<b>12</b> scan files (the dataset has no patient ids)" in page
    assert "resamples of whole scan files" in page
