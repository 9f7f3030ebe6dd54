"""One self-contained HTML report a clinician can open.

The page has no external resource of any kind: images (PNG, JPEG, GIF animations, SVG) are
embedded as base64 data URIs, the CSS is inline, and there is no JavaScript, so it opens the
same from an e-mail attachment, a USB stick or an air-gapped workstation. It shows counts and
aggregate numbers only - never a patient key.

A report is a list of sections. `write_report(..., metrics=...)` puts one model's evaluation
first; `model_section` renders the same block as a section, so one page can hold several
models (one section each) plus a comparison (see `lungcancer.evaluate.compare`) and any extra
blocks such as progression strips or GIFs.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungcancer.evaluate.metrics import HEADLINE_METRICS, LOWER_IS_BETTER, EvaluationError
from lungcancer.io.atomic import atomic_write_text

NOTICE = (
    "Research use only. This is not a diagnostic device and has not been cleared or approved "
    "for clinical use; do not base any decision about a patient on it."
)

# Label and plain-language meaning of each headline metric, shown beside the number.
METRIC_TEXT: dict[str, tuple[str, str]] = {
    "accuracy": ("Accuracy", "Share of images whose most likely class is the true class."),
    "balanced_accuracy": (
        "Balanced accuracy",
        "Sensitivity (recall) averaged over classes, so a rare class counts as much as a "
        "common one.",
    ),
    "macro_precision": (
        "Macro precision",
        "When the model names a class, how often it is right; averaged over classes.",
    ),
    "macro_f1": ("Macro F1", "Balance of precision and recall, averaged over classes."),
    "weighted_f1": ("Weighted F1", "F1 averaged over classes, weighted by their image counts."),
    "macro_roc_auc": (
        "Macro ROC-AUC",
        "Chance that an image of a class scores higher for that class than an image of "
        "another class; averaged over classes. 0.5 is guessing, 1 is perfect.",
    ),
    "macro_pr_auc": (
        "Macro PR-AUC",
        "Average precision over all decision thresholds, averaged over classes; guessing "
        "scores about the class's share of images.",
    ),
    "ece": (
        "Expected calibration error",
        "Average gap between the model's confidence and how often it is right (0 means a "
        "stated 80% comes true 80% of the time).",
    ),
    "brier": (
        "Brier score",
        "Squared error of the predicted probabilities (0 is perfect).",
    ),
    "log_loss": (
        "Log-loss",
        "Penalty that grows fast for confident mistakes (0 is perfect).",
    ),
}

PLOT_TITLES = {
    "confusion_matrix": "Confusion matrix (counts)",
    "confusion_matrix_normalized": "Confusion matrix (share of each true class)",
    "roc_curves": "ROC curves per class",
    "pr_curves": "Precision-recall curves per class",
    "reliability": "Reliability diagram",
    "training_curves": "Training curves",
}

_IMAGE_TYPES = {
    ".png": "image/png",
    ".gif": "image/gif",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;
color:#1d2330;background:#f6f7f9;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:1.2rem 1.5rem 3rem;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0 .4rem}h2{font-size:1.3rem;border-bottom:2px solid #dfe3ea;
padding-bottom:.2rem;margin-top:2.2rem}h3{font-size:1.05rem;margin-top:1.4rem}
.notice{border:2px solid #b3261e;background:#fdecea;color:#5f130f;padding:.7rem 1rem;
border-radius:6px;font-weight:600}
.warn{border-left:4px solid #c77700;background:#fff6e5;padding:.5rem .9rem;margin:.8rem 0}
.note{background:#eef4fb;border-left:4px solid #2b6cb0;padding:.6rem .9rem;margin:.8rem 0}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #d5dae2;padding:.3rem .55rem;text-align:left;vertical-align:top}
th{background:#f0f2f5}td.num{text-align:right;font-variant-numeric:tabular-nums;
white-space:nowrap}.undef{color:#8a8f98;font-style:italic}.muted{color:#5b6270;font-size:.88rem}
.figs{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:1rem}
.figs .wide{grid-column:1/-1}figure{margin:.6rem 0;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #e3e6eb}
figcaption{font-size:.88rem;color:#5b6270}nav ul{columns:2;font-size:.92rem}
@media print{body{background:#fff}main{max-width:none}.notice{break-inside:avoid}}
"""


@dataclass(frozen=True)
class ReportSection:
    """An extra block of the report.

    Attributes:
        title: heading of the block.
        body: an HTML fragment (str), or an image file (Path; PNG, JPEG, GIF, SVG or WebP) to
            embed. A str that ends in one of those suffixes and holds no "<" is taken as a path.
        caption: text under an image, or a paragraph before an HTML fragment.
    """

    title: str
    body: str | Path
    caption: str = ""


