"""``meguri audit verify|export|log``: a broken chain exits 1 naming the event; exports carry
everything needed to recompute each hash, which is done here independently."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import typer
from click.testing import Result
from typer.testing import CliRunner

from meguri.cli import _audit
from meguri.errors import NotFoundError
from meguri.store import Workspace, open_workspace
from meguri.store.metadata import NewAuditEvent
from meguri.store.metadata.repositories import audit


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()
    _audit.register(root)

    @root.callback()
    def _main() -> None:  # a group, so that `audit` stays a subcommand
        pass

    return root


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    for name in [k for k in os.environ if k.startswith("MEGURI_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MEGURI_PROJECT", "audited")  # the project the commands open too
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".meguri").mkdir()
    workspace = open_workspace(tmp_path, user="ann")
    other = workspace.metadata.projects.ensure("other", "bob").id
    for i in range(4):
        workspace.metadata.specs.add(
            workspace.project.id, content=f"v{i}", hash=f"h{i}", created_by="ann"
        )
    workspace.metadata.documents.add_version(
        other, "notes [red]x[/]", content="é", created_by="bob"
    )
    yield workspace  # events: 1 project, 2 project, 3-6 specs, 7 document
    workspace.close()


def _invoke(app: typer.Typer, *args: str) -> Result:
    return CliRunner().invoke(app, ["audit", *args])


def _ok(app: typer.Typer, *args: str) -> str:
    result = _invoke(app, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def _sql(ws: Workspace, statement: str) -> None:
    with ws.metadata.db.engine.begin() as conn:
        conn.execute(sa.text(statement))


def _recomputed(record: dict[str, object]) -> str:
    fields = {k: v for k, v in record.items() if k not in ("prev_hash", "hash")}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((str(record["prev_hash"]) + text).encode("utf-8")).hexdigest()


def _assert_chain(records: list[dict[str, object]]) -> None:
    previous = "0" * 64
    for record in records:
        assert record["prev_hash"] == previous
        assert record["hash"] == _recomputed(record)
        previous = str(record["hash"])


def test_verify_passes_then_names_an_edited_and_a_deleted_event(
    app: typer.Typer, ws: Workspace
) -> None:
    out = _ok(app, "verify")
    head = ws.metadata.audit.head()
    assert "ok:" in out and "7 events" in out and head[1] in out
    _sql(ws, "UPDATE audit_events SET subject_id = 'spec-forged' WHERE seq = 4")
    edited = _invoke(app, "verify")
    assert edited.exit_code == 1
    assert "broken at event 4" in edited.stderr and "edited" in edited.stderr
    assert "Traceback" not in edited.output
    _sql(ws, "DELETE FROM audit_events WHERE seq = 2")
    deleted = _invoke(app, "verify")
    assert deleted.exit_code == 1
    assert "broken at event 2" in deleted.stderr and "missing" in deleted.stderr


def test_export_jsonl_streams_every_event_with_its_hashes(
    app: typer.Typer, ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "_PAGE", 3)  # several pages of one snapshot
    target = tmp_path / "audit.jsonl"
    assert "Exported 7 events" in _ok(app, "export", "--out", str(target))
    records = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 8))
    assert list(records[0]) == list(_audit.COLUMNS)
    assert records[-1]["detail"]["name"] == "notes [red]x[/]"
    _assert_chain(records)
    assert records[-1]["hash"] == ws.metadata.audit.head()[1]
    piped = [json.loads(line) for line in _ok(app, "export").splitlines()]
    assert piped == records
    other = ws.metadata.projects.get("other").id
    mine = [json.loads(line) for line in _ok(app, "export", "--project", "other").splitlines()]
    assert [(r["seq"], r["project_id"]) for r in mine] == [(2, other), (7, other)]


def test_export_csv(app: typer.Typer, ws: Workspace) -> None:
    rows = list(csv.DictReader(io.StringIO(_ok(app, "export", "--format", "csv"))))
    assert len(rows) == 7 and list(rows[0]) == list(_audit.COLUMNS)
    records: list[dict[str, object]] = []
    for row in rows:
        record: dict[str, object] = dict(row)
        record.update(
            seq=int(row["seq"]),
            time=float(row["time"]),
            project_id=row["project_id"] or None,
            detail=json.loads(row["detail"]),
        )
        records.append(record)
    _assert_chain(records)  # the text columns read back to the hashed values


def test_a_failed_export_leaves_no_file(app: typer.Typer, ws: Workspace, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    failed = _invoke(app, "export", "--out", str(target), "--project", "nope")
    assert isinstance(failed.exception, NotFoundError)
    assert not target.exists() and not list(tmp_path.glob(".out.jsonl.*"))
    folder = _invoke(app, "export", "--out", str(tmp_path))
    assert folder.exit_code == 2 and "is a folder" in folder.output


def test_log_shows_the_newest_first_without_markup(app: typer.Typer, ws: Workspace) -> None:
    out = _ok(app, "log", "--limit", "2")
    assert "document.version_added" in out and "spec.saved" in out
    assert out.index("document.version_added") < out.index("spec.saved")
    assert "project.created" not in out
    ws.metadata.audit.append(NewAuditEvent("[red]x[/]", "test.markup", "thing", "[b]y[/b]"))
    marked = _ok(app, "log", "--limit", "1")
    assert "[red]x[/]" in marked and "[b]y[/b]" in marked  # printed as is, never as markup
    assert "project.created" in _ok(app, "log", "--project", "audited")
    _sql(ws, "DELETE FROM audit_events")
    _sql(ws, "UPDATE audit_head SET seq = 0")
    assert "empty" in _ok(app, "log")
