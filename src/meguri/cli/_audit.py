"""``meguri audit verify|export|log``: check, export and read the hash-chained audit log."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from meguri.cli._here import workspace_session as _workspace

if TYPE_CHECKING:
    from meguri.store import Workspace
    from meguri.store.metadata import AuditEvent

audit_app = typer.Typer(
    help="The audit log of every change: verify its hash chain, export it, read it.",
    no_args_is_help=True,
)
console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)

#: The exported columns, in order: every field the hash covers, then the two hashes.
COLUMNS = (
    "seq",
    "id",
    "time",
    "actor",
    "action",
    "project_id",
    "subject_kind",
    "subject_id",
    "detail",
    "prev_hash",
    "hash",
)


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


def _project_id(ws: Workspace, project: str | None) -> str | None:
    return None if project is None else ws.metadata.projects.get(project).id


ProjectOption = Annotated[
    str | None, typer.Option("--project", "-p", help="Only this project's events (its name).")
]


@audit_app.command("verify")
def verify() -> None:
    """Walk the whole chain; exit 1 naming the first edited, inserted or deleted event."""
    with _workspace() as ws:
        verdict = ws.metadata.audit.verify()
    if not verdict.ok:
        reason = escape(verdict.reason or "")
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[bold red]error:[/] the audit log is broken at event {verdict.first_bad_seq}: "
            f"{reason}. The {verdict.checked} events before it check out; restore the store "
            "from a backup and find out who could write to it."
        )
        raise typer.Exit(1)
    console.print(
        f"[green]ok:[/] {verdict.checked} events, the hash chain is unbroken; "
        f"head {verdict.head_seq} {verdict.head_hash}"
    )
    console.print("Keep the head hash elsewhere: a later verify must extend it.", style="dim")


def _record(event: AuditEvent) -> dict[str, object]:
    return {name: getattr(event, name) for name in COLUMNS}


def _write(events: Iterator[AuditEvent], out: IO[str], format: ExportFormat) -> int:
    """Write ``events`` one at a time (never all in memory); how many were written."""
    count = 0
    if format is ExportFormat.CSV:
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
    for event in events:
        record = _record(event)
        if format is ExportFormat.CSV:
            record["detail"] = _json(event.detail)
            writer.writerow(record)
        else:
            out.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
        count += 1
    return count


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@contextmanager
def _output(path: Path | None) -> Iterator[IO[str]]:
    """stdout, or a temporary file next to ``path`` renamed onto it once complete (an export
    that fails half-way leaves no half file behind)."""
    if path is None:
        yield sys.stdout
        return
    folder = path.resolve().parent
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@audit_app.command("export")
def export(
    format: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="jsonl (one event a line) or csv.")
    ] = ExportFormat.JSONL,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file (default: stdout).")
    ] = None,
    project: ProjectOption = None,
) -> None:
    """Every event in seq order, streamed from one consistent snapshot. Each line carries
    prev_hash and hash: sha256(prev_hash + the canonical JSON of the other fields)."""
    if out is not None and out.is_dir():
        raise typer.BadParameter(f"{out} is a folder; name a file", param_hint="--out")
    with _workspace() as ws, _output(out) as stream:
        events = ws.metadata.audit.iter_events(project_id=_project_id(ws, project))
        count = _write(events, stream, format)
    if out is not None:
        console.print(f"Exported {count} events to {out}")


def _when(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


@audit_app.command("log")
def log(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many events.")] = 20,
    project: ProjectOption = None,
) -> None:
    """The latest events, newest first."""
    with _workspace() as ws:
        events = ws.metadata.audit.events(
            project_id=_project_id(ws, project), limit=limit, newest_first=True
        )
    if not events:
        console.print("The audit log is empty: no change has been recorded yet.")
        return
    table = Table(title="Audit log (newest first)")
    for column in ("seq", "time", "actor", "action", "subject", "detail"):
        table.add_column(column, overflow="fold")
    for e in events:
        detail = _json(e.detail)
        detail = detail if len(detail) <= 80 else detail[:77] + "..."
        subject = f"{e.subject_kind} {e.subject_id}"
        cells = (str(e.seq), _when(e.time), e.actor, e.action, subject, detail)
        table.add_row(*(Text(cell) for cell in cells))  # stored text is never markup
    console.print(table)
