"""``meguri models test REF``: the pre-promotion tests of a model version, stored as checks."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from meguri.deploy._checks import PrePromotionReport

console = Console(width=None if sys.stdout.isatty() else 160)


def register(app: typer.Typer) -> None:
    """Add ``test`` to the ``models`` group."""
    from meguri.cli._models import models_app

    if not any(c.name == "test" for c in models_app.registered_commands):
        models_app.command("test")(pre_promotion_cmd)


def print_report(report: PrePromotionReport) -> None:
    """The checks of ``report`` as a table: criterion, result, value, threshold, evidence."""
    where = f"{report.environment} ({report.url})"
    table = Table(title=f"Pre-promotion tests of {report.version.ref} on {where}")
    for column in ("criterion", "result", "value", "needs", "evidence"):
        table.add_column(column)
    for check in report.checks:
        result = "[green]pass[/]" if check.passed else "[red]fail[/]"
        value = "-" if check.value is None else f"{check.metric} {check.value:.4g}"
        needs = f"{check.comparison} {check.threshold:g}"
        note = str(check.evidence.get("message", ""))
        table.add_row(check.criterion_id, result, value, needs, note)
    console.print(table)


def pre_promotion_cmd(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS, NAME@VERSION or a version id (mv-…).")],
    url: Annotated[
        str | None,
        typer.Option(help="Test this running endpoint instead of serving the version here."),
    ] = None,
    env: Annotated[str, typer.Option("--env", help="The environment tested.")] = "staging",
    token: Annotated[
        str | None,
        typer.Option(
            envvar="MEGURI_ENDPOINT_TOKEN",
            help="The bearer token the endpoint at --url requires (env MEGURI_ENDPOINT_TOKEN).",
        ),
    ] = None,
    spec_version: Annotated[
        str | None,
        typer.Option(help="The spec version whose targets apply (default: the model's)."),
    ] = None,
    duration: Annotated[float, typer.Option(help="Seconds of load test.", min=0.1)] = 3.0,
    concurrency: Annotated[int, typer.Option(help="Connections of the load test.", min=1)] = 16,
) -> None:
    """Functional, performance and security tests before production; exit 1 if one fails."""
    from meguri.deploy._checks import PrePromotionSettings, pre_promotion_tests
    from meguri.store import open_workspace

    ws = open_workspace()
    spec_id = None
    if spec_version is not None:
        from meguri.spec._versions import resolve_spec_version

        spec_id = resolve_spec_version(ws.metadata, ws.project.id, spec_version).id
    settings = PrePromotionSettings(duration_s=duration, concurrency=concurrency)
    report = pre_promotion_tests(
        ref, workspace=ws, url=url, environment=env, auth_token=token,
        spec_version_id=spec_id, settings=settings,
    )  # fmt: skip
    print_report(report)
    if not report.passed:
        failing = ", ".join(c.criterion_id for c in report.failing)
        console.print(f"[red]failing:[/] {failing}; `meguri models show {report.version.ref}`")
        raise typer.Exit(1)
    console.print(f"all passed: `meguri models promote {report.version.ref}` may proceed")
