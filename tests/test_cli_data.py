"""``meguri data …``: ingest, list, show, history with schema-change flags, schema, diff,
lineage, search, tag; errors as one line."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from meguri.cli import _data
from meguri.data import _catalog as catalog
from meguri.store import open_workspace
from meguri.testing.cli import run_meguri


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()
    _data.register(root)

    @root.callback()
    def _main() -> None:  # a group, so that `data` stays a subcommand
        pass

    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [k for k in os.environ if k.startswith("MEGURI_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".meguri").mkdir()
    return tmp_path


def _run(app: typer.Typer, *args: str) -> str:
    result = CliRunner().invoke(app, ["data", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_ingest_list_show_schema(app: typer.Typer, project: Path) -> None:
    out = _run(app, "ingest", "bundled://breast_cancer")
    assert "stored breast_cancer@1" in out and "569 rows × 31 columns" in out
    assert "unchanged: breast_cancer@1" in _run(app, "ingest", "bundled://breast_cancer")
    listed = _run(app, "list")
    assert "breast_cancer" in listed and "@1" in listed and "569" in listed
    shown = _run(app, "show", "breast_cancer@1")
    assert "bundled://breast_cancer (bundled)" in shown and "worst_area" in shown
    assert "malignant" in _run(app, "schema", "breast_cancer") and "Int8" in shown


def test_history_flags_schema_changes_and_diff(app: typer.Typer, project: Path) -> None:
    file = project / "sales.csv"
    pd.DataFrame({"id": [1, 2], "amount": [3.5, 4.0]}).to_csv(file, index=False)
    _run(app, "ingest", str(file))
    pd.DataFrame({"id": [1, 2], "amount": ["a", "b"], "region": ["x", "y"]}).to_csv(
        file, index=False
    )
    _run(app, "ingest", str(file), "--name", "sales")
    history = _run(app, "history", "sales")
    assert "@2" in history and "changed: +1 added, 1 type changed" in history
    diff = _run(app, "diff", "sales@1", "sales@2")
    assert "region" in diff and "Float64 → String" in diff and "added" in diff
    assert "same schema" in _run(app, "diff", "sales@2", "sales")


def test_options_lineage_search_and_tags(app: typer.Typer, project: Path) -> None:
    file = project / "semi.csv"
    file.write_text("code;n\n007;1\n008;2\n")
    out = _run(app, "ingest", str(file), "-o", "separator=;", "-s", "code=str", "-n", "codes")
    assert "2 rows × 2 columns" in out
    ws = open_workspace(project)
    raw = catalog.get_version("codes", workspace=ws)
    catalog.save_version(
        "codes_clean", catalog.read(raw, workspace=ws), parents=[raw], operation="prepare",
        workspace=ws,
    )  # fmt: skip
    assert catalog.read("codes", workspace=ws).collect()["code"].to_list() == ["007", "008"]
    ws.close()
    tree = _run(app, "lineage", "codes_clean")
    assert tree.index("codes_clean@1") < tree.index("codes@1") and "prepare" in tree
    _run(app, "tag", "codes", "owner=ana", "pii")
    assert "owner=ana, pii" in _run(app, "list")
    found = _run(app, "search", "--tag", "owner=ana")
    assert "codes@1" in found and "codes_clean" not in found
    assert "code" in _run(app, "search", "--column", "CODE")
    assert "No dataset matches" in _run(app, "search", "nothing-like-this")
    _run(app, "tag", "codes", "pii", "--remove")
    assert "pii" not in _run(app, "list")


def test_errors_are_one_line(project: Path) -> None:
    (project / "bad.csv").write_text("a;b\n1;2\n")
    result = run_meguri("data", "ingest", "bad.csv", cwd=project)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "looks separated by ';'" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
