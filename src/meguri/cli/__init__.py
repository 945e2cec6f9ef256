"""The ``meguri`` command line: one module per phase, errors printed as one actionable line."""

from __future__ import annotations

import sys

import typer

from meguri.errors import MeguriError

app = typer.Typer(
    name="meguri",
    help="meguri: carry an ML project through spec, data, training, deployment and monitoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from meguri.cli import (
        _audit,
        _checks,
        _data,
        _demo,
        _deploy,
        _docs,
        _keys,
        _models,
        _monitor,
        _project,
        _run,
        _runs,
        _serve,
        _server,
        _train,
        _users,
    )

    for module in (_project, _docs, _data, _train, _runs, _run, _demo):
        module.register(app)
    _models.register(app)
    _checks.register(app)  # `models test`, after the models group exists
    _serve.register(app)
    _deploy.register(app)
    _monitor.register(app)
    _keys.register(app)
    _server.register(app)
    _users.register(app)
    _audit.register(app)


def main() -> None:
    """Console entry point: a :class:`MeguriError` becomes one red line and exit status 1."""
    _register()
    try:
        app()
    except MeguriError as err:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(1)
