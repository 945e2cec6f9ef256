"""Monitor windows: what a deployment saw over each period, computed from its captures.

``meguri monitor run --env production`` (:func:`run_monitor`) reads the environment's capture
folder (predictions, system samples, ground-truth feedback; :mod:`meguri.monitor._capture`)
over a time range, cuts it into windows of ``monitor.window`` (aligned to the epoch, as
CloudWatch periods are: an hourly window starts on the hour) and computes for each:

* the system figures of the serving workers (requests, throughput, error rate by code,
  latency quantiles, CPU and memory);
* data quality against the training baseline (:mod:`meguri.monitor._quality`);
* per-column drift, prediction drift and dataset drift against the model version's stored
  reference (:mod:`meguri.monitor._drift`; the reference is read from the package, never
  recomputed from training data);
* accuracy once labels have arrived: the metrics of the labelled predictions (the same
  :func:`meguri.train.evaluate` as at training), each production success criterion checked
  and stored as a :class:`~meguri.store.metadata.CheckResult` on the window.

Windows are saved in one batch (recomputing a window replaces it: late feedback updates the
accuracy of the windows its predictions fell in), then the alert rules are evaluated over the
newest windows (:mod:`meguri.monitor._alerts`), and an alert whose rule says ``retrain``
starts the closed loop (:mod:`meguri.monitor._loop`).

With canaries several model versions share a window; quality and drift are judged against the
reference of the version that answered most of its rows (named in ``details``), accuracy over
all labelled rows and per version.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from meguri.errors import ConfigError, DataError, MonitorError
from meguri.monitor._baseline import ModelBaseline, model_baseline
from meguri.monitor._capture import (
    between,
    capture_keys,
    capture_url,
    scan_feedback,
    scan_predictions,
    scan_system,
    system_figures,
)
from meguri.monitor._quality import quality_figures
from meguri.spec import MonitorSpec, ProjectSpec, SuccessCriterion
from meguri.store import Workspace, default_workspace
from meguri.store.metadata import CheckResult, MonitorWindow
from meguri.store.metadata.repositories.monitor import NewWindow

__all__ = [
    "MIN_DRIFT_ROWS",
    "MonitorResult",
    "check_environment",
    "criterion_figure",
    "run_monitor",
    "window_bounds",
    "workspace_spec",
]

#: Fewer captured rows than this in a window: no drift verdict (too few to tell).
MIN_DRIFT_ROWS = 30
Reporter = Callable[[str], None]


@dataclass(frozen=True)
class MonitorResult:
    environment: str
    windows: list[MonitorWindow]
    alerts: list[Any] = field(default_factory=list)
    retraining: list[Any] = field(default_factory=list)


#: Production criteria whose metric names a window figure other than ``accuracy.<metric>``.
_CRITERION_FIGURES = {"drift_share": "drift.share", "dataset_drift": "drift.dataset"}
_SYSTEM_FIGURES = frozenset(
    {"error_rate", "throughput_rps", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
     "cpu_percent", "memory_mb"}
)  # fmt: skip


def criterion_figure(metric: str) -> str:
    """The window figure a production success criterion on ``metric`` is checked against:
    ``drift_share`` → ``drift.share``, a system figure by its own name (``latency_p95_ms``),
    any other metric → ``accuracy.<metric>`` (measured once labels arrive)."""
    if metric in _CRITERION_FIGURES:
        return _CRITERION_FIGURES[metric]
    return metric if metric in _SYSTEM_FIGURES else f"accuracy.{metric}"


def window_bounds(since: float, until: float, width: float) -> list[tuple[float, float]]:
    """The epoch-aligned windows of ``width`` seconds covering ``[since, until)``."""
    if width <= 0:
        raise ConfigError("monitor.window must be a positive duration (e.g. 1h)")
    first = math.floor(since / width) * width
    count = max(1, math.ceil((until - first) / width))
    return [(first + i * width, first + (i + 1) * width) for i in range(count)]


def workspace_spec(ws: Workspace) -> tuple[ProjectSpec | None, str | None]:
    """The workspace's ``meguri.yaml`` (None without one) and the id of its newest stored
    spec version (the one checks are recorded against)."""
    from meguri.spec import load_spec
    from meguri.store._workspace import SPEC_FILE

    path = ws.root / SPEC_FILE
    if not path.is_file():
        return None, None
    spec = load_spec(path)
    latest = ws.metadata.specs.latest(ws.project.id)
    return spec, (latest.id if latest is not None else None)


def run_monitor(
    environment: str,
    *,
    workspace: Workspace | None = None,
    since: float | None = None,
    until: float | None = None,
    alerts: bool = True,
    retrain: bool = True,
    spec: ProjectSpec | None = None,
    reporter: Reporter | None = None,
) -> MonitorResult:
    """Compute, store and alert on the windows of ``environment`` over ``[since, until)``.

    ``since`` defaults to the start of the newest stored window (it is recomputed: it may have
    been partial), or the first capture; ``until`` to now. ``spec`` replaces the workspace's
    ``meguri.yaml`` (its monitor section, criteria and deploy settings).
    """
    ws = workspace or default_workspace()
    say = reporter or (lambda _message: None)
    found, spec_version = workspace_spec(ws)
    spec = spec or found
    settings = spec.monitor if spec is not None else MonitorSpec()
    check_environment(ws, environment)
    url = capture_url(ws, environment)
    until = time.time() if until is None else until
    since = _default_since(ws, environment, url) if since is None else since
    if since is None or since >= until:
        return MonitorResult(environment, [])
    bounds = window_bounds(since, until, settings.window_seconds())
    start, end = bounds[0][0], bounds[-1][1]
    say(f"reading captures of {environment} from {_iso(start)} to {_iso(end)}")
    keys = capture_keys(ws)
    predictions = _labelled(
        scan_predictions(url, start, end, keys=keys), scan_feedback(url, keys=keys)
    ).collect()
    system = scan_system(url, start, end, keys=keys).collect()
    computer = _WindowComputer(ws, settings, spec, spec_version)
    new = [
        w
        for lo, hi in bounds
        if (w := computer.window(environment, lo, hi, predictions, system)) is not None
    ]
    saved = ws.metadata.monitor.save_windows(new) if new else []
    say(f"{len(saved)} window(s) computed")
    computer.record_checks(saved)
    result = MonitorResult(environment, saved)
    if alerts and saved:
        result = _alert(ws, environment, settings, spec, result, retrain=retrain, say=say)
    return result


def _alert(
    ws: Workspace,
    environment: str,
    settings: MonitorSpec,
    spec: ProjectSpec | None,
    result: MonitorResult,
    *,
    retrain: bool,
    say: Reporter,
) -> MonitorResult:
    from meguri.monitor._alerts import apply_alerts

    if not settings.alerts:
        return result
    criteria = spec.criteria_on("production") if spec is not None else []
    # the store's recent history: a rule on labels skips windows without any
    changed = apply_alerts(ws, ws.project.id, environment, settings, criteria)
    started = []
    if retrain and spec is not None:
        from meguri.monitor._loop import retrain_on_alerts
        from meguri.store.metadata import AlertState

        # every firing alert, not only those that changed now: one that fired while retraining
        # was off (``meguri feedback``, ``--no-retrain``) still gets its retraining once
        firing = ws.metadata.monitor.alerts(
            ws.project.id, environment=environment, state=AlertState.FIRING
        )
        started = retrain_on_alerts(ws, spec, environment, firing, reporter=say)
    return MonitorResult(environment, result.windows, list(changed), started)


def check_environment(ws: Workspace, environment: str) -> None:
    known = [d.environment for d in ws.metadata.deployments.list(ws.project.id)]
    if environment not in known:
        raise MonitorError(
            f"no deployment to environment {environment!r} in this project (deployed: "
            f"{', '.join(sorted(known)) or 'none'}); deploy one with "
            f"`meguri deploy MODEL@VERSION --env {environment}` or name one of those"
        )


def _default_since(ws: Workspace, environment: str, url: str) -> float | None:
    latest = ws.metadata.monitor.windows(ws.project.id, environment, limit=1)
    if latest:
        return latest[-1].start
    keys = capture_keys(ws)
    first = scan_predictions(url, keys=keys).select(pl.col("time").min()).collect().item()
    if first is None:
        first = scan_system(url, keys=keys).select(pl.col("time").min()).collect().item()
    return None if first is None else first.timestamp()


def _labelled(predictions: pl.LazyFrame, feedback: pl.LazyFrame) -> pl.LazyFrame:
    """The predictions with their ``label`` (null until feedback names them)."""
    labels = feedback.select("request_id", "row", "label")
    return predictions.join(labels, on=["request_id", "row"], how="left")


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


class _WindowComputer:
    """Computes windows, loading each model version's baseline once."""

    def __init__(
        self,
        ws: Workspace,
        settings: MonitorSpec,
        spec: ProjectSpec | None,
        spec_version: str | None,
    ) -> None:
        self.ws, self.settings, self.spec, self.spec_version = ws, settings, spec, spec_version
        self.baselines: dict[str, ModelBaseline] = {}

    def baseline(self, ref: str) -> ModelBaseline:
        if ref not in self.baselines:
            self.baselines[ref] = model_baseline(self.ws, ref)
        return self.baselines[ref]

    def window(
        self,
        environment: str,
        start: float,
        end: float,
        predictions: pl.DataFrame,
        system: pl.DataFrame,
    ) -> NewWindow | None:
        rows = between(predictions, start, end)
        samples = between(system, start, end)
        if rows.is_empty() and samples.is_empty():
            return None
        figures: dict[str, float | None] = dict(system_figures(samples, start, end))
        details: dict[str, Any] = {"system": {"samples": samples.height}}
        versions = _versions(rows)
        if versions:
            primary = max(versions, key=lambda ref: versions[ref])
            baseline = self.baseline(primary)
            details["reference_version"] = primary
            self._data(rows, baseline, figures, details)
            self._accuracy(rows, versions, figures, details)
        return NewWindow(
            project_id=self.ws.project.id,
            environment=environment,
            start=start,
            end=end,
            rows=rows.height,
            model_versions=versions,
            figures=figures,
            details=details,
        )

    def _data(
        self,
        rows: pl.DataFrame,
        baseline: ModelBaseline,
        figures: dict[str, float | None],
        details: dict[str, Any],
    ) -> None:
        inputs = [c for c in baseline.signature.names if c in rows.columns]
        errors = {
            k.removeprefix("errors."): v or 0.0
            for k, v in figures.items()
            if k.startswith("errors.")
        }
        quality, detail = quality_figures(
            rows.select(inputs),
            baseline.quality,
            requests=figures.get("requests"),
            errors=errors,
        )
        figures.update(quality)
        details["quality"] = detail
        if rows.height < MIN_DRIFT_ROWS or baseline.reference is None:
            why = "no stored reference" if baseline.reference is None else "too few rows"
            details["drift"] = {"skipped": why, "current_rows": rows.height}
            return
        from meguri.monitor._drift import drift_report

        own = rows.filter(pl.col("model_version") == baseline.version_label)
        predictions = own.get_column("prediction").to_numpy() if own.height else None
        report = drift_report(
            baseline.reference,
            rows.select(inputs),
            self.settings.drift,
            predictions=predictions,
            reference_sample=baseline.sample,
        ).to_dict()
        details["drift"] = report
        figures.update(_drift_figures(report))

    def _accuracy(
        self,
        rows: pl.DataFrame,
        versions: dict[str, int],
        figures: dict[str, float | None],
        details: dict[str, Any],
    ) -> None:
        labelled = rows.filter(pl.col("label").is_not_null())
        figures["labels"] = float(labelled.height)
        if labelled.is_empty():
            return
        baseline = self.baseline(max(versions, key=lambda ref: versions[ref]))
        metrics = _metrics(labelled, baseline)
        figures.update({f"accuracy.{name}": value for name, value in metrics.items()})
        per_version = {}
        for ref in versions:
            name, _, number = ref.rpartition("@")
            own = labelled.filter(
                (pl.col("model_name") == name) & (pl.col("model_version") == number)
            )
            if own.height:
                per_version[ref] = {"labels": own.height, **_metrics(own, self.baseline(ref))}
        details["accuracy"] = {"labels": labelled.height, "by_version": per_version}

    def record_checks(self, windows: Sequence[MonitorWindow]) -> None:
        """Each production criterion measured on a window with labels: a stored check."""
        if self.spec is None:
            return
        criteria = self.spec.criteria_on("production")
        results = [
            _check(self.ws, self.spec_version, criterion, window)
            for window in windows
            for criterion in criteria
            if window.figures.get(criterion_figure(criterion.metric)) is not None
        ]
        if results:
            self.ws.metadata.checks.record(results)


