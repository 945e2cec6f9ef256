"""``meguri.train``'s engine: candidates, per-fold refitted preparation, leaderboard, gates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import meguri
from meguri.spec import parse_spec, render_example_spec
from meguri.store import Workspace
from meguri.train._train import train
from meguri.train._zoo import candidates


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = meguri.open_workspace(tmp_path, project="engine")
    yield workspace
    workspace.close()


def _spec(
    algorithms: str, extra: str = "", size_mb: str = "20", budget_minutes: str = "10"
) -> meguri.ProjectSpec:
    text = render_example_spec("engine")
    text = text.replace("max_model_size_mb: 20", f"max_model_size_mb: {size_mb}")
    text = text.replace(
        "training_time_budget_minutes: 10", f"training_time_budget_minutes: {budget_minutes}"
    )
    start = text.index("  prepare:")
    end = text.index("  # Reproducible by row hash")
    text = text[:start] + "  prepare:\n    - scale: {method: standard}\n" + text[end:]
    text = text.replace("  cv_folds: 5\n", f"  cv_folds: 3\n{extra}", 1)
    return parse_spec(_allow(text, algorithms))


def _allow(text: str, algorithms: str) -> str:
    start = text.index("  allowed_algorithms:")
    end = text.index("\n", text.index("]", start))
    return text[:start] + f"  allowed_algorithms: [{algorithms}]" + text[end:]


def test_cv_refits_the_preparation_per_fold(ws: Workspace) -> None:
    spec = _spec("linear")
    result = train(spec, workspace=ws)
    [linear] = result.leaderboard
    raw = result.prepared.raw["train"]
    x, y = raw.drop("malignant").to_numpy(), raw.get_column("malignant").to_numpy()
    estimator = candidates(spec.requirements.functional.task, ["linear"])[0].build(
        linear.params, spec.model.seed
    )
    folds = StratifiedKFold(3, shuffle=True, random_state=spec.model.seed)
    expected = cross_val_score(
        make_pipeline(StandardScaler(), estimator), x, y, cv=folds, scoring="roc_auc"
    )
    assert linear.cv["roc_auc"][0] == pytest.approx(expected.mean(), rel=1e-9)
    assert linear.cv["roc_auc"][1] == pytest.approx(expected.std(ddof=1), rel=1e-6)
    history = meguri.get_metric_history(linear.run_id, "cv/roc_auc", workspace=ws)
    assert np.allclose(history.values, expected)


def test_leaderboard_runs_and_gates_are_recorded(ws: Workspace) -> None:
    spec = _spec("linear, random_forest")
    result = train(spec, workspace=ws, spec_version_id=None)
    names = [c.name for c in result.leaderboard]
    assert sorted(names) == ["linear", "random_forest"]
    means = [c.cv["roc_auc"][0] for c in result.leaderboard]
    assert means == sorted(means, reverse=True)
    parent = meguri.get_run(result.run_id, workspace=ws)
    assert parent.tags["best_algorithm"] == result.best.name
    children = meguri.search_runs(f"parent_run_id = '{result.run_id}'", workspace=ws)
    assert sorted(r.name for r in children) == sorted(names)
    assert {r.parent_run_id for r in children} == {result.run_id}
    assert parent.metrics["test/roc_auc"].value == result.metrics["test/roc_auc"]
    stored = ws.metadata.checks.for_subject("run", result.run_id)
    assert [c.criterion_id for c in stored] == [
        "auc-test",
        "recall-test",
        "balanced-accuracy-validation",
    ]
    assert all(c.passed for c in stored) == all(c.passed for c in result.checks)
    artifacts = {a.name for a in ws.metadata.runs.list_artifacts(result.run_id)}
    assert {"evaluation/test_slices.json", "evaluation/test_worst_rows.json"} <= artifacts
    assert "plots/roc.plotly.json" in artifacts
    low, high = result.intervals["roc_auc"]
    assert low <= result.metrics["test/roc_auc"] <= high


def test_unknown_primary_metric_names_the_setting(ws: Workspace) -> None:
    spec = _spec("linear", extra="  metric: auroc\n")
    with pytest.raises(meguri.errors.SpecError, match=r"model\.metric: 'auroc'"):
        train(spec, workspace=ws)


def test_max_model_size_picks_the_best_model_that_fits(ws: Workspace) -> None:
    from meguri.train._zoo import model_size_bytes

    limited = _spec("linear, random_forest", size_mb="0.01")  # 10 KB: a forest is larger
    result = train(limited, workspace=ws)
    assert result.best.name == "linear"
    assert model_size_bytes(result.model) <= 0.01 * 2**20
    assert {c.name for c in result.leaderboard} == {"linear", "random_forest"}
    with pytest.raises(meguri.errors.TrainError, match="max_model_size_mb"):
        train(_spec("linear, random_forest", size_mb="0.000001"), workspace=ws)


def test_training_time_budget_skips_the_remaining_candidates(ws: Workspace) -> None:
    spec = _spec("linear, random_forest", budget_minutes="0.000001")
    result = train(spec, workspace=ws)
    assert [c.name for c in result.leaderboard] == ["linear"]
    assert meguri.get_run(result.run_id, workspace=ws).tags["skipped_by_budget"] == "random_forest"
