"""Phase 3, model development: run tracking, evaluation (metrics, bootstrap intervals, plots)
and error analysis (slices, worst rows, fairness gaps)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from meguri.store.metadata.repositories.runs import MetricHistory
from meguri.train._tracking import (
    ActiveRun,
    active_run,
    fail_stale_runs,
    get_metric_history,
    get_run,
    search_runs,
    start_run,
)

if TYPE_CHECKING:
    from meguri.train._evaluate import evaluate, reliability_curve
    from meguri.train._fairness import FairnessReport, fairness_report
    from meguri.train._metrics_bootstrap import bootstrap_ci
    from meguri.train._plots import figures
    from meguri.train._slices import fairness_gaps, slice_metrics, worst_rows
    from meguri.train._train import TrainResult, train
    from meguri.train._tune import TrialSummary, TuneResult, tune

# Evaluation pulls in scikit-learn and Plotly: loaded on first use, so tracking starts fast.
_LAZY = {
    "evaluate": "_evaluate",
    "reliability_curve": "_evaluate",
    "bootstrap_ci": "_metrics_bootstrap",
    "figures": "_plots",
    "fairness_gaps": "_slices",
    "fairness_report": "_fairness",
    "FairnessReport": "_fairness",
    "slice_metrics": "_slices",
    "worst_rows": "_slices",
    "train": "_train",
    "TrainResult": "_train",
    "tune": "_tune",
    "TuneResult": "_tune",
    "TrialSummary": "_tune",
}

__all__ = [
    "ActiveRun",
    "FairnessReport",
    "MetricHistory",
    "TrainResult",
    "TrialSummary",
    "TuneResult",
    "active_run",
    "bootstrap_ci",
    "evaluate",
    "fail_stale_runs",
    "fairness_gaps",
    "fairness_report",
    "figures",
    "get_metric_history",
    "get_run",
    "reliability_curve",
    "search_runs",
    "slice_metrics",
    "start_run",
    "train",
    "tune",
    "worst_rows",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'meguri.train' has no attribute {name!r}")
    return getattr(import_module(f"meguri.train.{module}"), name)
