"""Phase 5, monitoring: windows of captured traffic, drift, data quality, accuracy with delayed
labels, alerts with notifiers, the closed loop and reports.

Names load lazily so that ``import meguri.monitor`` stays cheap::

    from meguri.monitor import run_monitor, record_feedback, write_monitor_report

    result = run_monitor("production")          # windows computed, stored, alerts evaluated
    for window in result.windows:
        print(window.start, window.figures["drift.share"], window.figures.get("accuracy.roc_auc"))
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meguri.data._reference import DriftReference
    from meguri.errors import MonitorError
    from meguri.monitor._alerts import apply_alerts
    from meguri.monitor._api import relabel_windows, write_monitor_report
    from meguri.monitor._capture import capture_url
    from meguri.monitor._drift import DriftReport, drift_report
    from meguri.monitor._exporter import render_monitor_metrics, serve_exporter
    from meguri.monitor._feedback import FeedbackResult, record_feedback
    from meguri.monitor._loop import Retraining, retrain_on_alerts
    from meguri.monitor._report import monitor_json, render_monitor_html
    from meguri.monitor._windows import MonitorResult, criterion_figure, run_monitor

__all__ = [
    "DriftReference",
    "DriftReport",
    "FeedbackResult",
    "MonitorError",
    "MonitorResult",
    "Retraining",
    "apply_alerts",
    "capture_url",
    "criterion_figure",
    "drift_report",
    "monitor_json",
    "record_feedback",
    "relabel_windows",
    "render_monitor_html",
    "render_monitor_metrics",
    "retrain_on_alerts",
    "run_monitor",
    "serve_exporter",
    "write_monitor_report",
]

_LAZY = {
    "DriftReference": "meguri.data._reference",
    "MonitorError": "meguri.errors",
    "apply_alerts": "meguri.monitor._alerts",
    "relabel_windows": "meguri.monitor._api",
    "write_monitor_report": "meguri.monitor._api",
    "capture_url": "meguri.monitor._capture",
    "DriftReport": "meguri.monitor._drift",
    "drift_report": "meguri.monitor._drift",
    "render_monitor_metrics": "meguri.monitor._exporter",
    "serve_exporter": "meguri.monitor._exporter",
    "FeedbackResult": "meguri.monitor._feedback",
    "record_feedback": "meguri.monitor._feedback",
    "Retraining": "meguri.monitor._loop",
    "retrain_on_alerts": "meguri.monitor._loop",
    "monitor_json": "meguri.monitor._report",
    "render_monitor_html": "meguri.monitor._report",
    "MonitorResult": "meguri.monitor._windows",
    "criterion_figure": "meguri.monitor._windows",
    "run_monitor": "meguri.monitor._windows",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'meguri.monitor' has no attribute {name!r}")
    return getattr(import_module(module), name)
