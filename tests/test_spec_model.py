"""The spec models: what a valid spec holds, cross-field checks, criteria evaluation."""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from meguri.spec import (
    ProjectSpec,
    SuccessCriterion,
    compare,
    duration_seconds,
    evaluate,
    is_stricter,
    margin,
    parse_spec,
    render_example_spec,
    slugify,
)


def minimal(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": 1,
        "project": "churn",
        "objective": {"problem": "p", "expected_outcome": "o", "kpi": "k"},
        "requirements": {"functional": {"task": "regression", "target": "y"}},
    }
    data.update(sections)
    return data


def criterion(**fields: Any) -> dict[str, Any]:
    base = {"id": "auc", "metric": "roc_auc", "measured_on": "test", "comparison": ">="}
    return {**base, "threshold": 0.9, **fields}


def test_minimal_spec_gets_defaults() -> None:
    spec = ProjectSpec.model_validate(minimal())
    assert spec.success_criteria == []
    assert spec.constraints.excluded_columns == []
    assert spec.constraints.allowed_algorithms is None
    assert spec.requirements.non_functional.explainability == "none"
    assert spec.pipeline.compute == "local"
    assert spec.monitor.window == "1h"
    assert spec.model.cv_folds == 5


def test_example_spec_is_valid_and_complete() -> None:
    spec = parse_spec(render_example_spec("breast-cancer", today=date(2025, 1, 6)))
    assert spec.project == "breast-cancer"
    assert spec.requirements.functional.task == "binary_classification"
    assert spec.requirements.functional.target == "malignant"
    assert [c.id for c in spec.criteria_on("test")] == ["auc-test", "recall-test"]
    assert {c.measured_on for c in spec.success_criteria} == {
        "test",
        "validation",
        "staging",
        "production",
    }
    assert spec.data.sources[0].uri == "bundled://breast_cancer"
    assert spec.resources.schedule.start == date(2025, 1, 6)
    assert set(spec.deploy.environments) == {"staging", "production"}
    assert spec.warnings() == []