def _versions(rows: pl.DataFrame) -> dict[str, int]:
    if rows.is_empty():
        return {}
    counts = rows.group_by("model_name", "model_version").len()
    return {
        f"{name}@{version}": int(n)
        for name, version, n in counts.sort("model_name", "model_version").iter_rows()
    }


def _drift_figures(report: dict[str, Any]) -> dict[str, float | None]:
    columns = report.get("columns", [])
    figures: dict[str, float | None] = {
        "drift.share": report.get("share"),
        "drift.dataset": 1.0 if report.get("dataset_drift") else 0.0,
        "drift.columns": float(sum(1 for c in columns if c.get("drifted"))),
    }
    figures.update({f"drift.column.{c['name']}": c.get("statistic") for c in columns})
    if report.get("prediction"):
        figures["drift.prediction"] = report["prediction"].get("statistic")
    if report.get("multivariate"):
        figures["drift.multivariate"] = report["multivariate"].get("roc_auc")
    return figures


def _metrics(labelled: pl.DataFrame, baseline: ModelBaseline) -> dict[str, float]:
    from meguri.train import evaluate

    output = baseline.signature.output
    if output.task == "regression":
        truth = labelled.get_column("label").cast(pl.Float64, strict=False).to_numpy()
        keep = np.isfinite(truth)
        predicted = labelled.get_column("prediction").cast(pl.Float64).to_numpy()
        return evaluate("regression", truth[keep], predicted[keep])
    task = "binary_classification" if output.task == "binary" else "multiclass_classification"
    labels = [str(label) for label in output.labels]
    truth = labelled.get_column("label").cast(pl.String).to_numpy()
    keep = np.isin(truth, labels)
    predicted = labelled.get_column("prediction").cast(pl.String).to_numpy()
    columns = [f"probability_{label}" for label in output.labels]
    proba = None
    if all(c in labelled.columns for c in columns):
        proba = labelled.select(columns).to_numpy()[keep]
    if not keep.any():
        return {}
    try:
        return evaluate(task, truth[keep], predicted[keep], proba, labels=labels)
    except DataError:  # e.g. every label of the window is one class: no ROC AUC to compute
        return evaluate(task, truth[keep], predicted[keep], None, labels=labels)


def _check(
    ws: Workspace, spec_version: str | None, criterion: SuccessCriterion, window: MonitorWindow
) -> CheckResult:
    value = window.figures.get(criterion_figure(criterion.metric))
    return CheckResult(
        id="",
        project_id=ws.project.id,
        spec_version_id=spec_version,
        criterion_id=criterion.id,
        stage="production",
        metric=criterion.metric,
        comparison=criterion.comparison,
        threshold=criterion.threshold,
        value=value,
        passed=value is not None and criterion.check(value),
        subject_kind="monitor_window",
        subject_id=window.id,
        created_at=0.0,
        created_by=ws.user,
        evidence={
            "environment": window.environment,
            "start": window.start,
            "end": window.end,
            "labels": window.figures.get("labels"),
            "model_versions": dict(window.model_versions),
        },
    )
