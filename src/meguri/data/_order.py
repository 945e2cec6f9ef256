"""Order statistics from sorted columns: the profile's minimum, maximum, quantiles, distinct
counts and histograms of every numeric column.

A sorted column answers every quantile by a lookup, so one sort per column costs less than
Polars' selection of seven quantiles plus a hash table for its distinct values (for one or two
quantiles alone, as the clip and impute steps need, Polars' selection is quicker). Sorting one
column leaves a core idle part of the time, so :func:`sorted_each` keeps two sorts going at
once (a Polars sort releases the interpreter) and holds no more: about three columns in
memory whatever the width of the table.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import polars as pl

__all__ = ["SORTS_AT_ONCE", "sorted_each", "sorted_present"]

SORTS_AT_ONCE = 2


def sorted_present(series: pl.Series) -> pl.Series:
    """``series`` without its nulls, sorted: its quantiles and median are then lookups."""
    return series.drop_nulls().sort()


def sorted_each(columns: Iterable[Callable[[], pl.Series]]) -> Iterator[pl.Series]:
    """:func:`sorted_present` of each column ``columns`` gives (a function returning it, called
    in a worker thread: reading or converting a column overlaps too), in order, with
    :data:`SORTS_AT_ONCE` columns in flight at most."""

    def sort(load: Callable[[], pl.Series]) -> pl.Series:
        return sorted_present(load())

    with ThreadPoolExecutor(SORTS_AT_ONCE, thread_name_prefix="meguri-sort") as pool:
        pending: deque[Future[pl.Series]] = deque()
        for load in columns:
            pending.append(pool.submit(sort, load))
            if len(pending) >= SORTS_AT_ONCE:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
