"""Drift reference statistics against numpy/scipy on the same rows; the sketch's measured error."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import date
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy import stats

from meguri.data import DriftReference
from meguri.data._reference import (
    MAX_VALUES,
    SAMPLE_ROWS,
    ColumnReference,
    reference_sample,
)
from meguri.errors import DataError
from meguri.monitor import _drift_tests as t

Array = np.ndarray[Any, Any]


@pytest.fixture(scope="module")
def rows() -> pl.DataFrame:
    rng = np.random.default_rng(3)
    n = 4_000
    x = rng.normal(5, 2, n)
    x[rng.choice(n, 100, replace=False)] = np.nan
    x[:3] = [np.inf, -np.inf, np.nan]
    frame = pl.DataFrame(
        {
            "x": x,
            "small_int": rng.integers(0, 4, n),
            "wide": rng.integers(0, 50_000, n).astype(np.float64),
            "word": rng.choice(["red", "green", "blue", "grey"], n, p=[0.4, 0.3, 0.2, 0.1]),
            "flag": rng.random(n) < 0.3,
            "day": [date(2024, 1, 1)] * n,
        }
    )
    nulls = pl.Series(rng.random(n) < 0.05)
    return frame.with_columns(
        pl.when(nulls).then(None).otherwise(pl.col(c)).alias(c) for c in ("small_int", "word")
    )


def _present(frame: pl.DataFrame, name: str) -> Array:
    values = frame.get_column(name).drop_nulls().cast(pl.Float64).to_numpy()
    return np.sort(values[np.isfinite(values)])


def test_numeric_statistics_match_numpy(rows: pl.DataFrame) -> None:
    reference = DriftReference.from_frame(rows)
    assert reference.names == ("x", "small_int", "wide", "word", "flag")  # no temporal column
    for name in ("x", "small_int", "wide"):
        column, values = reference.column(name), _present(rows, name)
        assert column.kind == "numeric" and column.rows == rows.height
        assert (column.present, column.nulls) == (len(values), rows.height - len(values))
        assert column.distinct == len(np.unique(values))
        assert column.std == pytest.approx(np.std(values), rel=1e-12)
        assert column.mean == pytest.approx(np.mean(values), rel=1e-12)
        assert (column.min, column.max) == (values.min(), values.max())
        assert column.histogram is not None
        counts, edges = np.histogram(values, 20)
        assert column.histogram.edges == tuple(edges) and column.histogram.counts == tuple(counts)
    x = reference.column("x")
    assert x.nulls == rows.height - np.isfinite(rows.get_column("x").to_numpy()).sum() >= 102
    small = reference.column("small_int")
    values, counts = np.unique(_present(rows, "small_int"), return_counts=True)
    assert small.values == tuple(values) and small.counts == tuple(counts)
    assert small.levels is None  # exact value counts instead of the sketch
    wide = reference.column("wide")
    assert wide.values is None and wide.levels is not None and wide.quantiles is not None


def test_psi_bins_are_the_reference_deciles(rows: pl.DataFrame) -> None:
    column = DriftReference.from_frame(rows, ["x"]).column("x")
    values = _present(rows, "x")
    edges = np.unique(np.quantile(values, np.arange(1, 10) / 10))
    assert column.psi is not None and column.psi.edges == tuple(edges)
    bins = np.concatenate([[-np.inf], edges, [np.inf]])
    expected = [np.sum((values >= lo) & (values < hi)) for lo, hi in itertools.pairwise(bins)]
    assert column.psi.counts == tuple(expected)


def test_categorical_value_counts_match_counter(rows: pl.DataFrame) -> None:
    reference = DriftReference.from_frame(rows, ["word", "flag"])
    words = Counter(v for v in rows.get_column("word").to_list() if v is not None)
    word = reference.column("word")
    assert word.kind == "categorical" and word.present == sum(words.values())
    assert word.nulls == rows.get_column("word").null_count()
    assert dict(zip(word.values or (), word.counts or (), strict=True)) == dict(words)
    assert list(word.counts or ()) == sorted(word.counts or (), reverse=True)
    flag = reference.column("flag")
    trues = int(rows.get_column("flag").sum())
    assert dict(zip(flag.values or (), flag.counts or (), strict=True)) == {
        "true": trues,
        "false": rows.height - trues,
    }


def test_categories_past_the_cap_are_counted_as_other() -> None:
    rng = np.random.default_rng(0)
    ids = rng.zipf(1.3, 60_000) % 5_000
    frame = pl.DataFrame({"id": [f"u{i}" for i in ids]})
    column = DriftReference.from_frame(frame).column("id")
    counts = Counter(frame.get_column("id").to_list())
    assert column.distinct == len(counts) > MAX_VALUES
    assert len(column.values or ()) == MAX_VALUES
    assert column.other == frame.height - sum(column.counts or ())
    assert min(column.counts or ()) >= sorted(counts.values(), reverse=True)[MAX_VALUES]
    assert column.raw_values() is None and not column.exact


def test_small_references_keep_the_raw_present_values() -> None:
    rng = np.random.default_rng(1)
    frame = pl.DataFrame({"x": rng.normal(0, 1, 900), "c": rng.choice(["a", "b", "c"], 900)})
    reference = DriftReference.from_frame(frame)
    raw = reference.column("x").raw_values()
    assert raw is not None and np.array_equal(raw, np.sort(frame.get_column("x").to_numpy()))
    words = reference.column("c").raw_values()
    assert words is not None
    assert Counter(words.tolist()) == Counter(frame.get_column("c").to_list())
    large = DriftReference.from_frame(pl.DataFrame({"x": rng.normal(0, 1, 1_001)}))
    assert large.column("x").raw_values() is None


def test_json_round_trip_and_format_tag(rows: pl.DataFrame) -> None:
    predictions = np.random.default_rng(2).random(500)
    reference = DriftReference.from_frame(rows, prediction=predictions)
    again = DriftReference.from_json(reference.to_json())
    assert again == reference
    assert b'"format":"meguri.reference/1"' in reference.to_json()
    with pytest.raises(DataError, match=r"meguri\.reference/1"):
        DriftReference.from_json(b'{"format": "meguri.profile/1"}')


def test_prediction_reference_takes_its_kind_from_the_values() -> None:
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0]})
    labels = np.array(["yes", "no", "yes", "yes"], dtype=object)
    prediction = DriftReference.from_frame(frame, prediction=labels).prediction
    assert prediction is not None and prediction.kind == "categorical"
    assert dict(zip(prediction.values or (), prediction.counts or (), strict=True)) == {
        "yes": 3,
        "no": 1,
    }
    scores = DriftReference.from_frame(frame, prediction=np.array([0.1, 0.5])).prediction
    assert scores is not None and scores.kind == "numeric" and scores.present == 2


def test_lazy_frames_and_column_selection(rows: pl.DataFrame) -> None:
    eager = DriftReference.from_frame(rows, ["x", "word"])
    assert DriftReference.from_frame(rows.lazy(), ["x", "word"]) == eager
    assert eager.names == ("x", "word")


def test_unusable_columns_are_named(rows: pl.DataFrame) -> None:
    with pytest.raises(DataError, match="'missing'"):
        DriftReference.from_frame(rows, ["x", "missing"])
    with pytest.raises(DataError, match="day"):
        DriftReference.from_frame(rows, ["day"])


def test_reference_sample_is_a_seeded_uniform_subset(rows: pl.DataFrame) -> None:
    sample = reference_sample(rows, ["x", "word"], rows=1_000)
    assert sample.shape == (1_000, 2)
    assert sample.equals(reference_sample(rows, ["x", "word"], rows=1_000))
    picked = reference_sample(rows.with_row_index("i"), ["i"], rows=2_000).get_column("i")
    assert picked.n_unique() == 2_000 and picked.max() < rows.height  # type: ignore[operator]
    assert abs(picked.mean() - rows.height / 2) < 100  # type: ignore[operator]
    assert reference_sample(rows.head(50)).height == 50 and SAMPLE_ROWS == 5_000


# -- the sketch's measured error ---------------------------------------------------------------

_DISTRIBUTIONS = {
    "normal": lambda g, n, s: g.normal(s, 1, n),
    "lognormal": lambda g, n, s: g.lognormal(0.3 * s, 1, n),
    "heavy lognormal": lambda g, n, s: g.lognormal(0.3 * s, 2, n),
    "pareto": lambda g, n, s: g.pareto(1.5 + 0.1 * s, n),
    "zero inflated": lambda g, n, s: np.where(g.random(n) < 0.6 - 0.1 * s, 0, g.lognormal(0, 1, n)),
    "wide integers": lambda g, n, s: g.integers(0, 5_000 + int(500 * s), n).astype(float),
}


def _sketched(values: Array) -> ColumnReference:
    return DriftReference.from_frame(pl.DataFrame({"v": values})).column("v")


@pytest.mark.parametrize("name", list(_DISTRIBUTIONS))
def test_sketch_gives_wasserstein_and_ks_within_a_thousandth(name: str) -> None:
    """Why ~1,300 knots: uniform 1,001 quantiles alone miss heavy tails by up to 0.2 in the
    normed Wasserstein distance; the tail levels and exact extremes bring it within 1e-3."""
    g = np.random.default_rng(11)
    draw = _DISTRIBUTIONS[name]
    ref = draw(g, 200_000, 0)
    column = _sketched(ref)
    assert column.levels is not None and len(column.levels) < 1_400
    levels, knots = column.knots()
    norm = max(float(np.std(ref)), 0.001)
    uniform = np.quantile(ref, np.linspace(0, 1, 1_001))
    worst_uniform = 0.0
    for shift in (0.0, 0.1, 0.5):
        cur = np.sort(draw(g, 50_000, shift))
        exact = stats.wasserstein_distance(ref, cur) / norm
        assert t.wasserstein(levels, knots, cur) / norm == pytest.approx(exact, abs=1e-3)
        got_ks = t.ks_statistic(levels, knots, cur)
        assert got_ks == pytest.approx(stats.ks_2samp(ref, cur).statistic, abs=2e-3)
        naive = t.wasserstein(np.linspace(0, 1, 1_001), uniform, cur) / norm
        worst_uniform = max(worst_uniform, abs(naive - exact))
    if name in ("heavy lognormal", "pareto"):
        assert worst_uniform > 1e-2


def test_value_counts_give_the_exact_wasserstein_distance() -> None:
    g = np.random.default_rng(5)
    ref = g.integers(0, 300, 20_000).astype(float)
    cur = np.sort(g.integers(10, 320, 7_777).astype(float))
    column = _sketched(ref)
    assert column.values is not None
    got = t.wasserstein(*column.knots(), cur)
    assert got == pytest.approx(stats.wasserstein_distance(ref, cur), rel=1e-9)
    assert t.ks_statistic(*column.knots(), cur) == pytest.approx(
        stats.ks_2samp(ref, cur).statistic, abs=1e-12
    )
