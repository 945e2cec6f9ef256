"""``meguri init`` and ``meguri spec ...``: the project spec and its versions."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from meguri.errors import SpecError
from meguri.spec import (
    SPEC_FILE,
    ProjectSpec,
    SpecDiff,
    diff_specs,
    parse_spec,
    read_spec_text,
    render_example_spec,
    resolve_spec_version,
    save_spec_version,
    slugify,
    spec_hash,
)

if TYPE_CHECKING:
    from meguri.store import Workspace
    from meguri.store.metadata import SpecVersion

spec_app = typer.Typer(help="The project spec (meguri.yaml): validate, save, history, diff.")

FileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="The spec file (default: the nearest meguri.yaml)."),
]


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.add_typer(spec_app, name="spec")


def console() -> Console:
    return Console(highlight=False)


@contextmanager
def workspace() -> Iterator[Workspace]:
    """The workspace of the current folder, closed afterwards."""
    from meguri.store import open_workspace

    ws = open_workspace()
    try:
        yield ws
    finally:
        ws.close()


def print_code(out: Console, text: str, lexer: str, *, line_numbers: bool = False) -> None:
    """Highlighted in a terminal; plain text (easy to pipe and grep) otherwise."""
    if out.is_terminal:
        out.print(Syntax(text, lexer, line_numbers=line_numbers, word_wrap=True))
    else:
        typer.echo(text, nl=False)


def when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


# -- meguri init ------------------------------------------------------------------------------


def init(
    directory: Annotated[Path, typer.Argument(help="The project folder.")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Project name (default: the folder's).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing meguri.yaml.")] = False,
) -> None:
    """Write a commented example meguri.yaml and save it as the first spec version."""
    target = directory / SPEC_FILE
    if target.exists() and not force:
        raise SpecError(
            f"{target} already exists; edit it, or pass --force to overwrite it (versions "
            "already saved stay in the store)"
        )
    project = name or slugify(directory.resolve().name)
    text = render_example_spec(project)
    parse_spec(text, str(target))  # a bad --name is reported here, before anything is written
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text)
    from meguri.store import open_workspace

    ws = open_workspace(directory)
    try:
        version, _ = save_spec_version(
            ws.metadata, ws.project.id, text, created_by=ws.user, message="meguri init"
        )
        number = ws.metadata.specs.number(version)
    finally:
        ws.close()
    console().print(
        f"Wrote [bold]{target}[/] for project [bold]{project}[/] and saved it as spec version "
        f"#{number} ({version.id}).\nEdit it, then `meguri spec validate` and `meguri spec save`."
    )


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- meguri spec ------------------------------------------------------------------------------


@spec_app.command("validate")
def validate(file: FileOption = None) -> None:
    """Check the spec: every problem with its line and column; advice as warnings."""
    text, source = read_spec_text(file)
    spec = parse_spec(text, source)
    out = console()
    counts = ", ".join(
        f"{stage}: {n}"
        for stage in ("test", "validation", "staging", "production")
        if (n := len(spec.criteria_on(stage)))
    )
    out.print(
        f"[green]✓[/] {source} is valid: project [bold]{spec.project}[/], "
        f"{spec.requirements.functional.task} of {spec.requirements.functional.target!r}, "
        f"{len(spec.success_criteria)} success criteria ({counts or 'none'})"
    )
    for warning in spec.warnings():
        out.print(f"[yellow]warning:[/] {warning}")


@spec_app.command("save")
def save(
    message: Annotated[str | None, typer.Option("--message", "-m", help="Why it changed.")] = None,
    file: FileOption = None,
) -> None:
    """Store the spec as a new version (an unchanged spec keeps its version)."""
    text, source = read_spec_text(file)
    spec = parse_spec(text, source)
    with workspace() as ws:
        if spec.project != ws.project.name:
            console().print(
                f"[yellow]warning:[/] the spec names project {spec.project!r}; "
                f"saving it to the workspace's project {ws.project.name!r}"
            )
        version, created = save_spec_version(
            ws.metadata, ws.project.id, text, created_by=ws.user, message=message, source=source
        )
        number = ws.metadata.specs.number(version)
    if created:
        console().print(
            f"Saved spec version [bold]#{number}[/] {version.id} (sha256 {version.hash[:12]})"
        )
    else:
        console().print(
            f"Unchanged: {source} is spec version [bold]#{number}[/] {version.id}, "
            f"saved {when(version.created_at)} by {version.created_by}"
        )


@spec_app.command("history")
def history(
    limit: Annotated[int | None, typer.Option(help="Show only the newest N versions.")] = None,
    file: FileOption = None,
) -> None:
    """List the saved spec versions, marking the one that matches the working file."""
    current = _working_hash(file)
    with workspace() as ws:
        versions = ws.metadata.specs.list(ws.project.id, limit=limit)
        first = ws.metadata.specs.number(versions[0]) if versions else 1
        project = ws.project.name
    if not versions:
        console().print(f"No spec version saved for project {project!r}; run `meguri spec save`.")
        return
    table = Table(title=f"Spec versions of {project}")
    for column in ("#", "id", "hash", "saved", "by", "criteria", "message"):
        table.add_column(column, justify="right" if column in ("#", "criteria") else "left")
    for n, version in enumerate(versions, start=first):
        mark = " ●" if version.hash == current else ""
        table.add_row(
            f"{n}{mark}",
            version.id,
            version.hash[:12],
            when(version.created_at),
            version.created_by,
            _criteria_count(version.content),
            version.message or "",
        )
    out = console()
    out.print(table)
    if current is not None:
        out.print("● matches the working meguri.yaml")


def _working_hash(file: Path | None) -> str | None:
    try:
        text, source = read_spec_text(file)
        return spec_hash(text, source)
    except SpecError:
        return None


def _criteria_count(content: str) -> str:
    try:
        return str(len(parse_spec(content).success_criteria))
    except SpecError:
        return "?"


@spec_app.command("show")
def show(
    ref: Annotated[
        str, typer.Argument(help="file, latest, latest~N, a number, an id or hash prefix.")
    ] = "file",
    raw: Annotated[bool, typer.Option(help="Print only the YAML text.")] = False,
    file: FileOption = None,
) -> None:
    """Show a spec: the working file or a saved version (summary and YAML)."""
    label, text = snapshot(ref, file)
    if raw:
        typer.echo(text, nl=False)
        return
    out = console()
    out.print(Text(label, style="bold"))
    out.print(criteria_table(parse_spec(text, label)))
    print_code(out, text, "yaml", line_numbers=True)


def criteria_table(spec: ProjectSpec) -> Table:
    table = Table(title=f"Success criteria of {spec.project}")
    for column in ("id", "metric", "measured on", "requirement", "description"):
        table.add_column(column)
    for c in spec.success_criteria:
        table.add_row(
            c.id, c.metric, c.measured_on, f"{c.comparison} {c.threshold:g}", c.description or ""
        )
    return table


def snapshot(ref: str, file: Path | None) -> tuple[str, str]:
    """``(label, text)`` of ``ref``: ``file`` for the working spec, else a saved version."""
    if ref == "file":
        text, source = read_spec_text(file)
        return source, text
    with workspace() as ws:
        version = resolve_spec_version(ws.metadata, ws.project.id, ref)
        return version_label(version, ws.metadata.specs.number(version)), version.content


def version_label(version: SpecVersion, number: int) -> str:
    return f"#{number} {version.id} ({version.created_by}, {when(version.created_at)})"


@spec_app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="From: a version ref or `file`.")] = "latest",
    b: Annotated[str, typer.Argument(help="To: a version ref or `file`.")] = "file",
    file: FileOption = None,
) -> None:
    """What changed from spec A to spec B: a summary, then the unified YAML diff."""
    old_label, old = snapshot(a, file)
    new_label, new = snapshot(b, file)
    print_diff(diff_specs(old, new, old_label, new_label))


def print_diff(result: SpecDiff) -> None:
    out = console()
    out.print(Text.assemble((result.old_label, "bold"), " → ", (result.new_label, "bold")))
    if result.identical:
        same_text = not result.unified
        out.print(
            "No difference."
            if same_text
            else "Same content: only comments, formatting or key order differ."
        )
    else:
        out.print(f"{len(result.changes)} change(s):")
        for change in result.changes:
            style = {"added": "green", "removed": "red"}.get(change.kind, "yellow")
            out.print(Text(f"  {change}", style=style), soft_wrap=True)
    if result.unified:
        print_code(out, result.unified, "diff")
