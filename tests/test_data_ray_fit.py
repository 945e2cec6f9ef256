"""Fitting data.prepare on Ray Data (Ray in local mode, one CPU): the statistics equal the
Polars-fitted ones (order statistics bit for bit, means and standard deviations to 1e-12 and
to the exactly rounded value), so the fitted transform is the local one."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pytest

pytest.importorskip("ray")

from meguri.compute import Executor
from meguri.data._fit_ray import fit_on, fit_transform_ray
from meguri.data._fit_ray_stats import RayStats
from meguri.data._transform import fit_transform


@pytest.fixture(scope="module")
def engine() -> Iterator[Executor]:
    from meguri.compute import executor as make

    with make("ray", num_cpus=1) as executor:
        yield executor


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    rng = np.random.default_rng(11)
    n = 12_000
    missing = np.flatnonzero(rng.random(n) < 0.1)
    return pl.DataFrame(
        {
            "a": rng.normal(5.0, 3.0, n),
            "b": pl.Series(rng.lognormal(0.0, 1.0, n)).scatter(missing, None),
            "c": rng.integers(0, 50, n),
            "d": np.round(rng.normal(0.0, 1.0, n), 1),  # many ties
            "city": rng.choice(["Tokyo", "Osaka", "Kyoto"], n),
            "y": rng.integers(0, 2, n),
        }
    )


def test_order_statistics_are_exact_and_moments_exactly_rounded(
    engine: Executor, frame: pl.DataFrame
) -> None:
    # blocks of 1,700 rows; at most 2,000 values gathered: histogram passes narrow each rank
    stats = RayStats(RayStats.dataset_of(frame, 1_700).materialize(), max_collect=2_000)
    qs = [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0]
    found = stats.quantiles(["a", "b", "c", "d"], qs)
    for column in ("a", "b", "c", "d"):
        values = frame.get_column(column).cast(pl.Float64)
        expected = [values.quantile(q, interpolation="linear") for q in qs]
        assert found[column] == expected, column  # bit for bit
        assert stats.minimum(column) == values.min() and stats.maximum(column) == values.max()
        exact = values.drop_nulls().to_numpy()
        mean = math.fsum(exact) / exact.size
        assert stats.mean(column) == mean
        assert stats.mean(column) == pytest.approx(values.mean(), rel=1e-12, abs=0)
        spread = math.sqrt(math.fsum((exact - mean) ** 2) / exact.size)
        assert stats.std(column) == spread
        assert stats.std(column) == pytest.approx(values.std(ddof=0), rel=1e-12, abs=0)
    assert stats.count("b") == frame.height - frame["b"].null_count()


ORDER_STEPS: list[dict[str, Any]] = [
    {"impute": {"strategy": "median", "columns": ["b"], "indicator": True}},
    {"clip": {"method": "iqr", "columns": ["a", "b", "c"]}},
    {"clip": {"method": "quantile", "lower": 0.05, "upper": 0.95, "columns": ["d"]}},
    {"scale": {"method": "robust", "columns": ["c"]}},
    {"ratio": {"name": "a_per_b", "numerator": "a", "denominator": "b"}},
    {"one_hot": {"columns": ["city"]}},  # no Ray fitting: Polars, with a note
    {"scale": {"method": "minmax", "columns": ["d", "a_per_b"]}},
    {"impute": {"strategy": "constant", "value": 0, "columns": ["a_per_b"]}},
]


def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def test_ray_fit_equals_the_local_fit(
    engine: Executor, frame: pl.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    local, local_rows = fit_transform(frame, ORDER_STEPS, target="y", seed=5)
    with caplog.at_level(logging.INFO, logger="meguri.data._fit_ray"):
        fitted, rows = fit_on(engine, frame, ORDER_STEPS, target="y", seed=5, block_rows=2_500)
    assert [s.learned for s in fitted.steps] == [s.learned for s in local.steps]
    assert _digest(fitted.to_json()) == _digest(local.to_json())
    assert rows.equals(local_rows)
    notes = [r.getMessage() for r in caplog.records]
    assert any("data.prepare[5] (one_hot): no Ray fitting" in n for n in notes)
    assert not any("data.prepare[1]" in n for n in notes)


def test_mean_and_std_steps_agree_to_1e12(engine: Executor, frame: pl.DataFrame) -> None:
    steps: list[dict[str, Any]] = [
        {"impute": {"strategy": "mean", "columns": ["b"]}},
        {"zscore_filter": {"threshold": 2.5, "columns": ["a"]}},
        {"scale": {"method": "standard", "columns": ["a", "b", "c"]}},
    ]
    local, local_rows = fit_transform(frame, steps, target="y")
    dataset = RayStats.dataset_of(frame, 3_000)
    fitted, out = fit_transform_ray(dataset, steps, target="y")
    filtered = local.steps[1].learned
    assert fitted.steps[1].learned["columns"] == filtered["columns"]
    for mine, theirs in zip(fitted.steps, local.steps, strict=True):
        _close(mine.learned, theirs.learned)
    rows = RayStats(out).collect()
    assert rows.height == local_rows.height  # the z-score filter kept the same rows
    np.testing.assert_allclose(rows["a"].to_numpy(), local_rows["a"].to_numpy(), rtol=1e-12)


def _close(mine: Any, theirs: Any) -> None:
    if isinstance(theirs, dict):
        assert mine.keys() == theirs.keys()
        for key in theirs:
            _close(mine[key], theirs[key])
    elif isinstance(theirs, list):
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            _close(a, b)
    elif isinstance(theirs, float):
        assert mine == pytest.approx(theirs, rel=1e-12, abs=0)
    else:
        assert mine == theirs


def test_errors_match_the_local_fit(engine: Executor, frame: pl.DataFrame) -> None:
    from meguri.errors import TransformError

    dataset = RayStats.dataset_of(frame, 5_000)
    with pytest.raises(TransformError, match=r"data.prepare\[0\] \(scale\): unknown column 'z'"):
        fit_transform_ray(dataset, [{"scale": {"method": "standard", "columns": ["z"]}}])
    with pytest.raises(TransformError, match="the target is missing"):
        fit_transform_ray(dataset, [], target="label")


def test_fit_on_without_ray_is_the_local_fit(frame: pl.DataFrame) -> None:
    local, rows = fit_transform(frame, ORDER_STEPS[:3], target="y")
    fitted, same = fit_on(None, frame, ORDER_STEPS[:3], target="y")
    assert fitted.to_json() == local.to_json() and same.equals(rows)