SectionLike = ReportSection | tuple[str, str | Path] | tuple[str, str | Path, str]


def _as_section(section: SectionLike) -> ReportSection:
    if isinstance(section, ReportSection):
        return section
    return ReportSection(*section)


def _image_path(body: str | Path) -> Path | None:
    if isinstance(body, Path):
        return body
    if "<" not in body and Path(body).suffix.lower() in _IMAGE_TYPES:
        return Path(body)
    return None


def embed_image(path: str | Path, *, alt: str, caption: str = "", css_class: str = "") -> str:
    """A <figure> with the image file embedded as a data URI.

    Raises:
        EvaluationError: when the file is missing or not a supported image type.
    """
    p = Path(path)
    mime = _IMAGE_TYPES.get(p.suffix.lower())
    if mime is None:
        raise EvaluationError(
            "cannot embed this file in the report",
            path=p,
            expected=f"an image file ({', '.join(sorted(_IMAGE_TYPES))})",
            found=p.suffix or "no suffix",
        )
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise EvaluationError(
            "image for the report not found", path=p, hint="check the section's path"
        ) from exc
    encoded = base64.b64encode(data).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    klass = f' class="{html.escape(css_class)}"' if css_class else ""
    return (
        f'<figure{klass}><img src="data:{mime};base64,{encoded}" alt="{html.escape(alt)}">'
        f"{cap}</figure>"
    )


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return '<span class="undef">undefined</span>'
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _ci_text(ci: Mapping[str, Any] | None) -> str:
    if not ci or ci.get("low") is None or ci.get("high") is None:
        return '<span class="undef">no interval</span>'
    return f"{ci['low']:.3f} – {ci['high']:.3f}"


def subgroup_section(block: Mapping[str, Any]) -> ReportSection:
    """Report block of one subgroup analysis (`evaluate.subgroups.subgroup_metrics`)."""
    head = (
        "<tr><th>group</th><th>samples</th><th>patients</th><th>accuracy (95% CI)</th>"
        "<th>balanced accuracy (95% CI)</th><th>macro ROC-AUC (95% CI)</th>"
        "<th>recall by class</th></tr>"
    )
    rows = []
    for g in block["groups"]:
        cells = "".join(
            f"<td class='num'>{_fmt(g['metrics'][m])} <span class='muted'>"
            f"({_ci_text(g['ci'][m])})</span></td>"
            for m in ("accuracy", "balanced_accuracy", "macro_roc_auc")
        )
        recall = ", ".join(f"{html.escape(c)} {_fmt(r, 2)}" for c, r in g["recall"].items())
        rows.append(
            f"<tr><th>{html.escape(g['group'])}</th><td class='num'>{g['n_samples']}</td>"
            f"<td class='num'>{g['n_patients']}</td>{cells}<td>{recall}</td></tr>"
        )
    how = {"given": "bins as given", "quartiles": "bins at the quartiles"}.get(
        str(block.get("edges_from")), "one group per value"
    )
    caption = (
        f"The metrics within groups of samples by {block['column']} ({how}). Classes absent from a "
        "group are left out of its macro averages; intervals resample the group's patients."
    )
    return ReportSection(f"By {block['column']}", f"<table>{head}{''.join(rows)}</table>", caption)


