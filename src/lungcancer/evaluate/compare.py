"""Compare evaluated runs side by side - only when they were evaluated on the same samples.

Numbers from different test sets are not comparable: a model can look better simply because
its test patients were easier. Each run's metrics.json carries a fingerprint of its evaluated
samples (SHA-256 of the sorted sample keys) and of its split file; `compare_runs` refuses runs
whose fingerprints or class lists differ unless told to go on anyway, and then says so in every
output.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os.path import commonpath
from pathlib import Path
from typing import Any

import numpy as np

from lungcancer.evaluate.api import load_metrics, load_predictions
from lungcancer.evaluate.bootstrap import DEFAULT_N_BOOT, paired_difference
from lungcancer.evaluate.metrics import LOWER_IS_BETTER, EvaluationError
from lungcancer.evaluate.plots import plot_forest
from lungcancer.evaluate.report import (
    METRIC_TEXT,
    ReportSection,
    SectionLike,
    embed_image,
    model_section,
    write_report,
)
from lungcancer.io.atomic import atomic_write_text

# Metrics in the comparison table and forest plot, in that order.
COMPARE_METRICS = ("macro_roc_auc", "macro_f1", "accuracy", "balanced_accuracy", "ece")
# Column headings short enough for a terminal table.
COMPARE_LABELS = {
    "macro_roc_auc": "macro AUC",
    "macro_f1": "macro F1",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced acc",
    "ece": "ECE",
}


@dataclass(frozen=True)
class CompareResult:
    """The comparison of several evaluated runs.

    Attributes:
        rows: one dict per run: model, run_dir, metrics {name: {value, low, high}},
            train_minutes, n_params, n_samples, n_patients, split.
        differences: for every run after the first: model, reference (the first run) and
            metrics {name: {difference, low, high, n_used}} from a paired patient bootstrap;
            empty when the runs do not share a split or lack predictions.csv.
        warnings: problems that did not stop the comparison (e.g. different splits allowed).
        out_dir: where compare.json, forest.png and compare.html were written.
        json_path: compare.json.
        forest_path: forest.png.
        html_path: compare.html.
    """

    rows: list[dict[str, Any]]
    differences: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    out_dir: Path = Path()
    json_path: Path = Path()
    forest_path: Path = Path()
    html_path: Path = Path()


def find_metrics(run: str | Path) -> Path:
    """The metrics.json of a run folder, an eval folder, or the file itself."""
    p = Path(run)
    if p.is_file():
        return p
    for candidate in (p / "eval" / "metrics.json", p / "metrics.json"):
        if candidate.is_file():
            return candidate
    raise EvaluationError(
        "no evaluation found for this run",
        path=p,
        expected="RUN_DIR/eval/metrics.json",
        hint=f"run `lungcancer evaluate {p}` first",
    )


def _labels(paths: Sequence[Path], metrics: Sequence[Mapping[str, Any]]) -> list[str]:
    """Short unique model labels: model name and run folder name, full path on collisions."""
    labels = []
    for path, m in zip(paths, metrics, strict=True):
        run_dir = path.parent.parent if path.parent.name == "eval" else path.parent
        model = (m.get("run") or {}).get("model")
        folder = run_dir.name or str(run_dir)
        labels.append(folder if not model or str(model) in folder else f"{model} ({folder})")
    if len(set(labels)) < len(labels):
        labels = [str(p.parent) for p in paths]
    return labels


def _fingerprint(m: Mapping[str, Any]) -> tuple[str, str]:
    split = m.get("split") or {}
    samples = split.get("sample_keys_sha256") or split.get("split_file_sha256") or "unknown"
    return str(split.get("name", "?")), str(samples)


def check_same_split(
    labels: Sequence[str], metrics: Sequence[Mapping[str, Any]], *, allow_different: bool
) -> list[str]:
    """Raise (or warn, if allowed) when runs were not evaluated on the same samples and classes.

    Returns:
        Warnings to show, empty when all runs share split and classes.

    Raises:
        EvaluationError: when they differ and `allow_different` is False.
    """
    problems = []
    ref_split, ref_classes = _fingerprint(metrics[0]), metrics[0].get("class_names")
    for label, m in zip(labels[1:], metrics[1:], strict=True):
        split = _fingerprint(m)
        if split != ref_split:
            problems.append(
                f"{label} was evaluated on a different set of samples than {labels[0]} "
                f"(split '{split[0]}' {split[1][:12]} vs '{ref_split[0]}' {ref_split[1][:12]})"
            )
        if m.get("class_names") != ref_classes:
            problems.append(
                f"{label} has classes {m.get('class_names')} but {labels[0]} has {ref_classes}"
            )
    if problems and not allow_different:
        raise EvaluationError(
            "these runs were not evaluated on the same split, so their numbers are not comparable",
            expected="runs trained and evaluated with the same splits.json and classes",
            found="; ".join(problems),
            hint="train the runs with the same split file (data.split_file), or pass "
            "--allow-different-splits to compare anyway with a warning",
        )
    return [f"not comparable as a like-for-like test: {p}" for p in problems]


def _row(label: str, path: Path, m: Mapping[str, Any]) -> dict[str, Any]:
    headline = m.get("headline", {})
    intervals = (m.get("ci") or {}).get("headline", {})
    run = m.get("run") or {}
    return {
        "model": label,
        "run_dir": str(path.parent.parent if path.parent.name == "eval" else path.parent),
        "metrics": {
            name: {
                "value": headline.get(name),
                "low": (intervals.get(name) or {}).get("low"),
                "high": (intervals.get(name) or {}).get("high"),
            }
            for name in COMPARE_METRICS
        },
        "train_minutes": run.get("train_minutes"),
        "n_params": run.get("n_params"),
        "n_samples": m.get("n_samples"),
        "n_patients": m.get("n_patients"),
        "split": (m.get("split") or {}).get("name"),
    }


def format_estimate(entry: Mapping[str, Any]) -> str:
    """'0.912 [0.880, 0.940]', or 'undefined' / no bracket where parts are missing."""
    value = entry.get("value")
    if value is None:
        return "undefined"
    text = f"{value:.3f}"
    if entry.get("low") is not None and entry.get("high") is not None:
        text += f" [{entry['low']:.3f}, {entry['high']:.3f}]"
    return text


def paired_differences(
    paths: Sequence[Path],
    labels: Sequence[str],
    metrics: Sequence[Mapping[str, Any]],
    *,
    n_boot: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Paired-bootstrap differences of every run from the first, aligned by sample key.

    Raises:
        EvaluationError: when a run's predictions.csv is missing or holds other samples.
    """
    names = metrics[0]["class_names"]
    ref = load_predictions(paths[0].parent / "predictions.csv", names)
    order = {key: i for i, key in enumerate(ref.sample_keys)}
    differences = []
    for path, label in zip(paths[1:], labels[1:], strict=True):
        other = load_predictions(path.parent / "predictions.csv", names)
        if sorted(other.sample_keys) != sorted(ref.sample_keys) or len(order) != len(
            ref.sample_keys
        ):
            raise EvaluationError(
                "predictions of two runs cover different samples",
                path=path.parent / "predictions.csv",
                expected=f"the {len(ref.sample_keys)} distinct sample keys of {labels[0]}",
                hint="evaluate both runs again on the same split",
            )
        aligned = np.empty_like(ref.probs)
        for i, key in enumerate(other.sample_keys):
            aligned[order[key]] = other.probs[i]
        diff = paired_difference(
            ref.y_true,
            ref.probs,
            aligned,
            ref.patient_hashes,
            names,
            metrics=COMPARE_METRICS,
            n_boot=n_boot,
            seed=seed,
        )
        differences.append({"model": label, "reference": labels[0], "metrics": diff})
    return differences


