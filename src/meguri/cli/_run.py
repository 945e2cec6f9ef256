"""``meguri run``: the whole pipeline of the spec, cached step by step; ``run list/show``."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.status import Status
from rich.table import Table

if TYPE_CHECKING:
    from meguri.deploy._pipeline import PipelineResult, StepResult
    from meguri.store import Workspace
    from meguri.store.metadata import Run

console = Console(width=None if sys.stdout.isatty() else 140)
run_app = typer.Typer(
    help="Run the spec end to end: ingest → validate → prepare → train → evaluate → gate → "
    "register → deploy_staging → pre_promotion → promote (cached by inputs).",
    invoke_without_command=True,
    no_args_is_help=False,
)
_STYLE = {"ran": "green", "cached": "cyan", "failed": "bold red"}


def register(app: typer.Typer) -> None:
    app.add_typer(run_app, name="run")


@run_app.callback()
def run_cmd(
    ctx: typer.Context,
    until: Annotated[str | None, typer.Option(help="Stop after this step.")] = None,
    from_step: Annotated[
        str | None,
        typer.Option("--from", help="Run this step and the ones after it again (the steps "
                     "before it must be cached)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the last failed execution from its failed step.")
    ] = False,
    no_deploy: Annotated[
        bool, typer.Option("--no-deploy", help="Stop after register (no live endpoint).")
    ] = False,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Change a spec setting for this run: KEY=VALUE (YAML value)."),
    ] = None,
    every: Annotated[
        str | None,
        typer.Option(help="Run again on a schedule: a duration (30m, 6h, 1d) or a cron "
                     "expression ('0 3 * * *'); Ctrl-C stops."),
    ] = None,
    scheduled: Annotated[
        bool, typer.Option(help="Run on the spec's pipeline.schedule (a foreground loop).")
    ] = False,
) -> None:  # fmt: skip
    """Run the pipeline once, or on a schedule with --every / --scheduled."""
    if ctx.invoked_subcommand is not None:
        return
    from meguri.spec import find_spec_file
    from meguri.store import open_workspace

    ws = open_workspace()
    text = _with_changes(find_spec_file().read_text(encoding="utf-8"), settings or [])
    options = {"until": until, "from_step": from_step, "deploy": not no_deploy}
    schedule = every or (_spec_schedule(text) if scheduled else None)
    if schedule is None:
        result = _once(text, ws, resume=resume, **options)
        if not result.ok:
            raise typer.Exit(1)
        return
    _loop(schedule, lambda: _once(text, ws, resume=resume, **options))


def _with_changes(text: str, settings: list[str]) -> str:
    """The spec text with each ``--set KEY=VALUE`` applied (validated when the run starts)."""
    if not settings:
        return text
    import yaml

    from meguri.cli._train import _assign, _changes, _one_folds_setting
    from meguri.spec import load_yaml

    data = load_yaml(text)
    for key, value in _changes(settings, None):
        _assign(data, key.split("."), load_yaml(value) if value.strip() else None, key)
        _one_folds_setting(data.get("model"), key)
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def _spec_schedule(text: str) -> str:
    from meguri.errors import SpecError
    from meguri.spec import parse_spec

    schedule = parse_spec(text).pipeline.schedule
    if not schedule:
        raise SpecError(
            "--scheduled: the spec has no pipeline.schedule; add one (e.g. schedule: "
            "'0 3 * * *' or schedule: 1d) or pass --every"
        )
    return schedule


class _RichReporter:
    """Prints one line per step (name, ran/cached/failed, seconds) under a live status."""

    def __init__(self, status: Status) -> None:
        self.status = status

    def start(self, step: str) -> None:
        self.status.update(f"{step}…")

    def message(self, step: str, text: str) -> None:
        self.status.update(f"{step}: {text}…")

    def end(self, result: StepResult) -> None:
        style = _STYLE[result.status]
        mark = {"ran": "✓", "cached": "↺", "failed": "✗"}[result.status]
        console.print(
            f"[{style}]{mark} {result.name:<15} {result.status:<7}[/] {result.seconds:7.2f} s"
            + (f"  [red]{result.error}[/]" if result.error else ""),
            highlight=False,
        )


def _once(text: str, ws: Workspace, *, resume: bool, **options: Any) -> PipelineResult:
    from meguri.deploy._pipeline import run_pipeline

    with console.status("starting the pipeline…") as status:
        reporter = _RichReporter(status)
        result = run_pipeline(text, workspace=ws, resume=resume, reporter=reporter, **options)
    _print_table(result.steps, f"Pipeline run {result.run_id}")
    style = "bold red" if not result.ok else "bold green"
    console.print(f"[{style}]{result.summary()}[/]", highlight=False)
    if not result.ok:
        console.print("fix the cause, then `meguri run --resume` continues from the failed step")
    return result


def _loop(text: str, job: Any) -> None:
    from meguri.deploy._schedule import Schedule, run_schedule

    schedule = Schedule.parse(text)

    def waiting(due: float) -> None:
        when = datetime.fromtimestamp(due).strftime("%Y-%m-%d %H:%M:%S")
        console.print(f"next run at {when} (schedule {schedule.text}; Ctrl-C stops)")

    count = run_schedule(job, schedule, on_wait=waiting)
    console.print(f"schedule stopped after {count} run(s)")


def _outputs_text(outputs: dict[str, Any]) -> str:
    keys = ("ref", "dataset_version", "train_run", "algorithm", "model_version", "passed")
    shown = [f"{k}={outputs[k]}" for k in keys if k in outputs]
    if "parts" in outputs:
        shown.append("parts=" + ",".join(outputs["parts"].values()))
    deployment = outputs.get("deployment")
    if isinstance(deployment, dict):  # deploy_staging: the version and where it is served
        shown += [f"{k}={deployment[k]}" for k in ("ref", "url", "revision") if k in deployment]
    return " ".join(shown)[:80]


def _print_table(steps: list[StepResult], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("step", "status", "seconds", "outputs", "step run"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for s in steps:
        table.add_row(
            s.name,
            f"[{_STYLE[s.status]}]{s.status}[/]",
            f"{s.seconds:.2f}",
            s.error or _outputs_text(s.outputs),
            s.run_id + (f" (from {s.cached_from})" if s.cached_from else ""),
        )
    console.print(table)


# -- browsing executions ---------------------------------------------------------------------


@run_app.command("list")
def list_cmd(
    limit: Annotated[int, typer.Option(help="How many executions, newest first.")] = 20,
) -> None:
    """The pipeline executions of the project."""
    from meguri.deploy._pipeline import list_pipeline_runs
    from meguri.store import open_workspace

    table = Table(title="Pipeline executions", title_justify="left")
    for col in ("run", "started", "status", "ran", "cached", "failed step", "seconds"):
        table.add_column(col)
    for run in list_pipeline_runs(workspace=open_workspace(), max_results=limit):
        table.add_row(*_row(run))
    console.print(table)


def _row(run: Run) -> list[str]:
    seconds = run.metrics.get("seconds")
    return [
        run.id,
        datetime.fromtimestamp(run.created_at).strftime("%Y-%m-%d %H:%M:%S"),
        str(run.status.value if hasattr(run.status, "value") else run.status),
        run.tags.get("steps_ran", "-"),
        run.tags.get("steps_cached", "-"),
        run.tags.get("failed_step", ""),
        "-" if seconds is None else f"{seconds.value:.2f}",
    ]


@run_app.command("show")
def show_cmd(
    run: Annotated[str, typer.Argument(help="A pipeline run ID (or unique prefix).")],
) -> None:
    """One execution: its steps, their status, time, outputs and cache source."""
    import orjson

    from meguri.deploy._pipeline import StepResult, step_runs
    from meguri.store import open_workspace
    from meguri.train import get_run

    ws = open_workspace()
    parent = get_run(run, workspace=ws)
    steps = [
        StepResult(
            r.name, _step_status(r), r.wall_seconds or 0.0, r.id,
            orjson.loads(r.tags.get("outputs", "{}")), r.tags.get("cached_from"),
            r.status_reason if _step_status(r) == "failed" else None,
        )
        for r in step_runs(parent.id, workspace=ws)
    ]  # fmt: skip
    _print_table(steps, f"Pipeline run {parent.id} ({_row(parent)[2]})")
    if parent.status_reason:
        console.print(parent.status_reason, highlight=False)


def _step_status(run: Run) -> Any:
    status = run.tags.get("status")
    return status if status in _STYLE else "failed"
