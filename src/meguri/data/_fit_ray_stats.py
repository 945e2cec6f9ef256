"""Column statistics of a Ray Dataset, exact, for fitting steps on Ray (``_fit_ray``).

Every pass is one ``map_batches`` over whole blocks: a block becomes a few rows of partial
results (Polars and numpy inside), which the driver combines.

* **Moments**: per block and numeric column, the non-null count, NaN count, minimum, maximum
  and the exact sum (``math.fsum``) carried as a double-double ``hi + lo``; a second pass does
  the same for squared deviations from the mean. Combined with ``math.fsum``, the mean is the
  correctly rounded ``sum / n`` and the standard deviation (``ddof=0``) ``sqrt(ss / n)``.
* **Order statistics** (approximate, then exact): the value of rank ``r`` among a column's
  non-null values is narrowed to a window by histogram passes (``bins`` equal bins over the
  window, one bin of margin on each side) until at most ``max_collect`` values fall in it; the
  next pass counts the values below the window exactly and gathers those inside, which the
  driver sorts. A window that turns out not to hold the rank (rounding at a bin edge) is
  widened to the whole column, so the answer is always exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["RayStats"]

BINS = 4096
MAX_ROUNDS = 6
Request = tuple[str, int]  # (column, rank)


@dataclass(frozen=True)
class Moments:
    """One numeric column, combined over every block."""

    count: int
    nans: int
    minimum: float | None
    maximum: float | None
    total: float


@dataclass(frozen=True)
class _Window:
    lo: float
    hi: float
    expected: int
    collect: bool = False


class RayStats:
    """Exact statistics of the numeric columns of one materialised Ray Dataset."""

    def __init__(self, dataset: Any, *, max_collect: int = 200_000, bins: int = BINS) -> None:
        self.dataset = dataset
        self.max_collect = max_collect
        self.bins = bins
        self.schema = _schema(dataset)
        self._rows: int | None = None
        self._moments: dict[str, Moments] | None = None
        self._squares: dict[str, float] | None = None

    # -- datasets -----------------------------------------------------------------------------

    @staticmethod
    def dataset_of(frame: pl.DataFrame, block_rows: int) -> Any:
        """``frame`` as a Ray Dataset of blocks of at most ``block_rows`` rows."""
        import ray.data

        table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
        starts = range(0, max(table.num_rows, 1), block_rows)
        return ray.data.from_arrow([table.slice(start, block_rows) for start in starts])

    def derive(self, dataset: Any) -> RayStats:
        """The statistics of another (materialised) dataset, with the same settings."""
        return RayStats(dataset, max_collect=self.max_collect, bins=self.bins)

    def from_polars(self, frame: pl.DataFrame) -> Any:
        blocks = max(self.dataset.num_blocks(), 1)
        return RayStats.dataset_of(frame, max(1, -(-frame.height // blocks))).materialize()

    def collect(self) -> pl.DataFrame:
        """The whole dataset on the driver, as one frame."""
        import pyarrow as pa
        import ray

        tables = [t for t in ray.get(self.dataset.to_arrow_refs()) if t.num_rows]
        if not tables:
            return pl.DataFrame(schema=self.schema)
        frame = pl.from_arrow(pa.concat_tables(tables, promote_options="permissive"))
        assert isinstance(frame, pl.DataFrame)
        return frame

    @property
    def rows(self) -> int:
        if self._rows is None:
            self._rows = int(self.dataset.count())
        return self._rows

    def _blocks(self, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
        """``fn`` on every block, the small results stacked."""
        import ray

        mapped = self.dataset.map_batches(
            partial(_on_block, fn), batch_format="pyarrow", batch_size=None
        )
        frames = [pl.from_arrow(t) for t in ray.get(mapped.to_arrow_refs()) if t.num_rows]
        return pl.concat([f for f in frames if isinstance(f, pl.DataFrame)])

    # -- moments ------------------------------------------------------------------------------

    def _numeric(self) -> list[str]:
        return [c for c, t in self.schema.items() if t.is_numeric()]

    def moments(self, column: str) -> Moments:
        if self._moments is None:
            parts = self._blocks(partial(_moments_block, self._numeric(), None))
            self._moments = _combine_moments(parts)
        return self._moments[column]

    def count(self, column: str) -> int:
        return self.moments(column).count

    def has_nan(self, columns: Sequence[str]) -> bool:
        return any(self.moments(c).nans for c in columns if c in self._numeric())

    def minimum(self, column: str) -> float | None:
        return self.moments(column).minimum

    def maximum(self, column: str) -> float | None:
        return self.moments(column).maximum

    def mean(self, column: str) -> float | None:
        found = self.moments(column)
        return found.total / found.count if found.count else None

    def std(self, column: str) -> float | None:
        """The population standard deviation (``ddof=0``), as the scalers use."""
        found = self.moments(column)
        if not found.count:
            return None
        if self._squares is None:
            centers = {c: self.mean(c) or 0.0 for c in self._numeric()}
            parts = self._blocks(partial(_moments_block, self._numeric(), centers))
            self._squares = {k: m.total for k, m in _combine_moments(parts).items()}
        return math.sqrt(self._squares[column] / found.count)

    # -- order statistics ---------------------------------------------------------------------

    def quantiles(self, columns: Sequence[str], qs: Sequence[float]) -> dict[str, list[Any]]:
        """Quantiles ``qs`` of each column, interpolated as Polars' ``linear``: for ``n``
        non-null values, position ``(n - 1) * q`` between the values of ranks ``floor`` and
        ``floor + 1``; ``None`` for a column without values."""
        plan: dict[str, list[tuple[int, int, float]]] = {}
        for column in columns:
            n = self.count(column)
            plan[column] = [_ranks(n, q) for q in qs] if n else []
        wanted = {(c, r) for c, ranks in plan.items() for i, j, _ in ranks for r in (i, j)}
        values = self.select(wanted)
        out: dict[str, list[Any]] = {}
        for column, ranks in plan.items():
            if not ranks:
                out[column] = [None] * len(qs)
                continue
            out[column] = [
                _interpolate(values[(column, i)], values[(column, j)], i, at) for i, j, at in ranks
            ]
        return out

    def select(self, requests: set[Request]) -> dict[Request, float]:
        """The value of each ``(column, rank)`` among the column's sorted non-null values."""
        windows = {req: self._whole(req[0]) for req in requests}
        found: dict[Request, float] = {}
        for round_ in range(MAX_ROUNDS + 1):
            pending = [req for req in sorted(windows) if req not in found]
            if not pending:
                break
            last = round_ == MAX_ROUNDS
            plan = [
                (req[0], windows[req].lo, windows[req].hi, self._collects(windows[req], last))
                for req in pending
            ]
            parts = self._blocks(partial(_window_block, plan, self.bins))
            for index, req in enumerate(pending):
                outcome = self._narrow(req, plan[index], parts.filter(pl.col("req") == index))
                if isinstance(outcome, _Window):
                    windows[req] = outcome
                else:
                    found[req] = outcome
        return found

    def _whole(self, column: str) -> _Window:
        found = self.moments(column)
        lo, hi = found.minimum or 0.0, found.maximum or 0.0
        return _Window(lo, hi, found.count, collect=not math.isfinite(hi - lo))

    def _collects(self, window: _Window, last: bool) -> bool:
        return window.collect or last or window.expected <= self.max_collect

    def _narrow(
        self, req: Request, plan: tuple[str, float, float, bool], part: pl.DataFrame
    ) -> _Window | float:
        """The value, or the next window, from one pass's partial results for ``req``."""
        column, lo, hi, collected = plan
        rank = req[1]
        head = part.filter(pl.col("stat"))
        below, inside = int(head["below"].sum()), int(head["inside"].sum())
        if not below <= rank < below + inside:  # lost at a bin edge: take the whole column
            whole = self._whole(column)
            return _Window(whole.lo, whole.hi, whole.expected, collect=True)
        low, high = head["vmin"].min(), head["vmax"].max()
        if low == high:
            return float(low)  # type: ignore[arg-type]
        payload = part.filter(~pl.col("stat"))["value"].to_numpy()
        if collected:
            return float(np.sort(payload)[rank - below])
        counts = payload.reshape(-1, self.bins).sum(axis=0)
        return self._zoom(lo, hi, counts, rank - below)

    def _zoom(self, lo: float, hi: float, counts: np.ndarray, offset: int) -> _Window:
        """The bin holding the ``offset``-th value inside ``[lo, hi]``, with a bin of margin
        on each side."""
        cumulative = np.cumsum(counts)
        hit = int(np.searchsorted(cumulative, offset, side="right"))
        first, last = max(hit - 1, 0), min(hit + 2, self.bins)
        width = (hi - lo) / self.bins
        new_lo = lo if first == 0 else lo + width * first
        new_hi = hi if last == self.bins else lo + width * last
        expected = int(counts[first:last].sum())
        stuck = new_lo == lo and new_hi == hi
        return _Window(new_lo, new_hi, expected, collect=stuck)


