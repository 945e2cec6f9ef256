"""Shared pieces of the benchmarks: the figure record, timing helpers, the shared workload."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

#: One metric point as both tools take it in a batch: (key, value, step).
Point = tuple[str, float, int]

#: What the issue measured for MLflow 3.17 + SQLite on this machine (for the notes only).
ISSUE_MLFLOW_FIGURES = {
    "log_metric calls/s": 140,
    "log_batch points/s": 7_000,
    "search 1,000 runs (s)": 0.12,
    "10,000-point history read (s)": 0.3,
    "import mlflow (s)": 1.4,
}


@dataclass
class Figure:
    """One row of the result table.

    ``higher_is_better`` rows are rates (ratio = meguri / mlflow); the others are times in
    seconds (ratio = mlflow / meguri, i.e. how many times faster meguri is). A row passes when
    it meets every target it has: ``min_ratio`` against MLflow, ``max_seconds`` absolute.
    """

    name: str
    unit: str
    meguri: float
    mlflow: float | None = None
    higher_is_better: bool = True
    min_ratio: float | None = None
    max_seconds: float | None = None
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if not self.mlflow or not self.meguri:
            return None
        return self.meguri / self.mlflow if self.higher_is_better else self.mlflow / self.meguri

    @property
    def target(self) -> str:
        parts = []
        if self.min_ratio is not None:
            parts.append(f">= {self.min_ratio:g}x")
        if self.max_seconds is not None:
            parts.append(f"< {fmt_seconds(self.max_seconds)}")
        return " and ".join(parts) or "(info)"

    @property
    def passed(self) -> bool | None:
        checks = []  # a ratio target without an MLflow figure (--no-mlflow) is not checked
        if self.min_ratio is not None and self.ratio is not None:
            checks.append(self.ratio >= self.min_ratio)
        if self.max_seconds is not None:
            checks.append(self.meguri < self.max_seconds)
        return all(checks) if checks else None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(ratio=self.ratio, target=self.target, passed=self.passed)
        return out


def fmt_seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1.0:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return fmt_seconds(value)
    return f"{value:,.0f} {unit}"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds one call of ``fn`` took, and what it returned."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def repeat_timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    """All timings of ``repeat`` calls (after no warm-up: call it once yourself first)."""
    times, result = [], None
    for _ in range(repeat):
        elapsed, result = timed(fn)
        times.append(elapsed)
    return times, result


def timed_pair(
    ours: Callable[[], Any], theirs: Callable[[], Any] | None, repeat: int, their_repeat: int
) -> tuple[dict[str, Any], Any, dict[str, Any] | None, Any]:
    """Time two queries interleaved (one call of each in turn), so that load from elsewhere on
    the machine falls on both alike. The first call of each is reported apart, as ``first``."""
    first_ours, result_ours = timed(ours)
    first_theirs, result_theirs = timed(theirs) if theirs else (0.0, None)
    times_ours: list[float] = []
    times_theirs: list[float] = []
    for i in range(max(repeat, their_repeat if theirs else 0)):
        if i < repeat:
            times_ours.append(timed(ours)[0])
        if theirs is not None and i < their_repeat:
            times_theirs.append(timed(theirs)[0])
    stats_ours = {"first": first_ours, **summary(times_ours), "repeat": repeat}
    if theirs is None:
        return stats_ours, result_ours, None, None
    stats_theirs = {"first": first_theirs, **summary(times_theirs), "repeat": their_repeat}
    return stats_ours, result_ours, stats_theirs, result_theirs


def summary(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "best": min(times), "worst": max(times)}


def batch_chunks(n_chunks: int, keys: int = 10, steps: int = 100) -> list[list[Point]]:
    """``n_chunks`` chunks of ``keys * steps`` points (1,000 by default: MLflow's batch limit)."""
    names = [f"m{k}" for k in range(keys)]
    return [
        [(name, (c * steps + s) * 1e-3, c * steps + s) for s in range(steps) for name in names]
        for c in range(n_chunks)
    ]


def history_points(n: int, key: str = "curve") -> list[Point]:
    return [(key, 1.0 / (1 + i), i) for i in range(n)]


@dataclass(frozen=True)
class SearchRun:
    """One run of the search population: the same values go into both tools."""

    acc: float
    loss: float
    lr: str


def search_population(n: int, seed: int = 7) -> list[SearchRun]:
    rng = random.Random(seed)
    return [
        SearchRun(acc=rng.random(), loss=rng.random(), lr=str(rng.choice([0.1, 0.01, 0.001])))
        for _ in range(n)
    ]


SEARCH_FILTER = "metrics.acc > 0.5"
SEARCH_ORDER = "metrics.acc desc"


def text_table(rows: list[tuple[str, ...]]) -> str:
    """Rows (the first is the header) as aligned text: first column left, the rest right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
