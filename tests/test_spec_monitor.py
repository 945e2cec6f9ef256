"""The ``monitor:`` section: drift settings, alert rules, notifiers and their cross-checks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from meguri.spec import AlertRuleSpec, MonitorSpec, NotifierSpec, ProjectSpec


def spec(monitor: dict[str, Any], criteria: list[dict[str, Any]] | None = None) -> ProjectSpec:
    return ProjectSpec.model_validate(
        {
            "version": 1,
            "project": "churn",
            "objective": {"problem": "p", "expected_outcome": "o", "kpi": "k"},
            "requirements": {"functional": {"task": "binary_classification", "target": "y"}},
            "success_criteria": criteria or [],
            "monitor": monitor,
        }
    )


def test_defaults_follow_the_evidently_rule() -> None:
    monitor = MonitorSpec()
    assert monitor.window_seconds() == 3600
    assert (monitor.drift.threshold, monitor.drift.p_value, monitor.drift.share) == (0.1, 0.05, 0.5)
    assert monitor.alerts == [] and monitor.notifiers == {}
    assert monitor.retrain.environment == "production"


def test_a_full_section_parses() -> None:
    parsed = spec(
        {
            "window": "15m",
            "drift": {
                "columns": {"age": {"method": "psi", "threshold": 0.2}},
                "multivariate": {"threshold": 0.6},
            },
            "alerts": [
                {
                    "name": "drift",
                    "figure": "drift.share",
                    "above": 0.3,
                    "clear": 0.2,
                    "windows": 2,
                    "of": 3,
                    "notify": ["ops"],
                    "retrain": True,
                },
                {"name": "auc", "criterion": "auc-prod"},
            ],
            "notifiers": {
                "ops": {"kind": "webhook", "url": "http://127.0.0.1:1/x", "allow_private": True}
            },
        },
        [
            {
                "id": "auc-prod",
                "metric": "roc_auc",
                "measured_on": "production",
                "comparison": ">=",
                "threshold": 0.8,
            }
        ],
    ).monitor
    assert parsed.window_seconds() == 900
    assert parsed.drift.columns["age"].method == "psi"
    assert parsed.alerts[0].windows == 2 and parsed.alerts[1].criterion == "auc-prod"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "x"}, "exactly one of figure or criterion"),
        ({"name": "x", "figure": "error_rate"}, "exactly one of above or below"),
        ({"name": "x", "figure": "error_rate", "above": 1, "below": 0}, "exactly one of above"),
        (
            {"name": "x", "figure": "error_rate", "above": 0.1, "windows": 3, "of": 2},
            "cannot exceed",
        ),
        (
            {"name": "x", "figure": "error_rate", "above": 0.1, "clear": 0.2},
            "clear must be at or below",
        ),
        ({"name": "x", "figure": "no such figure!", "above": 1}, "not a window figure"),
        ({"name": "x", "criterion": "c", "above": 1}, "carries its own threshold"),
    ],
)
def test_bad_alert_rules_name_the_fix(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AlertRuleSpec.model_validate(rule)


def test_notifiers_need_their_address() -> None:
    with pytest.raises(ValidationError, match="needs url"):
        NotifierSpec(kind="webhook")
    with pytest.raises(ValidationError, match="smtp"):
        NotifierSpec(kind="email", to=["a@example.com"])


def test_alerts_name_declared_notifiers_and_production_criteria() -> None:
    with pytest.raises(ValidationError, match="does not declare"):
        spec({"alerts": [{"name": "a", "figure": "error_rate", "above": 0.1, "notify": ["x"]}]})
    with pytest.raises(ValidationError, match="measured on production"):
        spec(
            {"alerts": [{"name": "a", "criterion": "auc"}]},
            [
                {
                    "id": "auc",
                    "metric": "roc_auc",
                    "measured_on": "test",
                    "comparison": ">=",
                    "threshold": 0.8,
                }
            ],
        )
    with pytest.raises(ValidationError, match="unique"):
        rule = {"name": "a", "figure": "error_rate", "above": 0.1}
        spec({"alerts": [rule, rule]})
