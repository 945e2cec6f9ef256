"""``meguri data ingest|list|show|history|schema|diff|lineage|search|tag``: the data catalog."""

from __future__ import annotations

import datetime as dt
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from meguri.cli._here import workspace as _workspace
from meguri.errors import DataError

if TYPE_CHECKING:
    from meguri.data._catalog import SchemaDiff
    from meguri.store import Workspace
    from meguri.store.metadata._entities import DatasetVersion

data_app = typer.Typer(
    help="The data catalog: ingest sources, browse versions, schemas and lineage.",
    no_args_is_help=True,
)
console = Console(width=None if sys.stdout.isatty() else 160)


def register(app: typer.Typer) -> None:
    from meguri.cli import _data_phase  # noqa: F401  (adds profile, check, prepare)

    app.add_typer(data_app, name="data")


def _when(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _pairs(items: list[str] | None, what: str) -> dict[str, Any]:
    """``KEY=VALUE`` arguments as a dict; values that read as YAML scalars become those."""
    from meguri.spec import load_yaml

    found: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DataError(f"{what} {item!r} is not KEY=VALUE (e.g. {what} separator=;).")
        parsed = load_yaml(value) if value else ""
        found[key] = parsed if isinstance(parsed, (int, float, bool)) else value
    return found


@data_app.command("ingest")
def ingest(
    uri: Annotated[str, typer.Argument(help="A path, fsspec URL, database URL or bundled://NAME.")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Dataset name.")] = None,
    format: Annotated[
        str | None, typer.Option("--format", "-f", help="csv, parquet, jsonl, json, excel, sql.")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Read option KEY=VALUE (separator=;, table=t...)."),
    ] = None,
    schema: Annotated[
        list[str] | None, typer.Option("--schema", "-s", help="Column type COLUMN=TYPE.")
    ] = None,
) -> None:
    """Read a source and store it as a dataset version (identical data: the same version)."""
    from meguri.data._catalog import ingest as do_ingest

    ws = _workspace()
    before = {v.id for v in _latest(ws).values()}
    version = do_ingest(
        uri,
        name=name,
        format=format,
        options=_pairs(option, "--option"),
        schema={k: str(v) for k, v in _pairs(schema, "--schema").items()},
        workspace=ws,
    )
    verb = "unchanged:" if version.id in before else "stored"
    console.print(
        f"{verb} [bold]{version.ref}[/] ({version.id}): {version.row_count:,} rows × "
        f"{len(version.schema)} columns, {_size(version.byte_size)}",
        highlight=False,
    )


def _latest(ws: Workspace) -> dict[str, DatasetVersion]:
    from meguri.data._catalog import latest_versions

    return latest_versions(workspace=ws)


@data_app.command("list")
def list_datasets() -> None:
    """Every dataset with its latest version."""
    from meguri.data._catalog import list_datasets as do_list

    ws = _workspace()
    datasets, latest = do_list(workspace=ws), _latest(ws)
    if not datasets:
        console.print("No datasets yet. Add one with `meguri data ingest URI`.")
        return
    table = Table(title=f"Datasets of project {ws.project.name}")
    for col in ("name", "latest", "rows", "columns", "size", "operation", "updated", "tags"):
        table.add_column(col, justify="right" if col in ("rows", "columns", "size") else "left")
    for dataset in datasets:
        v = latest.get(dataset.name)
        if v is None:
            continue
        tags = ", ".join(f"{k}={val}" if val else k for k, val in dataset.tags.items())
        table.add_row(
            dataset.name, f"@{v.version}", f"{v.row_count:,}", str(len(v.schema)),
            _size(v.byte_size), v.operation, _when(v.created_at), tags or "-",
        )  # fmt: skip
    console.print(table)


@data_app.command("show")
def show(ref: Annotated[str, typer.Argument(help="NAME, NAME@N, dsv-ID or a prefix.")]) -> None:
    """One version: where it came from, its size, schema and parents."""
    from meguri.data._catalog import get_version

    ws = _workspace()
    v = get_version(ref, workspace=ws)
    grid = Table.grid(padding=(0, 2))
    for label, value in _facts(v, ws):
        grid.add_row(f"[bold]{label}[/]", value)
    console.print(grid)
    _print_schema(v)


def _facts(v: DatasetVersion, ws: Workspace) -> list[tuple[str, str]]:
    from meguri.data._catalog import get_version

    parents = ", ".join(get_version(p, workspace=ws).ref for p in v.parents)
    return [
        ("version", f"{v.ref} ({v.id})"),
        ("rows × columns", f"{v.row_count:,} × {len(v.schema)}"),
        ("stored", f"{_size(v.byte_size)} Parquet, sha256:{v.data_digest[:16]}…"),
        ("content hash", v.content_hash[:16] + "…"),
        ("operation", v.operation),
        ("source", f"{v.source_uri} ({v.format})" if v.source_uri else "-"),
        ("read options", ", ".join(f"{k}={o!r}" for k, o in v.read_options.items()) or "-"),
        ("parents", parents or "-"),
        ("lineage", ", ".join(sorted(v.lineage)) or "-"),
        ("profile", "stored" if v.profile_digest else "-"),
        ("quality report", "stored" if v.quality_digest else "-"),
        ("created", f"{_when(v.created_at)} by {v.created_by}"),
    ]


def _print_schema(v: DatasetVersion) -> None:
    table = Table(title=f"Schema of {v.ref}")
    table.add_column("#", justify="right")
    table.add_column("column")
    table.add_column("type")
    for i, (name, dtype) in enumerate(v.schema.items(), 1):
        table.add_row(str(i), name, dtype)
    console.print(table)


@data_app.command("schema")
def schema(ref: Annotated[str, typer.Argument(help="NAME, NAME@N or dsv-ID.")]) -> None:
    """The columns and types of a version."""
    from meguri.data._catalog import get_version

    _print_schema(get_version(ref, workspace=_workspace()))


@data_app.command("history")
def history(name: Annotated[str, typer.Argument(help="Dataset name.")]) -> None:
    """Every version of a dataset, with schema changes flagged."""
    from meguri.data._catalog import diff_schemas
    from meguri.data._catalog import history as do_history

    versions = do_history(name, workspace=_workspace())
    table = Table(title=f"History of dataset {name}")
    for col in ("version", "id", "rows", "columns", "operation", "created", "by", "schema"):
        table.add_column(col, justify="right" if col in ("rows", "columns") else "left")
    previous: DatasetVersion | None = None
    for v in versions:
        change = "-"
        if previous is not None:
            diff = diff_schemas(previous.schema, v.schema, (previous.ref, v.ref))
            change = f"[yellow]changed: {diff.summary()}[/]" if diff else "same"
        table.add_row(
            f"@{v.version}", v.id, f"{v.row_count:,}", str(len(v.schema)), v.operation,
            _when(v.created_at), v.created_by, change,
        )  # fmt: skip
        previous = v
    console.print(table)


@data_app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="The older version.")],
    b: Annotated[str, typer.Argument(help="The newer version.")],
) -> None:
    """Schema differences between two versions: columns added, removed, type changed."""
    from meguri.data._catalog import schema_diff

    _print_diff(schema_diff(a, b, workspace=_workspace()))


