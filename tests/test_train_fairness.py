"""Fairness gaps across a declared sensitive attribute: the Adult data's real gap by sex,
checked against a direct numpy computation on the same predictions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import meguri
from meguri.errors import DataError, SpecError
from meguri.spec import parse_spec
from meguri.train._fairness import fairness_report
from meguri.train._train import TrainResult, train

EXAMPLE = Path(__file__).parent.parent / "examples" / "adult" / "meguri.yaml"
FAIRNESS = """  fairness:
    sensitive: [sex, race]
    min_rows: 30
"""
CRITERIA = """  - id: four-fifths-sex
    metric: fairness/sex/demographic_parity_ratio
    measured_on: test
    comparison: ">="
    threshold: 0.8
  - id: equal-opportunity-sex
    metric: fairness/sex/equal_opportunity_difference
    measured_on: test
    comparison: "<="
    threshold: 0.5
"""


def adult_spec(fairness: str = FAIRNESS, criteria: str = CRITERIA) -> meguri.ProjectSpec:
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("[linear, hist_gradient_boosting, lightgbm]", "[lightgbm]")
    text = text.replace(
        "  cv_folds: 5\n", "  cv_folds: 2\n  params: {lightgbm: {n_estimators: 60}}\n"
    )
    text = text.replace("requirements:\n", criteria + "requirements:\n", 1)
    return parse_spec(text + fairness)


@pytest.fixture(scope="module")
def adult(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TrainResult, meguri.Workspace]]:
    ws = meguri.open_workspace(tmp_path_factory.mktemp("adult"), project="adult")
    yield train(adult_spec(), workspace=ws), ws
    ws.close()


def _test_predictions(
    result: TrainResult, ws: meguri.Workspace
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    raw = result.prepared.raw["test"]
    frame = result.prepared.frame("test", workspace=ws)
    x = frame.drop(result.prepared.target).to_numpy()
    y = frame.get_column(result.prepared.target).to_numpy()
    return raw, y, result.model.predict(x)


def test_adult_sex_gaps_match_numpy(adult: tuple[TrainResult, meguri.Workspace]) -> None:
    result, ws = adult
    raw, y, pred = _test_predictions(result, ws)
    sex = raw.get_column("sex").to_numpy()
    expected = {}
    for group in ("Female", "Male"):
        mask = sex == group
        expected[group] = {
            "rows": int(mask.sum()),
            "selection_rate": float((pred[mask] == 1).mean()),
            "tpr": float((pred[mask & (y == 1)] == 1).mean()),
            "fpr": float((pred[mask & (y == 0)] == 1).mean()),
            "accuracy": float((pred[mask] == y[mask]).mean()),
        }
    report = result.fairness
    assert report is not None
    groups = report.columns["sex"].to_dict()["groups"]
    for group, values in expected.items():
        for key, value in values.items():
            assert groups[group][key] == pytest.approx(value, abs=1e-12), (group, key)
    rates = [expected[g]["selection_rate"] for g in ("Female", "Male")]
    gaps = report.columns["sex"].gaps
    assert gaps["demographic_parity_ratio"] == pytest.approx(min(rates) / max(rates))
    assert gaps["demographic_parity_difference"] == pytest.approx(max(rates) - min(rates))
    tprs = [expected[g]["tpr"] for g in ("Female", "Male")]
    fprs = [expected[g]["fpr"] for g in ("Female", "Male")]
    tpr_gap, fpr_gap = abs(tprs[0] - tprs[1]), abs(fprs[0] - fprs[1])
    assert gaps["equal_opportunity_difference"] == pytest.approx(tpr_gap)
    assert gaps["equalized_odds_difference"] == pytest.approx(max(tpr_gap, fpr_gap))
    # The known real gap: women are predicted above $50K far less often than men.
    assert gaps["demographic_parity_ratio"] < 0.5
    assert "roc_auc_difference" in gaps


def test_fairness_is_logged_and_gated(adult: tuple[TrainResult, meguri.Workspace]) -> None:
    result, ws = adult
    ratio = result.metrics["test/fairness/sex/demographic_parity_ratio"]
    run = meguri.get_run(result.run_id, workspace=ws)
    assert run.metrics["test/fairness/sex/demographic_parity_ratio"].value == pytest.approx(ratio)
    assert "test/fairness/race/equalized_odds_difference" in run.metrics
    [artifact] = [
        a
        for a in ws.metadata.runs.list_artifacts(result.run_id)
        if a.name == "evaluation/test_fairness.json"
    ]
    stored = json.loads(ws.artifacts.get_bytes(artifact.digest))
    assert stored["columns"]["sex"]["gaps"]["demographic_parity_ratio"] == pytest.approx(ratio)
    race = stored["columns"]["race"]
    small = [g for g, row in race["groups"].items() if row["rows"] < 30]
    assert sorted(race["left_out_of_gaps"]) == sorted(small)
    checks = {c.criterion_id: c for c in result.checks}
    assert checks["four-fifths-sex"].value == pytest.approx(ratio)
    assert checks["four-fifths-sex"].passed is False
    assert checks["equal-opportunity-sex"].passed is True


def test_small_groups_are_left_out_of_gaps() -> None:
    frame = pl.DataFrame({"g": ["a"] * 40 + ["b"] * 40 + ["c"] * 5})
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 85)
    pred = np.r_[np.ones(40), rng.integers(0, 2, 40), np.zeros(5)].astype(int)
    report = fairness_report(frame, y, pred, task="binary_classification", sensitive=["g"])
    rate_b = pred[40:80].mean()
    assert report.columns["g"].gaps["demographic_parity_ratio"] == pytest.approx(rate_b)
    assert report.columns["g"].extremes["selection_rate"] == {"lowest": "b", "highest": "a"}
    assert report.columns["g"].to_dict()["left_out_of_gaps"] == ["c"]


def test_regression_reports_metric_gaps() -> None:
    frame = pl.DataFrame({"g": ["a", "a", "b", "b"]})
    y, pred = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 4.0, 6.0])
    report = fairness_report(
        frame, y, pred, task="regression", sensitive=["g"], metrics=["mae"], min_rows=1
    )
    assert report.metrics() == {"fairness/g/mae_difference": pytest.approx(1.5)}


def test_unknown_sensitive_column_names_the_fix() -> None:
    with pytest.raises(DataError, match="'sexe' is not a column"):
        fairness_report(
            pl.DataFrame({"sex": ["a"]}), [1], [1], task="binary_classification", sensitive=["sexe"]
        )


@pytest.mark.parametrize(
    ("fairness", "criteria", "fragment"),
    [
        ("", CRITERIA, "needs model.fairness.sensitive"),
        (FAIRNESS, CRITERIA.replace("sex/demographic", "age/demographic"), "(sex, race)"),
        (FAIRNESS, CRITERIA.replace("parity_ratio", "parity_rate"), "not a known fairness gap"),
        (FAIRNESS, CRITERIA.replace("measured_on: test", "measured_on: validation"), "on test"),
        (FAIRNESS.replace("race", "source_split"), "", "excluded_columns"),
        (FAIRNESS.replace("race", "sex"), "", "appears more than once"),
        (FAIRNESS + "    metrics: [auroc]\n", "", "roc_auc"),
        ("  fairness: {sensitive: []}\n", "", "at least 1"),
    ],
)
def test_spec_errors_point_at_the_line(fairness: str, criteria: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=r"meguri\.yaml:\d+:\d+") as caught:
        adult_spec(fairness, criteria)
    assert fragment in str(caught.value)