def format_difference(entry: Mapping[str, Any], metric: str) -> str:
    """'+0.031 [+0.010, +0.052] better': B minus A, marked only where the CI excludes 0."""
    value = entry.get("difference")
    if value is None:
        return "undefined"
    text = f"{value:+.3f}"
    low, high = entry.get("low"), entry.get("high")
    if low is not None and high is not None:
        text += f" [{low:+.3f}, {high:+.3f}]"
        if low > 0 or high < 0:
            better = (high < 0) == (metric in LOWER_IS_BETTER)
            text += " better" if better else " worse"
    return text


def comparison_section(result: CompareResult, *, title: str = "Model comparison") -> ReportSection:
    """The comparison table and forest plot as a report section (for combined reports)."""
    head = (
        "<tr><th>model</th>"
        + "".join(f"<th>{METRIC_TEXT[m][0]} [95% CI]</th>" for m in COMPARE_METRICS)
        + "<th>train minutes</th><th>parameters</th><th>images / patients</th></tr>"
    )
    rows = []
    for row in result.rows:
        cells = "".join(
            f"<td class='num'>{format_estimate(row['metrics'][m])}</td>" for m in COMPARE_METRICS
        )
        minutes = row.get("train_minutes")
        params = row.get("n_params")
        rows.append(
            f"<tr><th>{html.escape(row['model'])}</th>{cells}"
            f"<td class='num'>{'' if minutes is None else f'{minutes:.1f}'}</td>"
            f"<td class='num'>{'' if params is None else f'{params:,}'}</td>"
            f"<td class='num'>{row.get('n_samples')} / {row.get('n_patients')}</td></tr>"
        )
    warns = "".join(f'<p class="warn">{html.escape(w)}</p>' for w in result.warnings)
    note = (
        "<p class='note'>All models were scored on the same images. Overlapping intervals mean "
        "the data cannot tell the models apart with confidence; ECE is lower-is-better.</p>"
        if not result.warnings
        else ""
    )
    forest = ""
    if result.forest_path and Path(result.forest_path).is_file():
        forest = embed_image(result.forest_path, alt="forest plot", caption="Estimates and 95% CIs")
    diff_table = ""
    if result.differences:
        ref = html.escape(result.differences[0]["reference"])
        diff_rows = "".join(
            f"<tr><th>{html.escape(d['model'])}</th>"
            + "".join(
                f"<td class='num'>{format_difference(d['metrics'][m], m)}</td>"
                for m in COMPARE_METRICS
            )
            + "</tr>"
            for d in result.differences
        )
        diff_table = (
            f"<h3>Difference from {ref} (paired bootstrap)</h3><p>Both models were scored on "
            "the same resampled patients, so this interval answers whether one model is "
            "better: 'better' or 'worse' is shown only where the 95% interval excludes 0.</p>"
            f"<table><tr><th>model</th>"
            + "".join(f"<th>{METRIC_TEXT[m][0]}</th>" for m in COMPARE_METRICS)
            + f"</tr>{diff_rows}</table>"
        )
    body = f"{warns}{note}<table>{head}{''.join(rows)}</table>{diff_table}{forest}"
    return ReportSection(title=title, body=body)