# -- per block (these run on the Ray workers) ---------------------------------------------------


def _on_block(fn: Callable[[pl.DataFrame], pl.DataFrame], table: pa.Table) -> pa.Table:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return fn(frame).to_arrow()


def _values(frame: pl.DataFrame, column: str) -> np.ndarray:
    return frame.get_column(column).cast(pl.Float64).drop_nulls().to_numpy()


def _exact_sum(values: np.ndarray) -> tuple[float, float]:
    """``values``' sum as ``hi + lo``: ``hi`` the correctly rounded sum, ``lo`` the rest."""
    try:
        hi = math.fsum(values)
        return hi, math.fsum(np.append(values, -hi))
    except (OverflowError, ValueError):  # infinities: no finer sum to keep
        return float(np.sum(values)), 0.0


def _moments_block(
    columns: list[str], centers: dict[str, float] | None, frame: pl.DataFrame
) -> pl.DataFrame:
    """Per column: count, NaNs, min, max and the exact sum of the values (of their squared
    deviations from ``centers`` when given), as ``hi`` and ``lo``."""
    rows: dict[str, list[Any]] = {k: [] for k in ("column", "n", "nans", "min", "max", "hi", "lo")}
    for column in columns:
        x = _values(frame, column)
        if centers is not None:
            x = (x - centers[column]) ** 2
        hi, lo = _exact_sum(x)
        some = x.size > 0
        for key, value in zip(
            rows,
            (
                column,
                x.size,
                int(np.isnan(x).sum()),
                x.min() if some else None,
                x.max() if some else None,
                hi,
                lo,
            ),
            strict=True,
        ):
            rows[key].append(value)
    floats = dict.fromkeys(("min", "max", "hi", "lo"), pl.Float64)
    return pl.DataFrame(rows, schema_overrides=floats)


