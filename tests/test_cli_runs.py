"""``meguri runs …`` and ``meguri demo`` as a user runs them: the real console script."""

from __future__ import annotations

from pathlib import Path

import pytest

import meguri
from meguri.testing.cli import run_meguri

_meguri = run_meguri


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tracked runs: a baseline with per-fold CV history and artifacts, and a tuned one."""
    folder = tmp_path_factory.mktemp("runs")
    ws = meguri.open_workspace(folder)
    params = {"C": 1.0, "cv_folds": 5}
    with meguri.start_run("logreg-baseline", experiment="demo", workspace=ws, params=params) as run:
        for fold, auc in enumerate((0.99, 0.98, 0.995, 0.97, 0.985)):
            run.log_metric("cv/roc_auc", auc, step=fold)
        run.log_metrics({"test/roc_auc": 0.99, "validation/roc_auc": 0.98})
        run.log_dict({"coefficients": {"mean_radius": 1.5}}, "model/coefficients.json")
    with meguri.start_run("tuned", experiment="demo", workspace=ws, params={"C": 0.5}) as run:
        run.log_metric("test/roc_auc", 0.5)
    ws.close()
    return folder


def test_runs_record_history_and_artifacts(demo_project: Path) -> None:
    ws = meguri.open_workspace(demo_project)
    [run] = meguri.search_runs("name = 'logreg-baseline'", workspace=ws)
    assert run.status is meguri.RunStatus.FINISHED
    assert run.metrics["test/roc_auc"].value == 0.99
    assert len(meguri.get_metric_history(run.id, "cv/roc_auc", workspace=ws)) == 5
    names = {a.name for a in ws.metadata.runs.list_artifacts(run.id)}
    assert names == {"model/coefficients.json"}
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
