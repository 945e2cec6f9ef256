"""``meguri monitor run|show|report|alerts|exporter`` and ``meguri feedback``."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from meguri.cli._here import workspace as _workspace
from meguri.errors import ConfigError

if TYPE_CHECKING:
    from meguri.store import Workspace
    from meguri.store.metadata import MonitorWindow

console = Console(width=None if sys.stdout.isatty() else 160)
Env = Annotated[str, typer.Option("--env", "-e", help="The deployment environment.")]
When = Annotated[
    str | None,
    typer.Option(help="ISO time (2026-11-27T10:00) or a duration back from now (6h, 2d)."),
]

monitor_app = typer.Typer(
    help="Monitor deployments: windows of quality, drift, accuracy and latency; alerts.",
    no_args_is_help=True,
)

#: The figures `meguri monitor show` prints as columns, in order.
SHOWN = (
    ("requests", "req", "{:.0f}"),
    ("error_rate", "err", "{:.1%}"),
    ("latency_p99_ms", "p99 ms", "{:.1f}"),
    ("quality.missing_rate", "null", "{:.0%}"),
    ("quality.out_of_range_rate", "out", "{:.0%}"),
    ("drift.share", "drift", "{:.0%}"),
    ("labels", "labels", "{:.0f}"),
)


def register(app: typer.Typer) -> None:
    app.add_typer(monitor_app, name="monitor")
    app.command("feedback")(feedback_cmd)


def parse_when(value: str | None, option: str) -> float | None:
    """Seconds since the epoch from an ISO time (UTC unless it says) or ``6h``-style ago."""
    if value is None:
        return None
    from meguri.spec import duration_seconds

    try:
        return time.time() - duration_seconds(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{option} {value!r} is neither an ISO time (2026-11-27T10:00) nor a duration "
            "back from now (6h, 2d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _deployed(ws: Workspace, env: str) -> None:
    """Refuse an environment the project never deployed to, naming those it did: a typo would
    otherwise read as an environment without windows (an empty table, an empty report)."""
    from meguri.monitor._windows import check_environment

    check_environment(ws, env)


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def _accuracy_columns(windows: list[MonitorWindow]) -> list[str]:
    names = {k for w in windows for k in w.figures if k.startswith("accuracy.")}
    preferred = [f"accuracy.{m}" for m in ("roc_auc", "accuracy", "f1", "rmse", "mae")]
    return [n for n in preferred if n in names][:2]


def windows_table(windows: list[MonitorWindow], title: str) -> Table:
    """One row per window: the headline figures (the CLI and the demo print it): requests,
    error rate, p99 latency, missing and out-of-range shares, share of drifted columns, labels
    and accuracy, and the drifted columns by name, up to three."""
    table = Table(title=title)
    accuracy = _accuracy_columns(windows)
    table.add_column("start (UTC)", no_wrap=True)
    table.add_column("rows", justify="right")
    for _, header, _ in SHOWN:
        table.add_column(header, justify="right")
    table.add_column("pred. drift")
    for name in accuracy:
        table.add_column(name.removeprefix("accuracy."), justify="right")
    table.add_column("drifted columns")
    for w in windows:
        drift = w.details.get("drift", {})
        drifted = [c["name"] for c in drift.get("columns", []) if c.get("drifted")]
        shown = ", ".join(drifted[:3]) + (f" +{len(drifted) - 3}" if len(drifted) > 3 else "")
        prediction = drift.get("prediction") or {}
        table.add_row(
            _when(w.start)[5:],
            str(w.rows),
            *[_cell(w.figures.get(key), form) for key, _, form in SHOWN],
            ("yes" if prediction.get("drifted") else "no") if prediction else "-",
            *[_cell(w.figures.get(name), "{:.3f}") for name in accuracy],
            shown or (f"(skipped: {drift['skipped']})" if "skipped" in drift else "-"),
        )
    return table


def alerts_table(alerts: list[Any], title: str = "alerts") -> Table:
    table = Table(title=title)
    for column in ("id", "rule", "environment", "severity", "state", "value", "since", "retrain"):
        table.add_column(column)
    for a in alerts:
        retrain = a.detail.get("retrain", {})
        outcome = retrain.get("outcome", "-") if isinstance(retrain, dict) else "-"
        state = "[red]firing[/]" if a.state == "firing" else "resolved"
        table.add_row(
            a.id, a.rule, a.environment, a.severity, state, _cell(a.value, "{:.4g}"),
            _when(a.started_at), outcome,
        )  # fmt: skip
    return table


@monitor_app.command("run")
def run_cmd(
    env: Env,
    since: When = None,
    until: When = None,
    no_alerts: Annotated[bool, typer.Option("--no-alerts", help="Only compute windows.")] = False,
    no_retrain: Annotated[
        bool, typer.Option("--no-retrain", help="Alert, but never start retraining.")
    ] = False,
) -> None:
    """Compute the monitor windows of ENV from its captures, then evaluate the alert rules."""
    from meguri.monitor import run_monitor

    ws = _workspace()
    result = run_monitor(
        env,
        workspace=ws,
        since=parse_when(since, "--since"),
        until=parse_when(until, "--until"),
        alerts=not no_alerts,
        retrain=not no_retrain,
        reporter=lambda message: console.print(f"[dim]{message}[/]", highlight=False),
    )
    if not result.windows:
        console.print(f"no captured predictions or samples for {env} in that range")
        return
    console.print(windows_table(result.windows, f"{env}: {len(result.windows)} window(s)"))
    if result.alerts:
        console.print(alerts_table(result.alerts, "alerts that changed"))
    for retraining in result.retraining:
        console.print(f"retraining for {retraining.alert_id}: {retraining.outcome}")


@monitor_app.command("show")
def show_cmd(
    env: Env,
    since: When = None,
    limit: Annotated[int, typer.Option(help="The newest N windows.")] = 24,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """The stored windows of ENV (newest last) and its firing alerts."""
    ws = _workspace()
    _deployed(ws, env)
    windows = ws.metadata.monitor.windows(
        ws.project.id, env, since=parse_when(since, "--since"), limit=limit
    )
    from meguri.store.metadata import AlertState

    alerts = ws.metadata.monitor.alerts(ws.project.id, environment=env, state=AlertState.FIRING)
    if as_json:
        from meguri.monitor import monitor_json

        typer.echo(json.dumps(monitor_json(windows, alerts, project=ws.project.name,
                                           environment=env), indent=2))  # fmt: skip
        return
    if not windows:
        console.print(f"no windows for {env} yet; run `meguri monitor run --env {env}`")
        return
    console.print(windows_table(windows, f"{env}: the last {len(windows)} window(s)"))
    if alerts:
        console.print(alerts_table(alerts, "firing alerts"))


@monitor_app.command("report")
def report_cmd(
    env: Env,
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path(
        "monitor-report.html"
    ),
    since: When = None,
    until: When = None,
    as_json: Annotated[bool, typer.Option("--json", help="Write JSON instead of HTML.")] = False,
) -> None:
    """Write the monitoring report of ENV (drift over time, distributions, accuracy, latency)."""
    from meguri.monitor import write_monitor_report

    ws = _workspace()
    _deployed(ws, env)
    path = write_monitor_report(
        env,
        output,
        workspace=ws,
        since=parse_when(since, "--since"),
        until=parse_when(until, "--until"),
        as_json=as_json,
    )
    console.print(f"wrote {path}")


@monitor_app.command("alerts")
def alerts_cmd(
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")] = None,
    state: Annotated[str | None, typer.Option(help="firing or resolved.")] = None,
    limit: Annotated[int, typer.Option(help="The newest N alerts.")] = 50,
) -> None:
    """The alerts of the project, newest first."""
    if state not in (None, "firing", "resolved"):
        raise ConfigError(f"--state {state!r}: use firing or resolved")
    from meguri.store.metadata import AlertState

    ws = _workspace()
    if env is not None:
        _deployed(ws, env)
    chosen = AlertState(state) if state is not None else None
    found = ws.metadata.monitor.alerts(ws.project.id, environment=env, state=chosen, limit=limit)
    if not found:
        console.print("no alerts")
        return
    console.print(alerts_table(found))


@monitor_app.command("exporter")
def exporter_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of GET /metrics.")] = 9464,
) -> None:
    """Serve the window figures and alert states at /metrics for Prometheus to scrape."""
    from meguri.monitor import serve_exporter

    ws = _workspace()
    console.print(f"serving http://{host}:{port}/metrics (Ctrl-C to stop)")
    serve_exporter(ws, host=host, port=port)


def feedback_cmd(
    source: Annotated[
        str | None,
        typer.Argument(help="CSV, Parquet or JSON-lines file: request_id, [row,] label."),
    ] = None,
    env: Env = "production",
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="One record: its request id.")
    ] = None,
    label: Annotated[str | None, typer.Option(help="One record: the true label.")] = None,
    row: Annotated[int, typer.Option(help="One record: the row in its request.")] = 0,
    no_update: Annotated[
        bool, typer.Option("--no-update", help="Do not recompute the windows it labels.")
    ] = False,
) -> None:
    """Record ground truth for captured predictions (a file, or one --request-id/--label)."""
    from meguri.monitor import record_feedback, relabel_windows

    if (source is None) == (request_id is None):
        raise ConfigError("give a feedback FILE, or --request-id and --label for one record")
    if request_id is not None and label is None:
        raise ConfigError("--request-id needs --label (the true label of that prediction)")
    ws = _workspace()
    records: Any = (
        source if source is not None else [{"request_id": request_id, "row": row, "label": label}]
    )
    result = record_feedback(ws, env, records)
    console.print(f"recorded {result.rows} label(s) for {env}")
    if not no_update:
        windows = relabel_windows(ws, env, result)
        if windows:
            console.print(windows_table(windows, "windows with new labels"))
