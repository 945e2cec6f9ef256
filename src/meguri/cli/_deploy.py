"""``meguri deploy MODEL@VERSION --env ENV`` and ``meguri deploy status|history|rollback|stop``."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer._click.core import Context
from typer.core import TyperGroup

from meguri.cli._here import workspace as _workspace

if TYPE_CHECKING:
    from meguri.store.metadata import DeploymentRevision

console = Console(width=None if sys.stdout.isatty() else 160)
Env = Annotated[str, typer.Option("--env", "-e", help="The environment (e.g. staging).")]


class _DeployGroup(TyperGroup):
    """``meguri deploy MODEL@VERSION ...`` runs the hidden ``up`` command; names of the other
    commands (``status``, ``history``, ...) run those."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["up", *args]
        return super().parse_args(ctx, args)


deploy_app = typer.Typer(
    cls=_DeployGroup,
    help="Deploy model versions to local endpoints: canary, linear, shadow, rollback.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _targets(revision: DeploymentRevision) -> str:
    """Where the revision routed requests when it got furthest (a finished canary serves its
    new version alone; one rolled back shows the split it was rolled back at)."""
    from meguri.deploy._rollout import reached

    return ", ".join(
        f"{t.ref} shadow" if role == "shadow" else f"{t.ref} {role} {weight:g}%"
        for t, weight, role in reached(revision)
    )


def _revision_table(revisions: list[DeploymentRevision], title: str) -> Table:
    table = Table(title=title)
    for column in ("#", "state", "strategy", "targets", "reason", "by", "when"):
        table.add_column(column)
    for r in revisions:
        table.add_row(
            str(r.number), r.state.value, r.strategy, _targets(r), r.reason, r.created_by,
            _when(r.created_at),
        )  # fmt: skip
    return table


@deploy_app.command("up", hidden=True)
def up_cmd(
    model: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
    env: Env,
    strategy: Annotated[
        str | None,
        typer.Option(help="all_at_once, canary, linear or shadow (default: the spec's)."),
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why (recorded on the revision).")] = None,
) -> None:
    """Deploy MODEL@VERSION to ENV (starting its endpoint if needed)."""
    from meguri.deploy import deploy, status

    ws = _workspace()
    try:
        revision = deploy(model, env=env, workspace=ws, strategy=strategy, reason=reason)
        url = status(env, workspace=ws).url
    finally:
        ws.close()
    console.print(
        f"revision {revision.number} of [bold]{env}[/]: {_targets(revision)} "
        f"({revision.strategy}, {revision.state.value}) at {url}"
    )


@deploy_app.command("status")
def status_cmd(env: Env) -> None:
    """The deployment of ENV: state, endpoint and current revision."""
    from meguri.deploy import status

    ws = _workspace()
    try:
        found = status(env, workspace=ws)
    finally:
        ws.close()
    d = found.deployment
    table = Table(title=f"deployment {d.environment}", show_header=False)
    rows: list[tuple[str, Any]] = [
        ("id", d.id),
        ("state", d.state.value),
        ("model", d.model_name),
        ("endpoint", found.url or "not running"),
        ("supervisor pid", d.pid or "-"),
    ]
    if found.revision is not None:
        r = found.revision
        rows += [
            ("revision", f"{r.number} ({r.state.value}, {r.strategy}, step {r.step})"),
            ("targets", _targets(r)),
            ("reason", r.reason),
        ]
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)


@deploy_app.command("history")
def history_cmd(env: Env) -> None:
    """Every revision of ENV: what, how, why, who and when."""
    from meguri.deploy import history

    ws = _workspace()
    try:
        revisions = history(env, workspace=ws)
    finally:
        ws.close()
    console.print(_revision_table(revisions, f"revisions of {env}"))


@deploy_app.command("rollback")
def rollback_cmd(
    env: Env,
    reason: Annotated[str, typer.Option(help="Why (recorded as 'rollback: REASON').")],
    to: Annotated[int | None, typer.Option(help="Revision number to return to.")] = None,
) -> None:
    """Serve again the last good revision of ENV (or revision --to) at once."""
    from meguri.deploy import rollback

    ws = _workspace()
    try:
        revision = rollback(env, reason=reason, to=to, workspace=ws)
    finally:
        ws.close()
    console.print(f"revision {revision.number} of [bold]{env}[/]: {_targets(revision)}")


@deploy_app.command("stop")
def stop_cmd(env: Env) -> None:
    """Stop the endpoint of ENV (its workers and supervisor)."""
    from meguri.deploy import stop

    ws = _workspace()
    try:
        stop(env, workspace=ws)
    finally:
        ws.close()
    console.print(f"stopped [bold]{env}[/]")
