"""Phase 3, model development: run tracking now; estimators, tuning and evaluation to come."""

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

__all__ = [
    "ActiveRun",
    "MetricHistory",
    "active_run",
    "fail_stale_runs",
    "get_metric_history",
    "get_run",
    "search_runs",
    "start_run",
]
