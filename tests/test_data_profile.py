"""Profiles against numpy/pandas on the same rows; the JSON round trip; the HTML report."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import polars as pl
import pytest

from meguri.data._profile import QUANTILES, DatasetProfile, profile, profile_warnings
from meguri.data._report import render_profile_html
from meguri.datasets import load
from meguri.errors import DataError


@pytest.fixture(scope="module")
def cancer() -> pl.DataFrame:
    return pl.from_arrow(load("breast_cancer"))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def mixed() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    n = 500
    x = rng.normal(10, 3, n)
    x[rng.choice(n, 40, replace=False)] = np.nan
    ints = rng.integers(0, 20, n)
    words = rng.choice(["red", "green", "blue", "grey"], n, p=[0.4, 0.3, 0.2, 0.1])
    frame = pl.DataFrame(
        {
            "x": x,
            "ints": ints,
            "word": words,
            "flag": rng.random(n) < 0.3,
            "day": [date(2024, 1, 1) + timedelta(days=int(d)) for d in rng.integers(0, 90, n)],
            "y": 2 * ints + rng.normal(0, 1, n),
        }
    )
    nulls = pl.Series(rng.random(n) < 0.1)
    return frame.with_columns(
        pl.when(nulls).then(None).otherwise(pl.col(c)).alias(c) for c in ("ints", "word", "day")
    )


def _present(frame: pl.DataFrame, name: str) -> np.ndarray:
    values = frame.get_column(name).drop_nulls().to_numpy().astype(float)
    return values[~np.isnan(values)]


@pytest.mark.parametrize("name", ["mean_radius", "worst_area", "malignant", "mean_concavity"])
def test_numeric_stats_match_numpy_on_breast_cancer(cancer: pl.DataFrame, name: str) -> None:
    column = profile(cancer).column(name)
    values = _present(cancer, name)
    stats = column.numeric
    assert stats is not None
    assert (column.count, column.nulls, column.nans) == (len(values), 0, 0)
    assert column.distinct == len(np.unique(values))
    assert stats.min == values.min() and stats.max == values.max()
    assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
    assert stats.std == pytest.approx(values.std(ddof=1), rel=1e-12)
    expected = np.quantile(values, list(QUANTILES.values()), method="linear")
    assert list(stats.quantiles.values()) == pytest.approx(expected, rel=1e-12)
    counts, edges = np.histogram(values, bins=20)
    assert stats.histogram is not None
    assert list(stats.histogram.counts) == counts.tolist()
    assert list(stats.histogram.edges) == edges.tolist()


def test_correlations_match_pandas(cancer: pl.DataFrame) -> None:
    result = profile(cancer, target="malignant")
    expected = cancer.to_pandas().corr()
    names = result.correlations.columns
    got = np.array(result.correlations.matrix, dtype=float)
    np.testing.assert_allclose(got, expected.loc[list(names), list(names)].to_numpy(), atol=1e-12)
    target = expected["malignant"].drop("malignant")
    for name, value in result.target_correlations.items():
        assert value == pytest.approx(target[name], abs=1e-12)


def test_boolean_target_correlations_count_it_as_zero_one(mixed: pl.DataFrame) -> None:
    result = profile(mixed, target="flag")
    frame = mixed.to_pandas()
    expected = frame[["x", "ints", "y"]].corrwith(frame["flag"].astype(float))
    assert set(result.target_correlations) == {"x", "ints", "y"}
    for name, value in result.target_correlations.items():
        assert value == pytest.approx(expected[name], abs=1e-12)


def test_nans_and_nulls_are_missing_and_skipped(mixed: pl.DataFrame) -> None:
    result = profile(mixed, bins=7)
    x = result.column("x")
    values = _present(mixed, "x")
    assert (x.count, x.nulls, x.nans) == (len(values), 0, 40)
    assert x.numeric is not None and x.numeric.histogram is not None
    counts, edges = np.histogram(values, bins=7)
    assert list(x.numeric.histogram.counts) == counts.tolist()
    assert list(x.numeric.histogram.edges) == edges.tolist()
    ints = result.column("ints")
    series = mixed.get_column("ints").to_pandas()
    assert (ints.count, ints.nulls) == (series.count(), series.isna().sum())
    assert ints.numeric is not None
    assert ints.numeric.quantiles["p95"] == pytest.approx(series.quantile(0.95))
    assert ints.numeric.std == pytest.approx(series.std())


def test_integer_histogram_matches_numpy_at_bin_edges() -> None:
    values = np.arange(0, 21).repeat(3)
    column = profile(pl.DataFrame({"v": values}), bins=20).column("v")
    assert column.numeric is not None and column.numeric.histogram is not None
    assert list(column.numeric.histogram.counts) == np.histogram(values, 20)[0].tolist()


def test_top_values_strings_booleans_and_dates(mixed: pl.DataFrame) -> None:
    result = profile(mixed, top=3)
    word = result.column("word")
    expected = mixed.get_column("word").to_pandas().value_counts()
    assert [(v.value, v.count) for v in word.top] == list(expected.head(3).items())
    assert word.distinct == expected.size and word.kind == "string"
    flag = result.column("flag")
    counts = mixed.get_column("flag").to_pandas().value_counts()
    assert {v.value: v.count for v in flag.top} == counts.to_dict()
    day = result.column("day")
    days = mixed.get_column("day").drop_nulls()
    assert day.kind == "temporal" and day.temporal is not None
    assert (day.temporal.min, day.temporal.max) == (str(days.min()), str(days.max()))
    assert day.distinct == days.n_unique()


def test_top_value_ties_are_ordered_by_value() -> None:
    frame = pl.DataFrame({"s": ["b", "a", "c", "a", "b", "d"]})
    assert [(v.value, v.count) for v in profile(frame).column("s").top] == [
        ("a", 2),
        ("b", 2),
        ("c", 1),
        ("d", 1),
    ]


def test_lazy_frame_empty_and_constant_columns() -> None:
    lazy = pl.LazyFrame(
        {"k": [3, 3, 3], "e": [None, None, None]}, schema={"k": pl.Int64, "e": pl.Float64}
    )
    result = profile(lazy)
    k = result.column("k")
    assert k.numeric is not None and k.numeric.histogram is not None
    counts, edges = np.histogram([3, 3, 3], 20)
    assert list(k.numeric.histogram.edges) == edges.tolist()
    assert list(k.numeric.histogram.counts) == counts.tolist()
    assert result.correlations.get("k", "e") is None
    e = result.column("e")
    assert e.count == 0 and e.numeric is not None and e.numeric.histogram is None
    kinds = {(w.column, w.kind) for w in profile_warnings(result)}
    assert {("k", "constant"), ("e", "constant"), ("e", "missing")} <= kinds


def test_json_round_trip_is_stable(mixed: pl.DataFrame) -> None:
    result = profile(mixed, target="y")
    text = result.to_json()
    again = DatasetProfile.from_json(text)
    assert again == result
    assert again.to_json() == text
    assert b'"format":"meguri.profile/1"' in text


def test_from_json_rejects_other_documents() -> None:
    with pytest.raises(DataError, match=r"profile the dataset again"):
        DatasetProfile.from_json(b'{"format": "other"}')


def test_unknown_target_names_the_setting(mixed: pl.DataFrame) -> None:
    with pytest.raises(DataError, match=r"'nope'.*requirements.functional.target"):
        profile(mixed, target="nope")


def test_html_report_is_self_contained(cancer: pl.DataFrame) -> None:
    page = render_profile_html(profile(cancer, target="malignant"), "cancer <&>")
    assert page.count("<script>") == 2  # plotly.js once, the figures once
    assert "cancer &lt;&amp;&gt;" in page
    assert "http://" not in page.split("<script>")[0]
    assert page.count('class="plot"') == len(cancer.columns)
    assert 'id="correlations"' in page


def test_profile_passes(mixed: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    """One pass over every column, then one read of each numeric column alone (for its sort)."""
    widths: list[int] = []
    original = pl.LazyFrame.collect

    def counting(self: pl.LazyFrame, *args: object, **kwargs: object) -> pl.DataFrame:
        result = original(self, *args, **kwargs)  # type: ignore[arg-type]
        widths.append(result.width)
        return result

    monkeypatch.setattr(pl.LazyFrame, "collect", counting)
    profile(mixed.lazy(), target="y")
    numeric = ["x", "ints", "y"]
    assert len(widths) == 1 + len(numeric)
    assert widths[1:] == [1] * len(numeric)
    widths.clear()
    profile(mixed, target="y")  # in memory: the sorts read the columns it holds
    assert len(widths) == 1


def test_datetime_columns() -> None:
    stamps = [datetime(2024, 5, 1, 12), None, datetime(2023, 1, 1)]
    column = profile(pl.DataFrame({"t": stamps})).column("t")
    assert column.temporal is not None
    assert (column.temporal.min, column.temporal.max) == (
        "2023-01-01T00:00:00",
        "2024-05-01T12:00:00",
    )
    assert (column.count, column.nulls, column.distinct) == (2, 1, 2)
    assert pd.Timestamp(column.temporal.max) == pd.Timestamp(stamps[0])
