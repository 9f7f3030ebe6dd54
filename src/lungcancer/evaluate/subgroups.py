"""Subgroup analysis: the same metrics within groups of samples defined by a manifest column.

A single accuracy hides where a model fails. A reviewer asks how it does on small nodules, on
thick slices, on low-dose scans, on ground-glass lesions: groups defined by a per-sample field
(`Sample.extra`, any manifest column). A numeric column is cut at edges given in its own unit
("diameter_mm:10,20,30": under 10, 10 to 20, 20 to 30, 30 and over) or, without edges, at its
quartiles; any other column groups by value. Samples without a value form a "(not recorded)"
group, never dropped: LungSim's normal slices have no diameter.

Within a group the metrics are those of the whole split restricted to its samples, with
patient-bootstrap intervals (`bootstrap.bootstrap_metrics`). Classes absent from a group are
left out of its macro averages, so a group of stage I and benign nodules gets the AUC of telling
those two apart (against every other class's probability), not a number over absent classes.

A group column is shown in reports, so a column with many distinct values (an identifier,
a date) is refused: it would print one row per patient.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lungcancer.evaluate.bootstrap import bootstrap_metrics
from lungcancer.evaluate.metrics import EvaluationError, compute_metrics

MAX_CATEGORIES = 20
NOT_RECORDED = "(not recorded)"
# As in train.aux: "none" is a finding (no invasion, no calcification), not a missing cell.
_MISSING = ("", "nan", "n/a")
_SHOWN = ("accuracy", "balanced_accuracy", "macro_roc_auc")


@dataclass(frozen=True)
class GroupSpec:
    """One `--by` argument: a column and, for a numeric column, the bin edges (its unit).

    Attributes:
        column: manifest column.
        edges: increasing bin edges; empty = quartiles for a numeric column, values otherwise.
    """

    column: str
    edges: tuple[float, ...] = ()

    @classmethod
    def parse(cls, text: str) -> GroupSpec:
        """ "diameter_mm:10,20,30" -> GroupSpec("diameter_mm", (10, 20, 30)); "histology"."""
        column, _, edges_text = text.partition(":")
        column = column.strip()
        if not column:
            raise EvaluationError(
                "a subgroup needs a column name",
                expected="COLUMN or COLUMN:EDGE,EDGE,... (e.g. diameter_mm:10,20,30)",
                found=repr(text),
            )
        edges: tuple[float, ...] = ()
        if edges_text.strip():
            try:
                edges = tuple(float(e) for e in edges_text.split(","))
            except ValueError:
                edges = ()
            if not edges or list(edges) != sorted(set(edges)):
                raise EvaluationError(
                    "subgroup bin edges must be increasing numbers",
                    expected=f"{column}:EDGE,EDGE,... in the column's unit, e.g. {column}:10,20",
                    found=repr(text),
                )
        return cls(column, edges)


def _number(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _fmt_edge(x: float) -> str:
    return f"{x:g}"


def group_labels(
    values: Sequence[str], spec: GroupSpec
) -> tuple[list[str], list[str], tuple[float, ...]]:
    """Each sample's group label, the labels in display order, and the bin edges used (none
    for a categorical column).

    Raises:
        EvaluationError: edges given for a non-numeric column, or a categorical column with
            more than MAX_CATEGORIES values.
    """
    cells = [str(v).strip() for v in values]
    missing = [c.lower() in _MISSING for c in cells]
    present = [c for c, gap in zip(cells, missing, strict=True) if not gap]
    # Each cell parsed once: its number, or None (missing or text).
    numbers = [None if gap else _number(c) for c, gap in zip(cells, missing, strict=True)]
    text = next(
        (c for c, gap, x in zip(cells, missing, numbers, strict=True) if not gap and x is None),
        None,
    )
    numeric = bool(present) and text is None
    if spec.edges and not numeric:
        raise EvaluationError(
            f"subgroup column {spec.column!r} is not numeric, so it cannot be binned",
            expected=f"numbers in {spec.column!r}, or --by {spec.column} without edges",
            found=f"the value {text or ''!r}",
        )
    edges: tuple[float, ...] = ()
    if numeric:
        edges = spec.edges or _quartile_edges([x for x in numbers if x is not None])
        names = _bin_names(edges)
        labels = [
            NOT_RECORDED if x is None else names[int(np.searchsorted(edges, x, "right"))]
            for x in numbers
        ]
        used = set(labels)
        order = [n for n in names if n in used]
    else:
        distinct = sorted(set(present))
        if len(distinct) > MAX_CATEGORIES:
            raise EvaluationError(
                f"subgroup column {spec.column!r} has {len(distinct)} distinct values",
                expected=f"at most {MAX_CATEGORIES} groups (a finding, a setting, a site)",
                found=f"{len(distinct)} values; an identifier or a date would print a row per "
                "patient in the report",
                hint="group by a column with few values, or bin a numeric one (COLUMN:EDGES)",
            )
        labels = [NOT_RECORDED if gap else c for c, gap in zip(cells, missing, strict=True)]
        order = distinct
    if NOT_RECORDED in labels:
        order.append(NOT_RECORDED)
    return labels, order, edges


def _quartile_edges(numbers: Sequence[float]) -> tuple[float, ...]:
    quartiles = np.quantile(np.asarray(numbers, np.float64), [0.25, 0.5, 0.75])
    rounded = sorted({float(f"{q:.3g}") for q in quartiles})
    return tuple(rounded)


def _bin_names(edges: Sequence[float]) -> list[str]:
    names = [f"< {_fmt_edge(edges[0])}"]
    names += [f"{_fmt_edge(a)} to < {_fmt_edge(b)}" for a, b in itertools.pairwise(edges)]
    names.append(f">= {_fmt_edge(edges[-1])}")
    return names


def subgroup_metrics(
    y: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    patient_keys: Sequence[str],
    values: Sequence[str],
    spec: GroupSpec,
    *,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Per-group sample and patient counts, accuracy, balanced accuracy and macro ROC-AUC with
    patient-bootstrap intervals, and recall per class present.

    Args:
        y: (N,) true class ids.
        probs: (N, C) probabilities.
        class_names: the C class names.
        patient_keys: (N,) patient key per sample (for counting and resampling).
        values: (N,) the column's cell for each sample ("" when missing).
        spec: the column and its bins.
        n_boot: bootstrap resamples (0: no intervals).
        seed: bootstrap seed.
    """
    labels, order, edges = group_labels(values, spec)
    keys = np.asarray([str(k) for k in patient_keys], dtype=object)
    label_array = np.asarray(labels, dtype=object)
    groups = []
    for name in order:
        rows = np.flatnonzero(label_array == name)
        with warnings.catch_warnings():
            # Absent classes are expected inside a group; the group lists the classes it has.
            warnings.simplefilter("ignore")
            point = compute_metrics(y[rows], probs[rows], class_names)
            ci = bootstrap_metrics(
                y[rows], probs[rows], list(keys[rows]), class_names, n_boot=n_boot, seed=seed
            )
        present = [class_names[k] for k in sorted(set(int(v) for v in y[rows]))]
        groups.append(
            {
                "group": name,
                "n_samples": len(rows),
                "n_patients": len({k for k in keys[rows] if k}),
                "classes": present,
                "metrics": {m: point["headline"][m] for m in _SHOWN},
                "ci": {m: ci["headline"][m] for m in _SHOWN},
                "recall": {c: point["per_class"][c]["recall"] for c in present},
            }
        )
    return {
        "column": spec.column,
        "edges": list(edges) or None,
        "edges_from": "given" if spec.edges else ("quartiles" if edges else None),
        "groups": groups,
        "note": "metrics within each group; classes absent from a group are left out of its "
        "macro averages; intervals resample patients within the group",
    }
