"""That both sides of the data benchmark did the same work, from the figures each reports.

- **rows and split**: the same row count, and the same rows per part and per class in each
  part (both cut each class at ``round(n * 0.7)`` and ``round(n * 0.85)``): exact.
- **profile** (both on the same rows): count, nulls, distinct, histogram counts and top values
  exact; min, max, mean, std, quantiles and correlations to 1e-9 (relative, or absolute for
  values near 0): the two CSV parsers may round a value's last bit differently.
- **clean**: the same output columns. The two splits draw different random rows, so what each
  learned on its training rows (medians, IQR bounds, means and standard deviations) can only
  agree to sampling noise: within ``noise`` (1 %) of the column's standard deviation; and the
  cleaned test part's column means within ``noise`` (absolute: scaled columns have sd 1, the
  0/1 columns are shares).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

EXACT = ("count", "nulls", "distinct", "histogram", "top")
CLOSE = ("min", "max", "mean", "std")


def compare(ours: dict[str, Any], theirs: dict[str, Any], noise: float = 0.01) -> list[str]:
    """Every difference found, as one line each (empty: the two sides agree)."""
    problems: list[str] = []
    if ours["rows"] != theirs["rows"]:
        problems.append(f"rows: meguri {ours['rows']}, pandas {theirs['rows']}")
    if ours["split"] != theirs["split"]:
        problems.append(f"split counts: meguri {ours['split']}, pandas {theirs['split']}")
    problems += _profile(ours["profile"], theirs["profile"])
    sds = {name: c.get("std") for name, c in theirs["profile"]["columns"].items()}
    problems += _clean(ours["clean"], theirs["clean"], sds, noise)
    return problems


def _close(a: float | None, b: float | None, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def _profile(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    problems = []
    for name, mine in ours["columns"].items():
        other = theirs["columns"].get(name, {})
        for key in EXACT:
            if key in mine and mine[key] != other.get(key):
                problems.append(f"profile {name}.{key}: {mine[key]} vs {other.get(key)}")
        for key in CLOSE:
            if key in mine and not _close(mine[key], other.get(key)):
                problems.append(f"profile {name}.{key}: {mine[key]} vs {other.get(key)}")
        pairs = zip(mine.get("quantiles", []), other.get("quantiles", []), strict=False)
        if not all(_close(a, b) for a, b in pairs):
            problems.append(
                f"profile {name}.quantiles: {mine['quantiles']} vs {other['quantiles']}"
            )
    for pair, r in ours["correlations"].items():
        if not _close(r, theirs["correlations"].get(pair)):
            problems.append(f"correlation {pair}: {r} vs {theirs['correlations'].get(pair)}")
    return problems


def _clean(
    ours: dict[str, Any], theirs: dict[str, Any], sds: dict[str, float | None], noise: float
) -> list[str]:
    problems = []
    if ours["columns"] != theirs["columns"]:
        extra = set(ours["columns"]) ^ set(theirs["columns"])
        problems.append(f"cleaned columns differ: {sorted(extra)}")
    learned = [("medians", ours["medians"], theirs["medians"])]
    for key in ("bounds", "scale"):
        learned += [(f"{key}[{i}]", _nth(ours[key], i), _nth(theirs[key], i)) for i in (0, 1)]
    for what, mine, other in learned:
        for name, value in mine.items():
            limit = noise * (sds.get(name) or 1.0)
            if abs(value - other[name]) > limit:
                problems.append(f"learned {what} of {name}: {value:.6g} vs {other[name]:.6g}")
    problems += _means(ours["test_means"], theirs["test_means"], noise)
    return problems


def _nth(values: dict[str, list[float]], i: int) -> dict[str, float]:
    return {name: pair[i] for name, pair in values.items()}


def _means(ours: dict[str, float], theirs: dict[str, float], noise: float) -> list[str]:
    return [
        f"cleaned test mean of {name}: {value:.4f} vs {theirs.get(name)}"
        for name, value in ours.items()
        if name in theirs and abs(value - theirs[name]) > noise
    ]


def largest_gaps(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    """How close the sides came: the largest gaps, for the report."""
    sds = {name: c.get("std") or 1.0 for name, c in theirs["profile"]["columns"].items()}
    medians = ours["clean"]["medians"].items()
    learned = (abs(v - theirs["clean"]["medians"][n]) / sds[n] for n, v in medians)
    means = ours["clean"]["test_means"]
    gaps = (abs(v - theirs["clean"]["test_means"][n]) for n, v in means.items())
    return {
        "median_gap_in_sd": _max(learned),
        "test_mean_gap": _max(gaps),
        "profile_rel_gap": _profile_gap(ours["profile"], theirs["profile"]),
    }


def _max(values: Iterable[float]) -> float:
    return max(values, default=0.0)


def _profile_gap(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    gaps = []
    for name, mine in ours["columns"].items():
        other = theirs["columns"][name]
        for key in CLOSE:
            if mine.get(key) is not None and other.get(key) is not None:
                gaps.append(abs(mine[key] - other[key]) / max(abs(other[key]), 1e-300))
    return _max(gaps)
