"""Evaluate a success criterion against a measured value (the gates' one rule).

``==`` compares with a relative tolerance of 1e-9 (and 1e-12 absolute), because metrics are
floats; a NaN or missing value never meets a criterion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from meguri.spec._model import Comparison, SuccessCriterion

_REL_TOL = 1e-9
_ABS_TOL = 1e-12


def compare(value: float | None, comparison: Comparison, threshold: float) -> bool:
    """Whether ``value <comparison> threshold`` holds; ``None`` and NaN never do."""
    if value is None or math.isnan(value):
        return False
    if comparison == ">=":
        return value >= threshold
    if comparison == ">":
        return value > threshold
    if comparison == "<=":
        return value <= threshold
    if comparison == "<":
        return value < threshold
    return math.isclose(value, threshold, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)


def margin(value: float | None, comparison: Comparison, threshold: float) -> float:
    """How far ``value`` is on the passing side of ``threshold`` (negative: by how much it fails).

    For ``>=``/``>`` that is ``value - threshold``; for ``<=``/``<`` it is ``threshold - value``;
    for ``==`` it is minus the distance. NaN when there is no value.
    """
    if value is None or math.isnan(value):
        return math.nan
    if comparison in (">=", ">"):
        return value - threshold
    if comparison in ("<=", "<"):
        return threshold - value
    return -abs(value - threshold)


def is_stricter(comparison: Comparison, old: float, new: float) -> bool | None:
    """Whether moving the threshold from ``old`` to ``new`` makes the criterion harder to meet.

    ``None`` when it is neither (equal thresholds, or ``==``, which is only different).
    """
    if old == new or comparison == "==":
        return None
    return new > old if comparison in (">=", ">") else new < old


@dataclass(frozen=True, slots=True)
class CriterionOutcome:
    """A criterion checked against one value: what a gate stores as a check result."""

    criterion: SuccessCriterion
    value: float | None
    passed: bool
    margin: float

    @property
    def message(self) -> str:
        c = self.criterion
        if self.value is None or math.isnan(self.value):
            return f"{c.id}: no value for {c.metric} on {c.measured_on}: fail"
        verdict = "pass" if self.passed else f"fail (by {abs(self.margin):.4g})"
        required = f"{c.comparison} {c.threshold:g}"
        return f"{c.id}: {c.metric} = {self.value:.4g}, required {required}: {verdict}"


def evaluate(criterion: SuccessCriterion, value: float | None) -> CriterionOutcome:
    """Check ``value`` (the measured metric; ``None`` if not measured) against ``criterion``."""
    as_float = None if value is None else float(value)
    return CriterionOutcome(
        criterion=criterion,
        value=as_float,
        passed=compare(as_float, criterion.comparison, criterion.threshold),
        margin=margin(as_float, criterion.comparison, criterion.threshold),
    )
