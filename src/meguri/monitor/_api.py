"""Monitoring entry points over the stored windows: reports, and windows relabelled by feedback."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from meguri.monitor._capture import capture_keys, capture_url, scan_predictions
from meguri.store import Workspace, default_workspace

if TYPE_CHECKING:
    from meguri.monitor._feedback import FeedbackResult
    from meguri.spec import ProjectSpec
    from meguri.store.metadata import MonitorWindow

__all__ = ["relabel_windows", "write_monitor_report"]


def write_monitor_report(
    environment: str,
    output: str | Path,
    *,
    workspace: Workspace | None = None,
    since: float | None = None,
    until: float | None = None,
    as_json: bool = False,
) -> Path:
    """Write the HTML (or JSON) monitoring report of ``environment``'s stored windows over
    ``[since, until)`` to ``output`` (written whole: a temporary file renamed)."""
    from meguri.monitor._report import monitor_json, render_monitor_html
    from meguri.monitor._windows import workspace_spec

    ws = workspace or default_workspace()
    windows = ws.metadata.monitor.windows(ws.project.id, environment, since=since, until=until)
    alerts = ws.metadata.monitor.alerts(ws.project.id, environment=environment)
    spec, _ = workspace_spec(ws)
    criteria = spec.criteria_on("production") if spec is not None else []
    if as_json:
        document = monitor_json(
            windows, alerts, project=ws.project.name, environment=environment, criteria=criteria
        )
        text = json.dumps(document, indent=2)
    else:
        text = render_monitor_html(
            windows, alerts, project=ws.project.name, environment=environment, criteria=criteria
        )
    path = Path(output)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)
    return path


def relabel_windows(
    ws: Workspace,
    environment: str,
    feedback: FeedbackResult,
    *,
    alerts: bool = True,
    spec: ProjectSpec | None = None,
) -> list[MonitorWindow]:
    """Recompute the windows holding the predictions ``feedback`` just labelled, so their
    accuracy figures count the new labels; with ``alerts``, the rules are evaluated too
    (retraining waits for the next ``meguri monitor run``). ``spec`` as for
    :func:`~meguri.monitor.run_monitor`."""
    from meguri.monitor._windows import run_monitor

    if not feedback.request_ids:
        return []
    times = (
        scan_predictions(capture_url(ws, environment), keys=capture_keys(ws))
        .filter(pl.col("request_id").is_in(list(feedback.request_ids)))
        .select(pl.col("time").min().alias("first"), pl.col("time").max().alias("last"))
        .collect()
    )
    first, last = times.row(0)
    if first is None:
        return []
    result = run_monitor(
        environment,
        workspace=ws,
        since=first.timestamp(),
        until=last.timestamp() + 1e-3,
        alerts=alerts,
        retrain=False,
        spec=spec,
    )
    return result.windows