def test_spec_is_immutable() -> None:
    spec = ProjectSpec.model_validate(minimal())
    with pytest.raises(ValidationError):
        spec.project = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("sections", "fragment"),
    [
        ({"success_criteria": [criterion(), criterion()]}, "criterion id 'auc' appears more"),
        ({"constraints": {"excluded_columns": ["y"]}}, "a target cannot be excluded"),
        ({"constraints": {"allowed_algorithms": ["lgbm"]}}, "did you mean 'lightgbm'"),
        ({"constraints": {"allowed_algorithms": []}}, "name at least one algorithm"),
        ({"resources": {"team": [{"name": "a"}, {"name": "a"}]}}, "team member 'a'"),
        ({"resources": {"schedule": {"start": "2025-02-01", "end": "2025-01-01"}}}, "before"),
        ({"data": {"sources": [{"name": "a", "uri": "x"}, {"name": "a", "uri": "y"}]}}, "source"),
        ({"monitor": {"window": "soon"}}, "is not a duration"),
        ({"model": {"cv_folds": 1}}, "greater than or equal to 2"),
        ({"deploy": {"environments": {"staging": {"capture_rate": 2}}}}, "less than or equal"),
        ({"project": "my project"}, "is not a valid name"),
        ({"objective": {"problem": " ", "expected_outcome": "o", "kpi": "k"}}, "must not be empty"),
    ],
)
def test_invalid_specs_name_the_problem(sections: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        ProjectSpec.model_validate(minimal(**sections))


def test_inputs_cannot_hold_the_target_or_excluded_columns() -> None:
    functional = {"task": "regression", "target": "y", "inputs": ["y", "x", "x", "ssn"]}
    data = minimal(requirements={"functional": functional})
    with pytest.raises(ValidationError) as info:
        ProjectSpec.model_validate(data)
    message = str(info.value)
    assert "target 'y' cannot also be an input" in message
    assert "'x' appears more than once" in message
    data["requirements"]["functional"]["inputs"] = ["x", "ssn"]
    data["constraints"] = {"excluded_columns": ["ssn"]}
    with pytest.raises(ValidationError, match=r"'ssn' is listed in constraints\.excluded_columns"):
        ProjectSpec.model_validate(data)


def test_unknown_keys_in_open_sections_are_warnings() -> None:
    spec = ProjectSpec.model_validate(minimal(deploy={"enviroments": {}}, monitor={"later": 1}))
    assert spec.warnings() == [
        "deploy.enviroments is not read; did you mean 'environments'?",
        "monitor.later is not read by this version of meguri",
        "success_criteria is empty: no gate can pass or fail; add criteria",
    ]


def test_uncovered_skills_are_warnings() -> None:
    resources = {"team": [{"name": "a", "skills": ["Python"]}], "skills_needed": ["python", "SQL"]}
    spec = ProjectSpec.model_validate(minimal(resources=resources, success_criteria=[criterion()]))
    assert spec.warnings() == ["resources.skills_needed: no team member lists 'SQL'"]


def test_criterion_lookup() -> None:
    spec = ProjectSpec.model_validate(minimal(success_criteria=[criterion()]))
    assert spec.criterion("auc").metric == "roc_auc"
    assert str(spec.criterion("auc")) == "roc_auc >= 0.9 on test"
    with pytest.raises(KeyError, match="known: auc"):
        spec.criterion("nope")


@pytest.mark.parametrize(
    ("comparison", "value", "passed", "room"),
    [
        (">=", 0.9, True, 0.0),
        (">=", 0.95, True, 0.05),
        (">", 0.9, False, 0.0),
        ("<=", 0.8, True, 0.1),
        ("<", 0.95, False, -0.05),
        ("==", 0.9 + 1e-12, True, -1e-12),
        ("==", 0.91, False, -0.01),
    ],
)
def test_compare_and_margin(comparison: Any, value: float, passed: bool, room: float) -> None:
    assert compare(value, comparison, 0.9) is passed
    assert margin(value, comparison, 0.9) == pytest.approx(room, abs=1e-12)


def test_missing_or_nan_values_never_pass() -> None:
    c = SuccessCriterion.model_validate(criterion())
    for value in (None, math.nan):
        outcome = evaluate(c, value)
        assert not outcome.passed
        assert math.isnan(outcome.margin)
        assert outcome.message == "auc: no value for roc_auc on test: fail"
    assert c.check(0.95)
    assert not c.check(math.nan)


def test_outcome_messages() -> None:
    c = SuccessCriterion.model_validate(criterion(threshold=0.95))
    assert evaluate(c, 0.97).message == "auc: roc_auc = 0.97, required >= 0.95: pass"
    assert evaluate(c, 0.93).message == "auc: roc_auc = 0.93, required >= 0.95: fail (by 0.02)"


def test_stricter() -> None:
    assert is_stricter(">=", 0.9, 0.95) is True
    assert is_stricter("<=", 50, 40) is True
    assert is_stricter("<", 50, 60) is False
    assert is_stricter("==", 1, 2) is None
    assert is_stricter(">", 1, 1) is None


def test_durations_and_slugify() -> None:
    assert [duration_seconds(d) for d in ("90s", "15m", "1h", "1.5d", "2w")] == [
        90,
        900,
        3600,
        129600,
        1209600,
    ]
    with pytest.raises(ValueError, match="not a duration"):
        duration_seconds("0h")
    assert slugify("My Project (v2)") == "my-project-v2"
    assert slugify("???") == "my-project"


def test_exported_names_are_exactly_all() -> None:
    import types

    import meguri.spec

    public = {
        name
        for name, value in vars(meguri.spec).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert public == set(meguri.spec.__all__)


def test_cross_validation_reads_the_older_and_the_newer_setting() -> None:
    old = ProjectSpec.model_validate(minimal(model={"cv_folds": 3}))
    assert old.model.cross_validation.folds == 3 and old.model.cv is None
    assert old.model.cross_validation.resolved_method("regression") == "kfold"
    new = ProjectSpec.model_validate(minimal(model={"cv": {"method": "group", "group": "g"}}))
    assert new.model.cv_folds == 5 and new.model.cross_validation.group == "g"
    assert new.model.cross_validation.resolved_method("regression") == "group"


def test_fairness_section_defaults() -> None:
    spec = ProjectSpec.model_validate(minimal(model={"fairness": {"sensitive": ["sex"]}}))
    assert spec.model.fairness is not None
    assert (spec.model.fairness.min_rows, spec.model.fairness.bins) == (30, 5)
    assert spec.model.fairness.metrics == []
    assert spec.warnings() == ["success_criteria is empty: no gate can pass or fail; add criteria"]
