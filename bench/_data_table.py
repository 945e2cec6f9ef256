"""The synthetic table of the data-preparation benchmark, and the settings both sides share.

20 columns: 13 floats (5 with about 5 % nulls, several heavy-tailed so that IQR clipping has
work to do), 3 integers, 3 low-cardinality text columns (one with nulls) and a binary target
(about 27 % positives, a logistic function of a few inputs). Generated with numpy and written
by Polars as CSV (6 decimals) once per row count, then cached::

    python bench/_data_table.py ROWS PATH     # writes PATH (atomically), prints its size
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import polars as pl

SEED = 20_261_127
TARGET = "target"
FLOATS = [f"f{i:02d}" for i in range(13)]
INTS = ["i_count", "i_age", "i_amount"]
CATEGORIES: dict[str, list[str]] = {
    "region": ["north", "south", "east", "west", "centre"],
    "plan": ["free", "basic", "pro", "team"],
    "channel": [f"ch{i:02d}" for i in range(12)],
}
#: Float columns with nulls: these are imputed (median) with a missing-value indicator.
WITH_NULLS = FLOATS[:5]
NULL_SHARE = 0.05
#: Numeric inputs: clipped at Tukey's fences (1.5 IQR) and standardised.
NUMERIC = FLOATS + INTS
TEXT = list(CATEGORIES)
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
SPLIT_SEED = 42
BINS = 20
TOP = 10
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def _floats(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(FLOATS):
        kind = i % 4
        if kind == 0:
            values = rng.normal(10.0 * i, 1.0 + i, n)
        elif kind == 1:
            values = rng.lognormal(1.0, 0.8, n) * (i + 1)
        elif kind == 2:
            values = rng.standard_t(3, n) * 5.0 + i
        else:
            values = rng.exponential(2.0 + i, n)
        out[name] = values
    return out


def generate(n: int, seed: int = SEED) -> pl.DataFrame:
    """The table of ``n`` rows (the same rows for the same ``n`` and ``seed``)."""
    rng = np.random.default_rng(seed)
    floats = _floats(rng, n)
    ints = {
        "i_count": rng.poisson(3.0, n),
        "i_age": rng.integers(18, 91, n),
        "i_amount": (rng.pareto(2.5, n) * 1000).astype(np.int64),
    }
    logit = 0.6 * (floats["f00"] - 0.0) + 0.3 * (floats["f04"] - 40.0) / 5.0 - 1.2
    target = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    frame = pl.DataFrame({**floats, **ints})
    frame = frame.with_columns(
        pl.when(pl.Series(rng.random(n) < NULL_SHARE)).then(None).otherwise(pl.col(c)).alias(c)
        for c in WITH_NULLS
    )
    text = {
        name: pl.Series(labels).gather(pl.Series(rng.integers(0, len(labels), n), dtype=pl.UInt32))
        for name, labels in CATEGORIES.items()
    }
    frame = frame.with_columns(pl.Series(name, s) for name, s in text.items())
    channel_nulls = pl.Series(rng.random(n) < 0.02)
    frame = frame.with_columns(
        pl.when(channel_nulls).then(None).otherwise(pl.col("channel")).alias("channel"),
        pl.Series(TARGET, target),
    )
    return frame


def write(n: int, path: Path) -> int:
    """Write the ``n``-row table to ``path`` as CSV (atomically); its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".partial-{os.getpid()}")
    generate(n).write_csv(partial, float_precision=6)
    partial.replace(path)
    return path.stat().st_size


if __name__ == "__main__":
    print(write(int(sys.argv[1]), Path(sys.argv[2])))
