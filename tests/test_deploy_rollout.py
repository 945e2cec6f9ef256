"""The rollout plan of each strategy and the judgement of a baking step."""

from __future__ import annotations

import dataclasses

import pytest

from meguri.cli._deploy import _targets
from meguri.deploy._rollout import Evidence, evidence, judge, phases, reached
from meguri.serve._metrics import LATENCY_BUCKETS
from meguri.store.metadata import DeploymentRevision, DeploymentTarget, RevisionState

OLD = DeploymentTarget("mv-1", "m@1", "a" * 64, 100.0, "primary")


def _revision(strategy: str, role: str = "canary", **settings: object) -> DeploymentRevision:
    new = DeploymentTarget("mv-2", "m@2", "b" * 64, 0.0, role)
    return DeploymentRevision(
        "drev-1", "dep-1", 2, (OLD, new), strategy, dict(settings), RevisionState.PENDING,
        0, "deploy", {}, 0.0, 0.0, "ann",
    )  # fmt: skip


def _weights(
    plan: list[list[tuple[DeploymentTarget, float, str]]],
) -> list[list[tuple[str, float, str]]]:
    return [[(t.ref, w, role) for t, w, role in phase] for phase in plan]


def test_each_strategy_has_its_phases() -> None:
    assert _weights(phases(_revision("canary", steps=[10, 100]))) == [
        [("m@1", 90.0, "primary"), ("m@2", 10.0, "canary")],
        [("m@2", 100.0, "primary")],
    ]
    linear = _weights(phases(_revision("linear", steps=[25, 50, 75, 100])))
    assert [p[-1][1] for p in linear] == [25.0, 50.0, 75.0, 100.0]
    assert _weights(phases(_revision("shadow", role="shadow"))) == [
        [("m@1", 100.0, "primary"), ("m@2", 0.0, "shadow")],
        [("m@2", 100.0, "primary")],
    ]


def test_the_routing_reached_is_the_last_phase_once_live_else_the_current_step() -> None:
    """What ``deploy history`` and the Studio show: a finished canary serves the new version
    alone (its stored targets still read "old primary 100%, new canary 0%")."""
    canary = _revision("canary", steps=[10, 50, 100])
    at = {
        (state, step): _weights([reached(dataclasses.replace(canary, state=state, step=step))])
        for state, step in [
            (RevisionState.PENDING, 0),
            (RevisionState.BAKING, 1),
            (RevisionState.LIVE, 2),
            (RevisionState.ROLLED_BACK, 1),
        ]
    }
    assert at[RevisionState.PENDING, 0] == [[("m@1", 90.0, "primary"), ("m@2", 10.0, "canary")]]
    assert at[RevisionState.BAKING, 1] == [[("m@1", 50.0, "primary"), ("m@2", 50.0, "canary")]]
    assert at[RevisionState.LIVE, 2] == [[("m@2", 100.0, "primary")]]
    assert at[RevisionState.ROLLED_BACK, 1] == at[RevisionState.BAKING, 1]
    live = dataclasses.replace(canary, state=RevisionState.LIVE, step=2)
    assert _targets(live) == "m@2 primary 100%"
    assert _targets(canary) == "m@1 primary 90%, m@2 canary 10%"
    shadow = _revision("shadow", role="shadow")
    assert _targets(shadow) == "m@1 primary 100%, m@2 shadow"


def _report(requests: int, errors: int, violations: int, slow: int) -> dict[str, object]:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    counts[3], counts[10] = requests - slow, slow  # 1 ms and 250 ms buckets
    stats = {"requests": requests, "errors": errors, "violations": violations,
             "latency_counts": counts}  # fmt: skip
    return {"backends": {"mv-2": stats}}


def test_evidence_is_the_change_since_the_step_began_per_worker() -> None:
    before = {1: _report(100, 1, 0, 0)}
    now = {1: _report(300, 11, 2, 0), 2: _report(100, 0, 0, 10)}  # worker 2 started meanwhile
    found = evidence(now, before, "mv-2")
    assert (found.requests, found.errors, found.violations) == (300, 10, 2)
    # 290 requests in the (0.5, 1] ms bucket, 10 in (100, 250] ms: rank 0.99 * 300 = 297 is the
    # 7th of those 10, interpolated in their bucket as Prometheus' histogram_quantile does
    assert found.p99_ms == pytest.approx(100 + (250 - 100) * 7 / 10)


def test_judge_names_the_breach() -> None:
    limits = {"max_error_rate": 0.01, "max_p99_ms": 100, "max_schema_violation_rate": 0.05}
    assert judge(Evidence(10, 10, 0, 1.0), limits, final=True) is None  # too few to judge
    assert judge(Evidence(100, 5, 0, 1.0), limits, final=False) == "error rate 0.050 > 0.01"
    assert judge(Evidence(100, 0, 6, 1.0), limits, final=False) == (
        "schema violation rate 0.060 > 0.05"
    )
    assert judge(Evidence(100, 0, 0, 250.0), limits, final=False) is None
    assert judge(Evidence(100, 0, 0, 250.0), limits, final=True) == "p99 250 ms > 100 ms"