def compare_runs(
    runs: Sequence[str | Path],
    *,
    out_dir: str | Path | None = None,
    allow_different_splits: bool = False,
    n_boot: int | None = None,
) -> CompareResult:
    """Compare evaluated runs: table, forest plot, compare.json and compare.html.

    Args:
        runs: run folders (holding eval/metrics.json), eval folders or metrics.json files.
        out_dir: where to write; default "compare" beside the runs (their common parent).
        allow_different_splits: go on with a warning when the runs were evaluated on different
            samples or classes, instead of refusing (no paired differences are computed then).
        n_boot: resamples of the paired bootstrap; default that of the first run's evaluation.

    Returns:
        The rows, warnings and written paths.

    Raises:
        EvaluationError: when a run has no evaluation, or the splits differ and that is not
            allowed.
    """
    if not runs:
        raise EvaluationError(
            "nothing to compare", expected="one or more run folders", found="none"
        )
    paths = [find_metrics(r) for r in runs]
    metrics = [load_metrics(p) for p in paths]
    labels = _labels(paths, metrics)
    warnings = check_same_split(labels, metrics, allow_different=allow_different_splits)
    rows = [_row(label, p, m) for label, p, m in zip(labels, paths, metrics, strict=True)]
    differences: list[dict[str, Any]] = []
    if len(paths) > 1 and not warnings:
        ci = metrics[0].get("ci") or {}
        differences = paired_differences(
            paths,
            labels,
            metrics,
            n_boot=n_boot if n_boot is not None else int(ci.get("n_boot") or DEFAULT_N_BOOT),
            seed=int(ci.get("seed", 0)),
        )

    if out_dir is None:
        parents = [str(Path(r["run_dir"]).resolve().parent) for r in rows]
        out = Path(commonpath(parents)) / "compare"
    else:
        out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    forest = plot_forest(
        [r["model"] for r in rows],
        list(COMPARE_METRICS),
        {
            r["model"]: {
                m: (r["metrics"][m]["value"], r["metrics"][m]["low"], r["metrics"][m]["high"])
                for m in COMPARE_METRICS
            }
            for r in rows
        },
        out / "forest.png",
    )
    json_path = out / "compare.json"
    payload = {
        "metrics": list(COMPARE_METRICS),
        "rows": rows,
        "differences": differences,
        "warnings": warnings,
    }
    atomic_write_text(json_path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    result = CompareResult(
        rows=rows,
        differences=differences,
        warnings=warnings,
        out_dir=out,
        json_path=json_path,
        forest_path=forest,
        html_path=out / "compare.html",
    )
    split_name = rows[0]["split"]
    write_report(
        result.html_path,
        title="Model comparison",
        metrics=None,
        plots={},
        run_info={"runs compared": len(rows), "split": split_name},
        sections=[comparison_section(result)],
    )
    return result


def write_combined_report(
    out_path: str | Path,
    result: CompareResult,
    *,
    title: str = "Lung cancer classification: evaluation",
    run_info: Mapping[str, Any] | None = None,
    sections: Sequence[SectionLike] = (),
) -> Path:
    """One page with the comparison first, then a full section per model, then `sections`.

    The per-model figures are read from each run's eval folder (names in its metrics.json).
    """
    blocks: list[SectionLike] = [comparison_section(result)]
    for row in result.rows:
        metrics_path = find_metrics(row["run_dir"])
        m = load_metrics(metrics_path)
        plots = {
            name: metrics_path.parent / filename
            for name, filename in (m.get("plots") or {}).items()
            if (metrics_path.parent / filename).is_file()
        }
        blocks.append(model_section(row["model"], m, plots, m.get("run") or {}))
    blocks.extend(sections)
    return write_report(
        out_path,
        title=title,
        metrics=None,
        plots={},
        run_info=dict(run_info or {"models": len(result.rows), "split": result.rows[0]["split"]}),
        sections=blocks,
    )
