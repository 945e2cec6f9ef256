"""``meguri models …`` as a user runs it: the real console script on a real project folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from meguri.store import open_workspace
from meguri.store.metadata import ArtifactRef, CheckResult
from meguri.testing.cli import run_meguri
from meguri.train import start_run


def _package_run(folder: Path, seed: str, auc: float | None) -> str:
    """A run whose artifacts hold a small package (and, unless ``auc`` is None, a gate)."""
    ws = open_workspace(folder)
    with start_run("train", workspace=ws) as run:
        pass
    body = seed.encode()
    manifest = {
        "format": "meguri.model",
        "task": "binary_classification",
        "signature": {"inputs": []},
        "metrics": {"test/roc_auc": auc or 0.5},
        "runtime": "onnx",
        "files": {"estimator.onnx": {"sha256": hashlib.sha256(body).hexdigest(), "size": 1}},
    }
    for name, data in (("estimator.onnx", body), ("model.json", orjson.dumps(manifest))):
        stored = ws.artifacts.put_bytes(data)
        ref = ArtifactRef(f"model/{name}", stored.digest, stored.size, "application/json", 1.0)
        ws.metadata.runs.add_artifact(run.id, ref)
    if auc is not None:
        ws.metadata.checks.record([_check(ws.project.id, run.id, auc)])
    ws.close()
    return run.id


def _check(project_id: str, run_id: str, auc: float) -> CheckResult:
    return CheckResult(
        id="",
        project_id=project_id,
        spec_version_id=None,
        criterion_id="auc-test",
        stage="test",
        metric="roc_auc",
        comparison=">=",
        threshold=0.9,
        value=auc,
        passed=auc >= 0.9,
        subject_kind="run",
        subject_id=run_id,
        created_at=0.0,
        created_by="ann",
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    empty = run_meguri("models", "list", cwd=folder)
    assert empty.returncode == 0, empty.stderr
    assert "No models yet" in empty.stdout
    good, bad = _package_run(folder, "a", 0.97), _package_run(folder, "b", 0.81)
    for run_id in (good, bad):
        out = run_meguri("models", "register", run_id, "--name", "churn", cwd=folder)
        assert out.returncode == 0, out.stderr
    assert "churn@2" in out.stdout
    return folder


def test_promote_alias_show_and_archive(project: Path) -> None:
    blocked = run_meguri("models", "promote", "churn@2", cwd=project)
    assert blocked.returncode == 1
    assert "auc-test (test roc_auc = 0.81, needs >= 0.9)" in blocked.stderr
    assert '--override "reason"' in blocked.stderr
    assert "Traceback" not in blocked.stderr
    ok = run_meguri("models", "promote", "churn@1", cwd=project)
    assert ok.returncode == 0, ok.stderr
    assert "production -> churn@1" in ok.stdout
    forced = run_meguri(
        "models", "promote", "churn@2", "--to", "canary", "--override", "A/B test", cwd=project
    )
    assert forced.returncode == 0, forced.stderr
    assert run_meguri("models", "alias", "churn@2", "staging", cwd=project).returncode == 0
    show = run_meguri("models", "show", "churn@production", cwd=project)
    assert show.returncode == 0, show.stderr
    for text in ("gate_override", "reason=A/B test", "promoted", "production", "staging", "fail"):
        assert text in show.stdout, text
    listed = run_meguri("models", "list", cwd=project)
    assert "production -> 1" in listed.stdout and "staging -> 2" in listed.stdout
    archived = run_meguri("models", "archive", "churn@2", cwd=project)
    assert archived.returncode == 0 and "archived churn@2" in archived.stdout
    removed = run_meguri("models", "alias", "churn", "production", "--remove", cwd=project)
    assert removed.returncode == 0, removed.stderr


def test_errors_are_one_line(project: Path) -> None:
    for args in (
        ("models", "show", "churn@nope"),
        ("models", "register", "run-nope", "--name", "churn"),
    ):
        out = run_meguri(*args, cwd=project)
        assert out.returncode == 1, args
        assert out.stderr.startswith("error:") and out.stderr.count("\n") == 1, out.stderr