def _combine_moments(parts: pl.DataFrame) -> dict[str, Moments]:
    grouped = parts.group_by("column", maintain_order=True).agg(
        pl.col("n").sum(),
        pl.col("nans").sum(),
        pl.col("min").min(),
        pl.col("max").max(),
        pl.col("hi"),
        pl.col("lo"),
    )
    return {
        column: Moments(int(n), int(nans), low, high, math.fsum([*his, *los]))
        for column, n, nans, low, high, his, los in grouped.iter_rows()
    }


def _window_block(
    plan: list[tuple[str, float, float, bool]], bins: int, frame: pl.DataFrame
) -> pl.DataFrame:
    """Per request: one row counting the values below the window and inside it, with their
    min and max; then one row per value inside it (``collect``) or per histogram bin, in
    order (column ``value``)."""
    stats: dict[str, list[Any]] = {k: [] for k in ("req", "below", "inside", "vmin", "vmax")}
    payloads: list[np.ndarray] = []
    for index, (column, lo, hi, collect) in enumerate(plan):
        x = _values(frame, column)
        inside = x[(x >= lo) & (x <= hi)]
        some = inside.size > 0
        found = (index, int((x < lo).sum()), inside.size, inside.min() if some else None)
        for key, value in zip(stats, (*found, inside.max() if some else None), strict=True):
            stats[key].append(value)
        payloads.append(inside if collect else _histogram(inside, lo, hi, bins))
    head = pl.DataFrame(stats, schema=_WINDOW_SCHEMA).with_columns(
        pl.lit(True).alias("stat"), pl.lit(None, pl.Float64).alias("value")
    )
    sizes = np.array([p.size for p in payloads], dtype=np.int64)
    body = pl.DataFrame(
        {
            "req": np.repeat(np.arange(len(plan), dtype=np.int64), sizes),
            "value": np.concatenate(payloads) if payloads else np.empty(0),
        }
    )
    return pl.concat([head, body.with_columns(pl.lit(False).alias("stat"))], how="diagonal")


_WINDOW_SCHEMA = {
    "req": pl.Int64,
    "below": pl.Int64,
    "inside": pl.Int64,
    "vmin": pl.Float64,
    "vmax": pl.Float64,
}


def _histogram(values: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    if hi <= lo:
        return np.bincount(np.zeros(values.size, dtype=np.int64), minlength=bins).astype(float)
    index = np.floor((values - lo) / (hi - lo) * bins).astype(np.int64).clip(0, bins - 1)
    return np.bincount(index, minlength=bins).astype(np.float64)


# -- Polars' linear interpolation -------------------------------------------------------------


def _ranks(n: int, q: float) -> tuple[int, int, float]:
    at = (n - 1) * q
    low = math.floor(at)
    return low, min(low + 1, n - 1), at


def _interpolate(low: float, high: float, index: int, at: float) -> float:
    return low if low == high else (at - index) * (high - low) + low


def _schema(dataset: Any) -> pl.Schema:
    found = dataset.schema()
    if found is None:
        return pl.Schema()
    arrow = getattr(found, "base_schema", found)
    frame = pl.from_arrow(arrow.empty_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.schema
