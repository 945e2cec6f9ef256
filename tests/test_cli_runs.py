"""``meguri runs …`` and ``meguri demo`` as a user runs them: the real console script."""

from __future__ import annotations

from pathlib import Path

import pytest

import meguri
from meguri.testing.cli import run_meguri

_meguri = run_meguri


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    first = _meguri("demo", "--dir", str(folder), cwd=folder)
    assert first.returncode == 0, first.stderr
    assert "auc-test" in first.stdout and "pass" in first.stdout
    ws = meguri.open_workspace(folder)
    with meguri.start_run("tuned", experiment="demo", workspace=ws, params={"C": 0.5}) as run:
        run.log_metric("test/roc_auc", 0.5)
    ws.close()
    return folder


def test_demo_records_spec_run_and_artifacts(demo_project: Path) -> None:
    ws = meguri.open_workspace(demo_project)
    [run] = meguri.search_runs("name = 'logreg-baseline'", workspace=ws)
    assert run.status is meguri.RunStatus.FINISHED
    assert run.spec_version_id is not None
    assert ws.metadata.specs.get(run.spec_version_id).content.startswith("#")
    assert run.metrics["test/roc_auc"].value > 0.95
    assert len(meguri.get_metric_history(run.id, "cv/roc_auc", workspace=ws)) == 5
    names = {a.name for a in ws.metadata.runs.list_artifacts(run.id)}
    assert names == {"plots/roc_test.plotly.json", "model/coefficients.json"}
    ws.close()


def test_runs_list_filters_and_orders(demo_project: Path) -> None:
    out = _meguri(
        "runs", "list", "-o", "metrics.`test/roc_auc` asc", "-m", "test/roc_auc", cwd=demo_project
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.index("tuned") < out.stdout.index("logreg-baseline")
    only = _meguri("runs", "list", "-f", "params.C = 0.5", cwd=demo_project)
    assert "tuned" in only.stdout and "logreg-baseline" not in only.stdout


def test_runs_show_and_compare(demo_project: Path) -> None:
    show = _meguri("runs", "show", "tuned", cwd=demo_project)
    assert show.returncode == 0, show.stderr
    assert "finished" in show.stdout and "test/roc_auc" in show.stdout
    compare = _meguri("runs", "compare", "tuned", "logreg-baseline", cwd=demo_project)
    assert compare.returncode == 0, compare.stderr
    assert "param C" in compare.stdout and "0.5" in compare.stdout


def test_errors_are_one_line_without_traceback(demo_project: Path) -> None:
    missing = _meguri("runs", "show", "no-such-run", cwd=demo_project)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: No run matches 'no-such-run'")
    assert "Traceback" not in missing.stderr
    bad = _meguri("runs", "list", "-f", "metrics.auc >>> 1", cwd=demo_project)
    assert bad.returncode == 1 and "Cannot read the filter clause" in bad.stderr
    assert "Traceback" not in bad.stderr
