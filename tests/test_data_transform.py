"""Cleaning steps: every learned number against numpy / scikit-learn on the same rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

from meguri.data._transform import FittedTransform, fit_transform
from meguri.errors import TransformError


def frame(n: int = 400, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(10, 3, n)
    a[rng.random(n) < 0.1] = np.nan
    return pl.DataFrame(
        {
            "a": a,
            "b": rng.integers(0, 50, n),
            "c": rng.choice(["red", "green", "blue", "grey"], n, p=[0.4, 0.3, 0.2, 0.1]),
            "y": rng.integers(0, 2, n),
        }
    ).with_columns(pl.col("a").fill_nan(None))


def fit(
    df: pl.DataFrame, *steps: dict[str, Any], **kw: Any
) -> tuple[FittedTransform, pl.DataFrame]:
    return fit_transform(df, list(steps), target=kw.pop("target", "y"), **kw)


def column(df: pl.DataFrame, name: str) -> np.ndarray[Any, Any]:
    return df.get_column(name).cast(pl.Float64).to_numpy()


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent"])
def test_impute_matches_simple_imputer(strategy: str) -> None:
    df = frame().with_columns(pl.col("b").cast(pl.Float64))
    late = (pl.int_range(pl.len()) < 30) & (pl.col("y") == 1)
    df = df.with_columns(pl.when(late).then(None).otherwise("b").alias("b"))
    ours = "mode" if strategy == "most_frequent" else strategy
    fitted, out = fit(df, {"impute": {"columns": ["a", "b"], "strategy": ours}})
    ref = SimpleImputer(strategy=strategy).fit(df.select("a", "b").to_numpy())
    values = fitted.learned()[0]["values"]
    np.testing.assert_allclose([values["a"], values["b"]], ref.statistics_)
    np.testing.assert_allclose(
        out.select("a", "b").to_numpy(), ref.transform(df.select("a", "b").to_numpy())
    )


def test_impute_indicator_and_constant() -> None:
    df = frame()
    fitted, out = fit(
        df, {"impute": {"columns": ["a"], "strategy": "constant", "value": -1, "indicator": True}}
    )
    assert (
        out.get_column("a_missing").to_list()
        == df.get_column("a").is_null().cast(pl.Int8).to_list()
    )
    assert out.get_column("a").null_count() == 0
    assert (out.filter(pl.col("a_missing") == 1).get_column("a") == -1).all()
    served = fitted.apply(
        pl.DataFrame({"a": [None, 2.0], "b": [1, 2], "c": ["red", "red"]})
    ).collect()
    assert served.get_column("a").to_list() == [-1.0, 2.0]
    assert served.get_column("a_missing").to_list() == [1, 0]


def test_clip_iqr_and_quantile_bounds() -> None:
    df = frame()
    fitted, out = fit(
        df,
        {"clip": {"columns": ["a"], "method": "iqr", "factor": 1.5}},
        {"clip": {"columns": ["b"], "method": "quantile", "lower": 0.05, "upper": 0.9}},
    )
    a = column(df, "a")
    q1, q3 = np.nanpercentile(a, [25, 75])
    lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    assert fitted.learned()[0]["bounds"]["a"] == pytest.approx([lo, hi])
    np.testing.assert_allclose(column(out, "a"), np.clip(a, lo, hi))
    b = column(df, "b")
    blo, bhi = np.percentile(b, [5, 90])
    assert fitted.learned()[1]["bounds"]["b"] == pytest.approx([blo, bhi])
    np.testing.assert_allclose(column(out, "b"), np.clip(b, blo, bhi))


def test_zscore_filter_drops_training_rows_only() -> None:
    df = frame().with_columns(
        pl.Series("b", [1000] + [1] * 399).cast(pl.Int64) + pl.int_range(400) % 7
    )
    fitted, out = fit(df, {"zscore_filter": {"columns": ["b"], "threshold": 3}})
    b = column(df, "b")
    keep = np.abs((b - b.mean()) / b.std()) <= 3
    assert out.height == keep.sum() == 399
    assert fitted.apply(df).collect().height == 400  # serving never drops a row
    assert fitted.apply(df, training=True).collect().height == 399


def test_drop_missing_and_filter_act_on_training_rows() -> None:
    df = frame()
    fitted, out = fit(
        df, {"drop_missing": {"columns": ["a"]}}, {"filter": {"where": "b >= 10 AND y = 1"}}
    )
    expected = df.filter(pl.col("a").is_not_null() & (pl.col("b") >= 10) & (pl.col("y") == 1))
    assert out.equals(expected.select(out.columns))
    assert fitted.apply(df).collect().height == df.height


@pytest.mark.parametrize(
    ("method", "reference"),
    [("standard", StandardScaler()), ("minmax", MinMaxScaler()), ("robust", RobustScaler())],
)
def test_scalers_match_scikit_learn(method: str, reference: Any) -> None:
    train, test = frame(seed=1).drop_nulls(), frame(seed=2).drop_nulls()
    fitted, out = fit(train, {"scale": {"columns": ["a", "b"], "method": method}})
    x_train, x_test = train.select("a", "b").to_numpy(), test.select("a", "b").to_numpy()
    reference.fit(x_train)
    np.testing.assert_allclose(
        out.select("a", "b").to_numpy(), reference.transform(x_train), atol=1e-12
    )
    applied = fitted.apply(test).collect().select("a", "b").to_numpy()
    np.testing.assert_allclose(applied, reference.transform(x_test), atol=1e-12)


def test_constant_column_scales_by_one() -> None:
    df = frame().with_columns(pl.lit(5.0).alias("k"))
    fitted, out = fit(df, {"scale": {"columns": ["k"]}})
    assert fitted.learned()[0]["stats"]["k"] == [5.0, 1.0]
    assert (out.get_column("k") == 0).all()


def test_default_columns_are_numeric_non_target() -> None:
    fitted, _ = fit(frame(), {"scale": {}})
    assert list(fitted.learned()[0]["stats"]) == ["a", "b"]


def test_unknown_column_names_step_and_suggests() -> None:
    with pytest.raises(TransformError) as info:
        fit(frame(), {"impute": {"columns": ["a"]}}, {"scale": {"columns": ["bb"]}})
    message = str(info.value)
    assert message.startswith("data.prepare[1] (scale): unknown column 'bb'")
    assert "did you mean 'b'" in message


def test_a_column_made_by_an_earlier_step_is_known() -> None:
    _, out = fit(
        frame(),
        {"impute": {"columns": ["a"], "indicator": True}},
        {"scale": {"columns": ["a_missing"]}},
    )
    assert out.get_column("a_missing").mean() == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        ([{"scale": {"columns": ["c"]}}], "column 'c' is String, not numeric"),
        ([{"scale": {"columns": ["y"]}}], "'y' is the target"),
        ([{"drop": {"columns": ["y"]}}], "'y' is the target"),
        ([{"expression": {"name": "y", "expr": "a + 1"}}], "'y' is the target"),
        ([{"expression": {"name": "e", "expr": "y + 1"}}], "'y' is the target"),
        ([{"filter": {"where": "b > (SELECT 1)"}}], "subqueries are not allowed"),
        ([{"filter": {"where": "b >"}}], "cannot read the expression"),
        ([{"filter": {"where": "b > 100"}}], "no training row is left"),
        ([{"impute": {"strategy": "sideways"}}], "data.prepare[0] is not a valid step"),
    ],
)
def test_bad_steps_are_transform_errors(steps: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(TransformError, match=re_escape(words)):
        fit_transform(frame(), steps, target="y")


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_missing_target_and_empty_frame() -> None:
    with pytest.raises(TransformError, match="target is missing: unknown column 'z'"):
        fit_transform(frame(), [], target="z")
    with pytest.raises(TransformError, match="empty frame"):
        fit_transform(frame().head(0), [], target="y")


def test_apply_needs_the_input_columns() -> None:
    fitted, _ = fit(frame(), {"scale": {"columns": ["a"]}})
    with pytest.raises(TransformError, match=r"lacks the input column\(s\) \['b'\]"):
        fitted.apply(pl.DataFrame({"a": [1.0], "c": ["red"]}))
