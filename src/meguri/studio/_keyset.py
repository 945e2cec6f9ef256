"""Keyset paging of the runs table: the runs after a given run, read with index range scans,
so that the next page costs the same at run 50 and at run 99,950.

An OFFSET makes the database walk every row before the page (on 100,000 runs sorted by a
metric, a page deep down costs several times the first one). The runs after run X in the
table's order are instead found with two searches the run search language can express. With
the order ``K desc`` and X's value ``v`` (the table breaks ties by newest, then by id, both
descending)::

    K = v     the runs tied with X on K: read whole, in the table's order, and cut after X
    K < v     then the rest that have a value, in the table's order, as many as the page needs

(Reading the tie group whole keeps each search on one index: ``K = v and created_at < c``
lets SQLite's planner, which has no statistics, pick the time index and sort everything.)
Runs without a value of K come last (NULLS LAST): the language cannot name them, so that
stretch is read with an offset. So are orders or values the language cannot state exactly (a
string with a quote or a backslash, a non-finite number) and tie groups over
:data:`MAX_TIES`: :func:`after_plan` returns None and the page falls back to its offset.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from meguri.store.metadata import Run

__all__ = ["MAX_TIES", "AfterPlan", "SortKey", "after_plan", "parse_sort"]

_SORT = re.compile(
    r"\s*(?:(?P<kind>metrics|params|tags)\.)?(?:`(?P<qkey>[^`]+)`|(?P<key>[\w./-]+))"
    r"(?:\s+(?P<dir>asc|desc))?\s*",
    re.IGNORECASE,
)
#: The largest tie group read whole; past it, the page is read by offset.
MAX_TIES = 2000
#: The attributes the table sorts by.
_ATTRIBUTES = frozenset({"created_at", "name", "status", "created_by"})


@dataclass(frozen=True)
class SortKey:
    """The table's first order key: ``kind`` is metrics, params, tags or attributes."""

    kind: str
    key: str
    descending: bool

    @property
    def term(self) -> str:
        """The key as the filter language writes it."""
        if self.kind == "attributes":
            return self.key
        plain = re.fullmatch(r"[\w./-]+", self.key) is not None
        return f"{self.kind}.{self.key if plain else f'`{self.key}`'}"

    def value(self, run: Run) -> object:
        """``run``'s value of the key (None when it has none, or NaN)."""
        if self.kind == "metrics":
            point = run.metrics.get(self.key)
            return None if point is None or math.isnan(point.value) else point.value
        if self.kind == "attributes":
            return getattr(run, self.key)
        return (run.params if self.kind == "params" else run.tags).get(self.key)


def parse_sort(sort: str) -> SortKey | None:
    """The first key of ``sort`` (``metrics.roc_auc desc``; default order: newest first), or
    None when it is not one keyset paging handles."""
    if not sort.strip():
        return SortKey("attributes", "created_at", True)
    m = _SORT.fullmatch(sort)
    if m is None:
        return None
    kind = (m["kind"] or "attributes").lower()
    key = m["qkey"] or m["key"]
    if kind == "attributes" and key not in _ATTRIBUTES:
        return None
    return SortKey(kind, key, (m["dir"] or "asc").lower() == "desc")


def _literal(value: object) -> str | None:
    """``value`` as the filter language reads it back exactly, or None."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return repr(float(value)) if math.isfinite(value) else None
    if isinstance(value, str) and "'" not in value and "\\" not in value:
        return f"'{value}'"
    return None


@dataclass(frozen=True)
class AfterPlan:
    """How to read the runs after ``last``: the filter of its tie group (cut after it), the
    filter of the runs beyond, and whether runs without a value may follow those."""

    last: Run
    ties: str
    beyond: str
    then_unvalued: bool

    def after_last(self, group: list[Run]) -> list[Run]:
        """The runs of the tie group (in the table's order) that come after ``last``."""
        mark = (self.last.created_at, self.last.id)
        return [r for r in group if (r.created_at, r.id) < mark]


def after_plan(sort: str, last: Run) -> AfterPlan | None:
    """How to read the runs after ``last`` in the order ``sort``, or None when keyset paging
    cannot express it."""
    key = parse_sort(sort)
    if key is None:
        return None
    value = _literal(key.value(last))
    if value is None:
        return None  # in the stretch without values, or not expressible
    beyond = f"{key.term} {'<' if key.descending else '>'} {value}"
    unvalued = key.kind != "attributes"
    return AfterPlan(last, f"{key.term} = {value}", beyond, unvalued)
