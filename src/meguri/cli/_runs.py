"""``meguri runs list|show|compare|history|leaderboard``: browse tracked runs."""

from __future__ import annotations

import datetime as dt
import math
import sys
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from meguri.cli._here import workspace as _workspace
from meguri.store import Workspace
from meguri.store.metadata import Run

runs_app = typer.Typer(
    help="Browse tracked runs: list, show, compare, metric history, leaderboard.",
    no_args_is_help=True,
)
# Piped output (logs, CI) is not squeezed to 80 columns; a terminal keeps its own width.
console = Console(width=None if sys.stdout.isatty() else 160)

_STATUS_STYLE = {"finished": "green", "running": "cyan", "failed": "red", "killed": "yellow"}


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    return f"{value:.{digits}g}" if abs(value) < 1e6 else f"{value:.4e}"


def _bytes(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size //= 1024
    return f"{size} TiB"


def _headline_metrics(keys: set[str], count: int = 3) -> list[str]:
    """The metrics worth a column: test first, then validation, then the rest; no per-fold."""

    def rank(key: str) -> tuple[int, str]:
        stage = key.split("/", 1)[0] if "/" in key else ""
        order = {"test": 0, "validation": 1, "": 2}.get(stage, 3)
        return (order + (4 if key.endswith("_std") else 0), key)

    return sorted(keys, key=rank)[:count]


def _status(run: Run) -> str:
    return f"[{_STATUS_STYLE.get(run.status.value, 'white')}]{run.status.value}[/]"


@runs_app.command("list")
def list_runs(
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Only this experiment.")
    ] = None,
    filter: Annotated[
        str | None, typer.Option("--filter", "-f", help='e.g. "metrics.roc_auc > 0.9"')
    ] = None,
    order_by: Annotated[
        list[str] | None, typer.Option("--order-by", "-o", help="e.g. 'metrics.roc_auc desc'")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 20,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", "-m", help="Metric columns to show.")
    ] = None,
) -> None:
    """List runs, newest first (or as ordered), with their metrics."""
    from meguri.train import search_runs

    ws = _workspace()
    found = search_runs(filter, order_by, experiment=experiment, max_results=limit, workspace=ws)
    if not found:
        console.print("No runs yet. Start one with meguri.start_run() or `meguri demo`.")
        return
    metric_keys = metric or _headline_metrics({k for r in found for k in r.metrics})
    table = Table(title=f"Runs of project {ws.project.name}")
    table.add_column("run", no_wrap=True)
    for col in ("name", "status", "started", "wall s"):
        table.add_column(col)
    for key in metric_keys:
        table.add_column(key, justify="right", no_wrap=True)
    for run in found:
        started = _when(run.created_at)[5:16]
        cells = [run.id, run.name, _status(run), started, _num(run.wall_seconds, 3)]
        cells += [_num(run.metrics[k].value) if k in run.metrics else "-" for k in metric_keys]
        table.add_row(*cells)
    console.print(table)


@runs_app.command("show")
def show(run: Annotated[str, typer.Argument(help="Run ID, unique ID prefix, or name.")]) -> None:
    """Everything recorded of one run."""
    from meguri.train import get_run

    ws = _workspace()
    info = get_run(run, workspace=ws)
    head = Table.grid(padding=(0, 2))
    for label, value in (
        ("run", info.id),
        ("name", info.name),
        ("status", _status(info)),
        ("reason", info.status_reason or "-"),
        ("by", info.created_by),
        ("started", _when(info.created_at)),
        ("ended", _when(info.ended_at)),
        ("wall", f"{_num(info.wall_seconds, 3)} s"),
        ("cpu", f"{_num(info.cpu_seconds, 3)} s"),
        ("peak memory", _bytes(info.peak_memory_bytes)),
        ("spec version", info.spec_version_id or "-"),
        ("code version", info.code_version or "-"),
        ("parent", info.parent_run_id or "-"),
    ):
        head.add_row(f"[bold]{label}[/]", value)
    console.print(head)
    _pairs("params", info.params)
    _pairs("tags", info.tags)
    _pairs(
        "metrics (latest)",
        {k: f"{_num(p.value, 6)} @ step {p.step}" for k, p in info.metrics.items()},
    )
    _pairs("inputs", {k: ", ".join(v) for k, v in info.inputs.items()})
    artifacts = ws.metadata.runs.list_artifacts(info.id)
    _pairs(
        "artifacts",
        {a.name: f"{_bytes(a.size)}  {a.media_type}  sha256:{a.digest[:12]}" for a in artifacts},
    )


def _pairs(title: str, values: dict[str, str]) -> None:
    if not values:
        return
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key in sorted(values):
        table.add_row(key, values[key])
    console.print(table)


@runs_app.command("compare")
def compare(
    runs: Annotated[list[str], typer.Argument(help="Two or more run IDs, prefixes or names.")],
    all_rows: Annotated[bool, typer.Option("--all", help="Show equal rows too.")] = False,
) -> None:
    """Params and latest metrics side by side; rows that differ are highlighted."""
    from meguri.train import get_run

    if len(runs) < 2:
        raise typer.BadParameter("give at least two runs to compare", param_hint="RUNS")
    ws = _workspace()
    infos = [get_run(r, workspace=ws) for r in runs]
    table = Table(title="Run comparison")
    table.add_column("")
    for info in infos:
        table.add_column(f"{info.name}\n{info.id}", justify="right")
    metrics = [{k: _num(p.value, 6) for k, p in i.metrics.items()} for i in infos]
    shown = _compare_rows(table, "param", [i.params for i in infos], all_rows)
    shown += _compare_rows(table, "metric", metrics, all_rows)
    if shown:
        console.print(table)
    else:
        console.print("These runs agree on every param and metric (--all lists them).")