def _kv_table(rows: Iterable[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _plain_note(metrics: Mapping[str, Any]) -> str:
    split = metrics.get("split") or {}
    ci = metrics.get("ci") or {}
    split_name = html.escape(str(split.get("name", "evaluation")))
    n_samples = metrics.get("n_samples", "?")
    n_patients = metrics.get("n_patients", ci.get("n_patients", "?"))
    grouping = str(metrics.get("grouping", "patient"))
    plural = "patients" if grouping == "patient" else f"{html.escape(grouping)}s"
    groups = plural if grouping == "patient" else f"{plural} (the dataset has no patient ids)"
    text = (
        f"These numbers come from the <b>{split_name}</b> split: <b>{n_samples}</b> images from "
        f"<b>{n_patients}</b> {groups}. "
    )
    if split.get("held_out_patients"):
        text += "Patients of this split were kept out of training and model selection. "
    if ci.get("n_boot"):
        text += (
            f"Each range is a {round(100 * ci.get('confidence', 0.95))}% confidence interval "
            f"from {ci['n_boot']} bootstrap resamples of whole {plural} "
            f"(seed {ci.get('seed')}; "
            f"resampling unit: {html.escape(str(ci.get('unit', 'patient')))}): on another group "
            "of similar patients the result would most likely fall in that range. Few patients "
            "give wide ranges; a wide range means the number is uncertain, not that it is bad."
        )
    else:
        text += "No confidence intervals were computed, so the numbers' uncertainty is unknown."
    return f'<p class="note">{text}</p>'


def _headline_table(metrics: Mapping[str, Any]) -> str:
    headline = metrics.get("headline", {})
    intervals = (metrics.get("ci") or {}).get("headline", {})
    rows = []
    for name in HEADLINE_METRICS:
        if name not in headline:
            continue
        label, meaning = METRIC_TEXT[name]
        ci = intervals.get(name)
        used = "" if not ci else str(ci.get("n_used", ""))
        direction = "lower is better" if name in LOWER_IS_BETTER else "higher is better"
        rows.append(
            f"<tr><th>{label}</th><td class='num'>{_fmt(headline[name])}</td>"
            f"<td class='num'>{_ci_text(ci)}</td><td class='num'>{used}</td>"
            f"<td>{html.escape(meaning)} <span class='muted'>({direction})</span></td></tr>"
        )
    head = (
        "<tr><th>metric</th><th>value</th><th>95% CI</th><th>resamples used</th>"
        "<th>what it means</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _per_class_table(metrics: Mapping[str, Any]) -> str:
    per_class = metrics.get("per_class", {})
    intervals = (metrics.get("ci") or {}).get("per_class", {})
    head = (
        "<tr><th>class</th><th>images</th><th>precision</th><th>recall (sensitivity)</th>"
        "<th>F1</th><th>ROC-AUC [95% CI]</th><th>PR-AUC</th></tr>"
    )
    rows = []
    for name, row in per_class.items():
        auc_ci = intervals.get(name, {}).get("roc_auc")
        auc = _fmt(row.get("roc_auc"))
        if row.get("roc_auc") is not None and auc_ci:
            auc += f" <span class='muted'>[{_ci_text(auc_ci)}]</span>"
        rows.append(
            f"<tr><th>{html.escape(name)}</th><td class='num'>{row.get('support', 0)}</td>"
            f"<td class='num'>{_fmt(row.get('precision'))}</td>"
            f"<td class='num'>{_fmt(row.get('recall'))}</td>"
            f"<td class='num'>{_fmt(row.get('f1'))}</td><td class='num'>{auc}</td>"
            f"<td class='num'>{_fmt(row.get('pr_auc'))}</td></tr>"
        )
    macro_over = metrics.get("macro_over", {}).get("roc_auc")
    note = ""
    if macro_over is not None and len(macro_over) < len(per_class):
        note = (
            "<p class='muted'>Macro averages cover only the classes where a metric is defined: "
            f"{html.escape(', '.join(macro_over)) or 'none'}.</p>"
        )
    return f"<table>{head}{''.join(rows)}</table>{note}"


def _confusion_table(metrics: Mapping[str, Any]) -> str:
    names = metrics.get("class_names", [])
    counts = metrics.get("confusion_matrix", {}).get("counts", [])
    if not names or not counts:
        return ""
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = "".join(
        f"<tr><th>{html.escape(n)}</th>"
        + "".join(f"<td class='num'>{int(v)}</td>" for v in row)
        + "</tr>"
        for n, row in zip(names, counts, strict=True)
    )
    return f"<table>{head}</tr>{rows}</table>"


def _calibration_block(metrics: Mapping[str, Any]) -> str:
    cal = metrics.get("calibration")
    if not cal:
        return ""
    return (
        "<h3>Calibration</h3><p>Can the model's stated probabilities be taken at face value? "
        f"Confidences were grouped into {cal.get('n_bins', 15)} equal-width bins; ECE is the "
        "image-weighted average gap between confidence and accuracy over those bins.</p>"
        + _kv_table(
            [
                ("expected calibration error", cal.get("ece")),
                ("Brier score (0-2)", cal.get("brier")),
                ("log-loss", cal.get("log_loss")),
            ]
        )
    )


# Friendlier names for run_info keys that code reads under a short name.
_RUN_INFO_LABELS = {"n_params": "parameters", "train_minutes": "training time (minutes)"}


def _provenance(metrics: Mapping[str, Any], run_info: Mapping[str, Any]) -> str:
    rows: list[tuple[str, Any]] = [
        (_RUN_INFO_LABELS.get(str(k), str(k)), f"{v:,}" if isinstance(v, int) and v > 9999 else v)
        for k, v in run_info.items()
    ]
    split = metrics.get("split") or {}
    for key in ("name", "split_file", "split_file_sha256", "sample_keys_sha256"):
        if split.get(key):
            rows.append((f"split {key.replace('_', ' ')}", split[key]))
    ci = metrics.get("ci") or {}
    if ci.get("n_boot"):
        rows.append(("bootstrap", f"{ci['n_boot']} resamples, seed {ci.get('seed')}"))
    rows.append(("images evaluated", metrics.get("n_samples")))
    if metrics.get("n_patients") is not None:
        rows.append(("patients evaluated", metrics.get("n_patients")))
    return "<h3>What produced these numbers</h3>" + _kv_table(rows)


def render_model_block(
    metrics: Mapping[str, Any],
    plots: Mapping[str, str | Path],
    run_info: Mapping[str, Any],
) -> str:
    """The HTML of one model's evaluation: headline with CIs, per-class table, plots, origin.

    Args:
        metrics: the content of metrics.json (`compute_metrics` output plus "ci", "split",
            "n_patients" where known).
        plots: plot name -> PNG path; known names get standard titles, in the given order.
        run_info: what produced the numbers (model, checkpoint, data, seed, ...), shown as is.
    """
    parts = [_plain_note(metrics)]
    parts += [f'<p class="warn">{html.escape(w)}</p>' for w in metrics.get("warnings", [])]
    parts.append("<h3>Headline numbers</h3>" + _headline_table(metrics))
    parts.append("<h3>Per class</h3>" + _per_class_table(metrics))
    parts.append("<h3>Confusion matrix</h3>" + _confusion_table(metrics))
    parts.append(_calibration_block(metrics))
    if plots:
        figures = []
        for name, path in plots.items():
            title = PLOT_TITLES.get(name, name.replace("_", " "))
            wide = "wide" if name == "training_curves" else ""
            figures.append(embed_image(path, alt=title, caption=title, css_class=wide))
        parts.append(f"<h3>Figures</h3><div class='figs'>{''.join(figures)}</div>")
    parts.append(_provenance(metrics, run_info))
    return "\n".join(parts)


def model_section(
    name: str,
    metrics: Mapping[str, Any],
    plots: Mapping[str, str | Path],
    run_info: Mapping[str, Any],
) -> ReportSection:
    """One model's evaluation as a report section, for pages that show several models."""
    return ReportSection(title=name, body=render_model_block(metrics, plots, run_info))


def _render_section(section: ReportSection, anchor: str) -> str:
    image = _image_path(section.body)
    if image is not None:
        content = embed_image(image, alt=section.title, caption=section.caption)
    else:
        caption = f"<p>{html.escape(section.caption)}</p>" if section.caption else ""
        content = caption + str(section.body)
    return f'<section id="{anchor}"><h2>{html.escape(section.title)}</h2>{content}</section>'


def render_report(
    *,
    title: str,
    metrics: Mapping[str, Any] | None,
    plots: Mapping[str, str | Path],
    run_info: Mapping[str, Any],
    sections: Sequence[SectionLike] = (),
) -> str:
    """The report as an HTML string (see `write_report`)."""
    blocks = []
    if metrics is not None:
        blocks.append(
            _render_section(
                ReportSection("Evaluation", render_model_block(metrics, plots, run_info)),
                "sec-0",
            )
        )
    elif run_info:
        blocks.append(
            _render_section(
                ReportSection("What produced this report", _kv_table(run_info.items())), "sec-0"
            )
        )
    extra = [_as_section(s) for s in sections]
    blocks += [_render_section(s, f"sec-{i + 1}") for i, s in enumerate(extra)]
    toc = ""
    if len(extra) > 1:
        items = "".join(
            f'<li><a href="#sec-{i + 1}">{html.escape(s.title)}</a></li>'
            for i, s in enumerate(extra)
        )
        toc = f"<nav><ul>{items}</ul></nav>"
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{html.escape(title)}</h1><p class='muted'>Generated {generated} by lungcancer."
        " Only counts and aggregate numbers are shown; no patient identifiers.</p>"
        f'<p class="notice">{html.escape(NOTICE)}</p>{toc}'
        + "\n".join(blocks)
        + f'<p class="notice">{html.escape(NOTICE)}</p></main></body></html>\n'
    )


def write_report(
    out_path: str | Path,
    *,
    title: str,
    metrics: Mapping[str, Any] | None,
    plots: Mapping[str, str | Path],
    run_info: Mapping[str, Any],
    sections: Sequence[SectionLike] = (),
) -> Path:
    """Write one self-contained HTML report (atomically).

    For a single model pass its metrics, plots and run_info. For several models pass
    `metrics=None`, `plots={}`, the shared run_info, and one `model_section(...)` per model
    plus `comparison_section(...)` from `lungcancer.evaluate.compare` in `sections`.

    Args:
        out_path: the .html file to write.
        title: page title.
        metrics: metrics.json content of the model shown first, or None.
        plots: plot name -> PNG path for that model.
        run_info: model/data/split/seed that produced the numbers, shown as a table.
        sections: extra blocks - ReportSection or (title, html | image path[, caption]).

    Returns:
        The written path.
    """
    page = render_report(
        title=title, metrics=metrics, plots=plots, run_info=run_info, sections=sections
    )
    target = Path(out_path)
    atomic_write_text(target, page)
    return target
