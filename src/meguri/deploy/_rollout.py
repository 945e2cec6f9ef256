"""The rollout plan of a revision and the judgement of a baking step (pure functions).

A revision's *phases* are the routing tables it goes through: ``all_at_once`` has one (the new
version alone); ``canary`` and ``linear`` one per step (``s`` percent to the new version, the
rest to the old; the step of 100 serves the new version alone); ``shadow`` two (the old version
answers while the new one gets a copy of every request, then the new one alone). Every phase of
a strategy other than ``all_at_once`` bakes for ``bake_seconds`` while the new version's
counters, read from the workers, are judged against the thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from meguri.serve._metrics import LATENCY_BUCKETS, histogram_quantile
from meguri.store.metadata import DeploymentRevision, DeploymentTarget, RevisionState

__all__ = ["Evidence", "Phase", "evidence", "judge", "phases", "reached", "step_reached", "watched"]

Phase = list[tuple[DeploymentTarget, float, str]]
Reports = Mapping[int, Mapping[str, Any]]


def watched(revision: DeploymentRevision) -> DeploymentTarget:
    """The version the revision brings in: its canary or shadow, else its primary."""
    found = revision.target("canary") or revision.target("shadow") or revision.target("primary")
    if found is None:
        raise ValueError(f"revision {revision.number} has no targets")
    return found


def phases(revision: DeploymentRevision) -> list[Phase]:
    """The routing tables of ``revision`` in order (see the module docstring)."""
    new, old = watched(revision), revision.target("primary")
    if revision.strategy == "all_at_once" or old is None or old is new:
        return [[(new, 100.0, "primary")]]
    if revision.strategy == "shadow":
        return [[(old, 100.0, "primary"), (new, 0.0, "shadow")], [(new, 100.0, "primary")]]
    steps = [float(s) for s in revision.settings.get("steps", [10.0, 100.0])]  # type: ignore[attr-defined]
    return [
        [(old, 100.0 - s, "primary"), (new, s, "canary")] if s < 100 else [(new, 100.0, "primary")]
        for s in steps
    ]


def step_reached(revision: DeploymentRevision) -> int:
    """The index of the phase ``revision`` got to: its last once live, else its current step
    (for a rolled-back revision, the step it was rolled back at)."""
    last = len(phases(revision)) - 1
    return last if revision.state is RevisionState.LIVE else min(revision.step, last)


def reached(revision: DeploymentRevision) -> Phase:
    """The routing table of :func:`step_reached`."""
    return phases(revision)[step_reached(revision)]


@dataclass(frozen=True)
class Evidence:
    """What the watched version did during a baking step (summed over the workers)."""

    requests: int
    errors: int
    violations: int
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def violation_rate(self) -> float:
        return self.violations / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate}


def _counters(report: Mapping[str, Any] | None, key: str) -> tuple[int, int, int, list[int]]:
    stats = (report or {}).get("backends", {}).get(key)
    if stats is None:
        return 0, 0, 0, [0] * (len(LATENCY_BUCKETS) + 1)
    return stats["requests"], stats["errors"], stats["violations"], list(stats["latency_counts"])


def evidence(now: Reports, before: Reports, key: str) -> Evidence:
    """The counters of backend ``key`` in ``now`` minus those in ``before``, per worker
    (a worker missing from ``before`` started during the step and counts from zero)."""
    requests = errors = violations = 0
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    for pid, report in now.items():
        a, b = _counters(report, key), _counters(before.get(pid), key)
        requests, errors, violations = (
            requests + a[0] - b[0],
            errors + a[1] - b[1],
            violations + a[2] - b[2],
        )
        buckets = [x + y - z for x, y, z in zip(buckets, a[3], b[3], strict=True)]
    return Evidence(requests, errors, violations, _p99_ms(buckets))


def _p99_ms(buckets: Sequence[int]) -> float | None:
    found = histogram_quantile(0.99, LATENCY_BUCKETS, buckets)
    return None if found is None else found * 1000.0


def judge(found: Evidence, thresholds: Mapping[str, Any], *, final: bool) -> str | None:
    """Why ``found`` breaches ``thresholds`` (``"error rate 0.35 > 0.01"``), or None.

    Rates are judged once ``min_requests`` requests were answered; the p99 (interpolated in the
    latency histogram as Prometheus does) only at the end of the step (``final``), when the
    histogram has the whole step."""
    if found.requests < int(thresholds.get("min_requests", 20)):
        return None
    max_errors = float(thresholds.get("max_error_rate", 0.01))
    if found.error_rate > max_errors:
        return f"error rate {found.error_rate:.3f} > {max_errors:g}"
    max_violations = float(thresholds.get("max_schema_violation_rate", 0.05))
    if found.violation_rate > max_violations:
        return f"schema violation rate {found.violation_rate:.3f} > {max_violations:g}"
    max_p99 = thresholds.get("max_p99_ms")
    if final and max_p99 is not None and found.p99_ms is not None and found.p99_ms > max_p99:
        return f"p99 {found.p99_ms:g} ms > {float(max_p99):g} ms"
    return None
