"""``meguri docs ...``: versioned Markdown documents (design notes, operations manual)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from meguri.cli._project import console, print_code, when, workspace
from meguri.errors import ConfigError, NotFoundError
from meguri.spec import normalise_document, save_document, unified_diff

if TYPE_CHECKING:
    from meguri.store.metadata import DocumentVersion

docs_app = typer.Typer(help="Versioned documents: design notes, operations manual (Markdown).")

NameArg = Annotated[str, typer.Argument(help="The document's name, e.g. design-notes.")]


def register(app: typer.Typer) -> None:
    app.add_typer(docs_app, name="docs")


def read_text(file: str) -> str:
    """The UTF-8 text of ``file`` (``-``: standard input)."""
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file} does not exist; give the path of a Markdown file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file} is not UTF-8 text; documents are Markdown text") from None
    except OSError as err:
        raise ConfigError(f"Cannot read {file}: {err.strerror}; check its permissions") from None


@docs_app.command("add")
def add(
    name: NameArg,
    file: Annotated[str, typer.Argument(help="The Markdown file (`-` for standard input).")],
    message: Annotated[str | None, typer.Option("--message", "-m", help="What changed.")] = None,
) -> None:
    """Store FILE as the next version of document NAME (unchanged text: no new version)."""
    text = read_text(file)
    with workspace() as ws:
        version, created = save_document(
            ws.metadata, ws.project.id, name, text, created_by=ws.user, message=message
        )
    if created:
        console().print(f"Saved {name} version [bold]{version.version}[/]")
    else:
        console().print(
            f"Unchanged: {file} is {name} version [bold]{version.version}[/], "
            f"saved {when(version.created_at)} by {version.created_by}"
        )


@docs_app.command("list")
def list_() -> None:
    """The project's documents and their latest versions."""
    with workspace() as ws:
        latest = ws.metadata.documents.latest_versions(ws.project.id)
        project = ws.project.name
    if not latest:
        console().print(f"No documents in project {project!r}; `meguri docs add NAME FILE`.")
        return
    table = Table(title=f"Documents of {project}")
    for column in ("name", "version", "updated", "by", "lines", "message"):
        table.add_column(column, justify="right" if column in ("version", "lines") else "left")
    for name, v in latest.items():
        table.add_row(
            name,
            str(v.version),
            when(v.created_at),
            v.created_by,
            str(v.content.count("\n")),
            v.message or "",
        )
    console().print(table)


@docs_app.command("show")
def show(
    name: NameArg,
    version: Annotated[int | None, typer.Option(help="Version number (default: latest).")] = None,
    raw: Annotated[bool, typer.Option(help="Print the Markdown text as stored.")] = False,
) -> None:
    """Print a version of document NAME (rendered in a terminal; raw when piped)."""
    with workspace() as ws:
        found = ws.metadata.documents.version(ws.project.id, name, version)
    out = console()
    if raw or not out.is_terminal:
        typer.echo(found.content, nl=False)
        return
    out.print(
        Text(
            f"{name} version {found.version} · {found.created_by} · {when(found.created_at)}",
            style="bold",
        )
    )
    out.print(Markdown(found.content))


@docs_app.command("history")
def history(name: NameArg) -> None:
    """Every version of document NAME."""
    with workspace() as ws:
        versions = ws.metadata.documents.versions(ws.project.id, name)
    table = Table(title=f"History of {name}")
    for column in ("version", "saved", "by", "lines", "sha256", "message"):
        table.add_column(column, justify="right" if column in ("version", "lines") else "left")
    for v in reversed(versions):
        table.add_row(
            str(v.version),
            when(v.created_at),
            v.created_by,
            str(v.content.count("\n")),
            v.hash[:12],
            v.message or "",
        )
    console().print(table)


@docs_app.command("diff")
def diff(
    name: NameArg,
    a: Annotated[str | None, typer.Argument(help="From: a version, `latest` or a file.")] = None,
    b: Annotated[str, typer.Argument(help="To: a version, `latest` or a file.")] = "latest",
) -> None:
    """Unified diff between two versions of NAME (default: the latest two), or a file."""
    with workspace() as ws:
        versions = ws.metadata.documents.versions(ws.project.id, name)
    old_label, old = _side(name, a or str(max(len(versions) - 1, 1)), versions)
    new_label, new = _side(name, b, versions)
    text = unified_diff(old, new, old_label, new_label)
    out = console()
    if not text:
        out.print(f"No difference between {old_label} and {new_label}.")
    else:
        print_code(out, text, "diff")


def _side(name: str, ref: str, versions: list[DocumentVersion]) -> tuple[str, str]:
    if ref == "latest":
        return f"{name} v{versions[-1].version}", versions[-1].content
    if ref.isdigit():
        for v in versions:
            if v.version == int(ref):
                return f"{name} v{v.version}", v.content
        raise NotFoundError(f"Document {name!r} has no version {ref}; it has 1 to {len(versions)}")
    return ref, normalise_document(read_text(ref))
