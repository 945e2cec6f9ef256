"""``meguri init``, ``meguri spec ...`` and ``meguri docs ...`` end to end on an embedded store."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from meguri.cli import _docs, _project
from meguri.errors import ConfigError, NotFoundError, SpecError
from meguri.spec import load_spec


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("MEGURI_STORE_URL", "MEGURI_ARTIFACTS_URL", "MEGURI_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEGURI_USER", "ana")
    monkeypatch.setenv("COLUMNS", "250")
    folder = tmp_path / "Breast Cancer"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def meguri(*args: str) -> Result:
    app = typer.Typer()
    _project.register(app)
    _docs.register(app)
    return CliRunner().invoke(app, list(args))


def ok(*args: str) -> str:
    result = meguri(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_init_writes_a_valid_example_and_saves_version_1(project: Path) -> None:
    out = ok("init")
    spec_file = project / "meguri.yaml"
    assert "for project breast-cancer and saved it as spec version #1" in out
    spec = load_spec(spec_file)
    assert spec.project == "breast-cancer"
    assert spec.data.sources[0].uri == "bundled://breast_cancer"
    assert (project / ".meguri").is_dir()
    assert "# meguri.yaml: the project spec" in spec_file.read_text(encoding="utf-8")


def test_init_refuses_to_overwrite_without_force(project: Path) -> None:
    ok("init", "--name", "first")
    result = meguri("init", "--name", "second")
    assert isinstance(result.exception, SpecError)
    assert "already exists; edit it, or pass --force" in str(result.exception)
    assert load_spec().project == "first"
    ok("init", "--name", "second", "--force")
    assert load_spec().project == "second"
    assert not list(project.glob(".meguri.yaml.*"))  # no temporary file left


def test_init_rejects_a_bad_name_before_writing(project: Path) -> None:
    result = meguri("init", "--name", "bad name")
    assert isinstance(result.exception, SpecError)
    assert "project: 'bad name' is not a valid name" in str(result.exception)
    assert not (project / "meguri.yaml").exists()


def test_init_into_another_folder(project: Path) -> None:
    ok("init", "sub/proj")
    assert load_spec(project / "sub" / "proj").project == "proj"


def test_validate_reports_summary_warnings_and_errors(project: Path) -> None:
    ok("init")
    out = ok("spec", "validate")
    assert "is valid: project breast-cancer, binary_classification of 'malignant'" in out
    assert "6 success criteria (test: 2, validation: 1, staging: 1, production: 2)" in out
    edit(project / "meguri.yaml", "monitor:\n", "monitor:\n  windw: 2h\n")
    assert "warning: monitor.windw is not read; did you mean 'window'?" in ok("spec", "validate")
    edit(project / "meguri.yaml", "task: binary_classification", "task: binary")
    result = meguri("spec", "validate")
    assert isinstance(result.exception, SpecError)
    assert "requirements.functional.task: 'binary' is not allowed" in str(result.exception)


def test_save_history_show_and_diff(project: Path) -> None:
    ok("init")
    assert "Unchanged: " in ok("spec", "save")
    edit(project / "meguri.yaml", "version: 1\n", "version: 1  # reviewed\n")
    assert "is spec version #1" in ok("spec", "save")  # a comment is not a new version
    edit(project / "meguri.yaml", "threshold: 0.95", "threshold: 0.97")
    diff = ok("spec", "diff")
    assert "~ success_criteria[auc-test].threshold: 0.95 → 0.97 (stricter)" in diff
    assert "+    threshold: 0.97" in diff
    assert "Saved spec version #2" in ok("spec", "save", "-m", "stricter AUC")
    history = ok("spec", "history")
    assert "stricter AUC" in history
    assert "meguri init" in history
    assert "2 ●" in history
    assert "No difference." in ok("spec", "diff", "latest", "file")
    assert "1 change(s)" in ok("spec", "diff", "1", "2")
    shown = ok("spec", "show", "latest~1")
    assert "#1 spec-" in shown
    assert "roc_auc" in shown
    raw = ok("spec", "show", "2", "--raw")
    assert raw == (project / "meguri.yaml").read_text(encoding="utf-8")


def test_spec_refs_that_do_not_exist(project: Path) -> None:
    ok("init")
    result = meguri("spec", "show", "7")
    assert isinstance(result.exception, NotFoundError)
    assert "No spec version #7; this project has 1" in str(result.exception)


def test_spec_commands_without_a_spec_file(project: Path) -> None:
    result = meguri("spec", "validate")
    assert isinstance(result.exception, SpecError)
    assert "run `meguri init`" in str(result.exception)
    assert "No spec version saved" in ok("spec", "history")


def test_docs_add_show_history_diff_and_list(project: Path) -> None:
    notes = project / "design.md"
    notes.write_text("# Design\n\nLogistic baseline.\n", encoding="utf-8")
    assert "Saved design version 1" in ok("docs", "add", "design", str(notes), "-m", "draft")
    assert "Unchanged: " in ok("docs", "add", "design", str(notes))
    notes.write_text("# Design\n\nGradient boosting.\n", encoding="utf-8")
    assert "Saved design version 2" in ok("docs", "add", "design", str(notes))
    assert ok("docs", "show", "design", "--raw") == "# Design\n\nGradient boosting.\n"
    assert "Logistic baseline." in ok("docs", "show", "design", "--version", "1")
    history = ok("docs", "history", "design")
    assert "draft" in history
    diff = ok("docs", "diff", "design")
    assert "-Logistic baseline.\n+Gradient boosting." in diff
    assert "No difference" in ok("docs", "diff", "design", "latest", str(notes))
    listing = ok("docs", "list")
    assert "design" in listing
    assert "ana" in listing


def test_docs_errors(project: Path) -> None:
    result = meguri("docs", "add", "design", "absent.md")
    assert isinstance(result.exception, ConfigError)
    assert "absent.md does not exist" in str(result.exception)
    result = meguri("docs", "show", "design")
    assert isinstance(result.exception, NotFoundError)
    assert "`meguri docs add NAME FILE` adds one" in str(result.exception)
    (project / "n.md").write_text("x", encoding="utf-8")
    result = meguri("docs", "add", "bad name", "n.md")
    assert isinstance(result.exception, SpecError)
    assert "No documents" in ok("docs", "list")
