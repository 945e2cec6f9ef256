"""``meguri data profile|check|prepare`` as a user runs them on a fresh project."""

from __future__ import annotations

from pathlib import Path

import pytest

from meguri.testing.cli import run_meguri

_meguri = run_meguri


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("phase")
    assert _meguri("init", cwd=folder).returncode == 0
    return folder


def test_prepare_profile_check(project: Path) -> None:
    prepared = _meguri("data", "prepare", cwd=project)
    assert prepared.returncode == 0, prepared.stderr
    for text in ("breast_cancer-train@1", "breast_cancer-test@1", "impute", "select"):
        assert text in prepared.stdout
    report = project / "profile.html"
    profiled = _meguri("data", "profile", "breast_cancer", "--html", str(report), cwd=project)
    assert profiled.returncode == 0, profiled.stderr
    assert "mean_radius" in profiled.stdout and report.stat().st_size > 1_000_000
    checked = _meguri("data", "check", "breast_cancer", cwd=project)
    assert checked.returncode == 0, checked.stderr
    assert "range(mean_radius)" in checked.stdout and "pass" in checked.stdout


def test_failing_check_exits_one_with_rows(project: Path) -> None:
    spec = project / "meguri.yaml"
    spec.write_text(spec.read_text().replace("        max: 50\n", "        max: 20\n"))
    checked = _meguri("data", "check", "breast_cancer", cwd=project)
    assert checked.returncode == 1
    assert "range(mean_radius)" in checked.stdout and "error" in checked.stdout
    prepared = _meguri("data", "prepare", cwd=project)
    assert prepared.returncode == 1
    assert prepared.stderr.startswith("error:") and "mean_radius" in prepared.stderr
    assert "Traceback" not in prepared.stderr
