"""Honest evaluation: metrics with patient-bootstrap CIs, plots, HTML report, model comparison.

The numpy-only parts (metrics, calibration, bootstrap) load eagerly; the parts that draw
(api, plots, report, compare pull in matplotlib and seaborn, about a second) load on first
use, so `import lungcancer.evaluate` stays cheap for code that only needs numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lungcancer.evaluate.bootstrap import bootstrap_metrics
from lungcancer.evaluate.metrics import (
    HEADLINE_METRICS,
    EvaluationError,
    UndefinedMetricWarning,
    compute_metrics,
)
from lungcancer.lazy import lazy_exports

if TYPE_CHECKING:
    from lungcancer.evaluate.api import (
        EvalResult,
        evaluate_predictions,
        evaluate_run,
        load_metrics,
    )
    from lungcancer.evaluate.compare import (
        CompareResult,
        compare_runs,
        comparison_section,
        write_combined_report,
    )
    from lungcancer.evaluate.report import ReportSection, model_section, write_report

_LAZY = {
    "EvalResult": "api",
    "evaluate_predictions": "api",
    "evaluate_run": "api",
    "load_metrics": "api",
    "CompareResult": "compare",
    "compare_runs": "compare",
    "comparison_section": "compare",
    "write_combined_report": "compare",
    "ReportSection": "report",
    "model_section": "report",
    "write_report": "report",
}

__all__ = [
    "HEADLINE_METRICS",
    "CompareResult",
    "EvalResult",
    "EvaluationError",
    "ReportSection",
    "UndefinedMetricWarning",
    "bootstrap_metrics",
    "compare_runs",
    "comparison_section",
    "compute_metrics",
    "evaluate_predictions",
    "evaluate_run",
    "load_metrics",
    "model_section",
    "write_combined_report",
    "write_report",
]


__getattr__ = lazy_exports(__name__, _LAZY)