def _compare_rows(table: Table, kind: str, values: list[dict[str, str]], all_rows: bool) -> int:
    shown = 0
    for key in sorted({k for v in values for k in v}):
        cells = [v.get(key, "-") for v in values]
        differs = len(set(cells)) > 1
        if differs or all_rows:
            style = "bold yellow" if differs else None
            table.add_row(f"{kind} {key}", *cells, style=style)
            shown += 1
    return shown


@runs_app.command("history")
def history(
    run: Annotated[str, typer.Argument(help="Run ID, unique prefix, or name.")],
    key: Annotated[str, typer.Argument(help="Metric name.")],
    tail: Annotated[int, typer.Option("--tail", "-n", help="Show the last N points.")] = 20,
) -> None:
    """The points of one metric of a run."""
    from meguri.train import get_metric_history, get_run

    ws = _workspace()
    info = get_run(run, workspace=ws)
    hist = get_metric_history(info.id, key, workspace=ws)
    table = Table(title=f"{key} of {info.id} ({len(hist)} points)")
    for col in ("step", "value", "time"):
        table.add_column(col, justify="right")
    for step, value, stamp in list(zip(hist.steps, hist.values, hist.timestamps, strict=True))[
        -tail:
    ]:
        table.add_row(str(step), _num(float(value), 6), _when(float(stamp)))
    console.print(table)


@runs_app.command("leaderboard")
def leaderboard(
    experiment: Annotated[
        str, typer.Option("--experiment", "-e", help="Experiment of the training runs.")
    ] = "train",
    spec_version: Annotated[
        str | None,
        typer.Option(help="Only this spec version: ID, prefix, number, latest or latest~N."),
    ] = None,
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="Every spec version, newest first.")
    ] = False,
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="Runs per spec version.")] = 5,
) -> None:
    """The best training runs of each spec version (by default the newest with runs), ranked
    by the test value of each run's primary metric."""
    from meguri.spec import resolve_spec_version

    ws = _workspace()
    grouped = training_runs_by_version(ws, experiment)
    if not grouped:
        console.print(f"No training runs in experiment {experiment!r} yet; run `meguri train`.")
        return
    if spec_version is not None:
        wanted = resolve_spec_version(ws.metadata, ws.project.id, spec_version).id
        grouped = {wanted: grouped.get(wanted, [])}
    elif not all_versions:
        newest = next(iter(grouped))
        grouped = {newest: grouped[newest]}
    for version, found in grouped.items():
        _print_leaderboard(ws, version, ranked(found)[:top])


def training_runs_by_version(ws: Workspace, experiment: str) -> dict[str | None, list[Run]]:
    """Finished ``meguri train`` runs (those that chose a best model) per spec version, the
    version with the newest run first (runs without a spec version under ``None``)."""
    from meguri.train import search_runs

    found = search_runs(
        "tags.best_algorithm like '%' and status = 'finished'",
        experiment=experiment,
        max_results=100_000,
        workspace=ws,
    )
    grouped: dict[str | None, list[Run]] = {}
    for run in found:  # newest first
        grouped.setdefault(run.spec_version_id, []).append(run)
    return grouped


def _score(run: Run) -> tuple[int, float]:
    """Sort key: runs with their primary test metric first, best first."""
    from meguri.train._train import LOWER_IS_BETTER

    metric = run.params.get("metric", "")
    point = run.metrics.get(f"test/{metric}")
    if point is None or point.value is None or math.isnan(point.value):
        return (1, 0.0)
    return (0, point.value if metric in LOWER_IS_BETTER else -point.value)


def ranked(found: list[Run]) -> list[Run]:
    """Best first by each run's primary metric on test; runs without it last."""
    return sorted(found, key=_score)


def _print_leaderboard(ws: Workspace, version_id: str | None, found: list[Run]) -> None:
    title = "runs without a spec version"
    if version_id is not None:
        version = ws.metadata.specs.get(version_id)
        number = ws.metadata.specs.number(version)
        title = f"spec version #{number} ({version.id}, {_when(version.created_at)})"
    if not found:
        console.print(f"No finished training runs for {title}.")
        return
    table = Table(title=f"Leaderboard: {title}", title_justify="left")
    for col in ("#", "run", "best", "metric", "test", "validation", "cv folds", "gates", "started"):
        justify: Literal["left", "right"] = (
            "right" if col in ("#", "test", "validation") else "left"
        )
        table.add_column(col, justify=justify, no_wrap=True)
    for rank, run in enumerate(found, 1):
        metric = run.params.get("metric", "-")
        test, valid = run.metrics.get(f"test/{metric}"), run.metrics.get(f"validation/{metric}")
        table.add_row(
            str(rank),
            run.id,
            run.tags.get("best_algorithm", "-"),
            metric,
            _num(test.value if test else None),
            _num(valid.value if valid else None),
            f"{run.params.get('cv_folds', '-')} {run.params.get('cv_method', '')}".strip(),
            run.tags.get("gates", "-"),
            _when(run.created_at)[5:16],
        )
    console.print(table)