def _print_diff(found: SchemaDiff) -> None:
    if not found:
        console.print(f"{found.old} → {found.new}: same schema")
        return
    table = Table(title=f"Schema {found.old} → {found.new}: {found.summary()}")
    for col in ("change", "column", "type"):
        table.add_column(col)
    for name, dtype in found.added.items():
        table.add_row("[green]added[/]", name, dtype)
    for name, dtype in found.removed.items():
        table.add_row("[red]removed[/]", name, dtype)
    for name, (old, new) in found.changed.items():
        table.add_row("[yellow]type changed[/]", name, f"{old} → {new}")
    console.print(table)


@data_app.command("lineage")
def lineage(ref: Annotated[str, typer.Argument(help="NAME, NAME@N or dsv-ID.")]) -> None:
    """The versions a version was derived from, as a tree."""
    from meguri.data._catalog import lineage as do_lineage

    graph = do_lineage(ref, workspace=_workspace())

    def label(v: DatasetVersion) -> str:
        where = f" from {v.source_uri}" if v.source_uri else ""
        return f"[bold]{v.ref}[/] {v.id} · {v.operation}{where} · {v.row_count:,} rows"

    def grow(node: Tree, v: DatasetVersion, seen: frozenset[str]) -> None:
        for parent in graph.parents(v.id):
            branch = node.add(label(parent))
            if parent.id not in seen:
                grow(branch, parent, seen | {parent.id})

    tree = Tree(label(graph.root))
    grow(tree, graph.root, frozenset({graph.root.id}))
    console.print(tree)


@data_app.command("search")
def search(
    text: Annotated[str | None, typer.Argument(help="Text in the name or description.")] = None,
    column: Annotated[
        str | None, typer.Option("--column", "-c", help="A column name (or part of it).")
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="KEY or KEY=VALUE.")] = None,
) -> None:
    """Datasets by name, description, column or tag (their latest versions)."""
    from meguri.data._catalog import search as do_search

    found = do_search(text, column=column, tag=tag, workspace=_workspace())
    if not found:
        console.print("No dataset matches.")
        return
    table = Table(title="Datasets found")
    for col in ("dataset", "id", "rows", "matching columns"):
        table.add_column(col)
    for v in found:
        columns = [c for c in v.schema if column and column.lower() in c.lower()]
        table.add_row(v.ref, v.id, f"{v.row_count:,}", ", ".join(columns) or "-")
    console.print(table)


@data_app.command("tag")
def tag(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    tags: Annotated[list[str], typer.Argument(help="KEY or KEY=VALUE, one or more.")],
    remove: Annotated[bool, typer.Option("--remove", help="Remove these tag keys.")] = False,
) -> None:
    """Set (or remove) tags of a dataset."""
    from meguri.data._catalog import remove_tag, set_tag

    ws = _workspace()
    for item in tags:
        key, _, value = item.partition("=")
        if remove:
            remove_tag(name, key, workspace=ws)
        else:
            set_tag(name, key, value, workspace=ws)
    console.print(f"{'removed' if remove else 'tagged'} {name}: {', '.join(tags)}")
