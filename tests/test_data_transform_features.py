"""Encoders, feature steps, SQL and selection against pandas / scikit-learn on the same rows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.feature_selection import VarianceThreshold, mutual_info_classif
from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder, OrdinalEncoder

from meguri.data._steps_encode import fold_ids
from meguri.data._transform import FittedTransform, fit_transform
from meguri.errors import TransformError


def frame(n: int = 600, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    c = rng.choice(["red", "green", "blue", "grey", "pink"], n, p=[0.35, 0.3, 0.2, 0.1, 0.05])
    y = (rng.random(n) < np.where(c == "red", 0.7, 0.3)).astype(np.int64)
    return pl.DataFrame(
        {
            "a": rng.normal(10, 3, n),
            "b": rng.exponential(2.0, n),
            "c": c,
            "y": y,
        }
    )


def fit(
    df: pl.DataFrame, *steps: dict[str, Any], **kw: Any
) -> tuple[FittedTransform, pl.DataFrame]:
    return fit_transform(df, list(steps), target=kw.pop("target", "y"), **kw)


def test_one_hot_matches_scikit_learn_with_unseen_and_nulls() -> None:
    train = frame()
    fitted, out = fit(train, {"one_hot": {"columns": ["c"]}})
    ref = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(
        train.select("c").to_numpy()
    )
    names = [f"c_{v}" for v in ref.categories_[0]]
    assert [c for c in out.columns if c.startswith("c_")] == names
    np.testing.assert_array_equal(
        out.select(names).to_numpy(), ref.transform(train.select("c").to_numpy())
    )
    new = pl.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0] * 3, "c": ["blue", "purple", None]})
    applied = fitted.apply(new).collect().select(names).to_numpy()
    expected = ref.transform(np.array([["blue"], ["purple"], ["zzz"]], dtype=object))
    np.testing.assert_array_equal(applied, expected)  # unseen and null: all zeros
    assert "c" not in out.columns


def test_one_hot_max_categories_buckets_rare_ones() -> None:
    train = frame()
    fitted, out = fit(
        train, {"one_hot": {"columns": ["c"], "max_categories": 3, "unseen": "other"}}
    )
    ref = OneHotEncoder(max_categories=3, handle_unknown="infrequent_if_exist", sparse_output=False)
    expected = ref.fit_transform(train.select("c").to_numpy())
    kept = [v for v in ref.categories_[0] if v not in ref.infrequent_categories_[0]]
    assert fitted.learned()[0]["columns"]["c"] == {"categories": kept, "other": True}
    ours = out.select([f"c_{v}" for v in kept] + ["c_other"]).to_numpy()
    np.testing.assert_array_equal(ours, expected)
    new = fitted.apply(pl.DataFrame({"a": [0.0], "b": [0.0], "c": ["purple"]})).collect()
    assert new.get_column("c_other").to_list() == [1]


def test_ordinal_matches_scikit_learn_and_explicit_order() -> None:
    train = frame()
    fitted, out = fit(train, {"ordinal": {"columns": ["c"]}})
    ref = OrdinalEncoder().fit(train.select("c").to_numpy())
    np.testing.assert_array_equal(
        out.get_column("c").to_numpy(), ref.transform(train.select("c").to_numpy())[:, 0]
    )
    unseen = fitted.apply(pl.DataFrame({"a": [0.0], "b": [0.0], "c": ["purple"]})).collect()
    assert unseen.get_column("c").to_list() == [-1]
    order = ["grey", "pink", "blue", "green", "red"]
    _, out = fit(train, {"ordinal": {"columns": ["c"], "categories": {"c": order}}})
    assert out.get_column("c").to_list() == [order.index(v) for v in train.get_column("c")]
    with pytest.raises(TransformError, match=r"values \['red'\] that its categories list lacks"):
        fit(train, {"ordinal": {"columns": ["c"], "categories": {"c": order[:-1]}}})


def test_target_encoding_learns_smoothed_means() -> None:
    train = frame()
    fitted, _ = fit(train, {"target_encode": {"columns": ["c"], "smoothing": 5}})
    pdf = train.to_pandas()
    prior = pdf["y"].mean()
    stats = pdf.groupby("c")["y"].agg(["sum", "count"])
    expected = (stats["sum"] + 5 * prior) / (stats["count"] + 5)
    learned = fitted.learned()[0]
    assert learned["prior"] == pytest.approx(prior)
    got = dict(
        zip(learned["columns"]["c"]["categories"], learned["columns"]["c"]["means"], strict=True)
    )
    assert got == pytest.approx(expected.to_dict())
    served = fitted.apply(
        pl.DataFrame({"a": [0.0] * 3, "b": [0.0] * 3, "c": ["red", "purple", None]})
    )
    assert served.collect().get_column("c").to_list() == pytest.approx(
        [expected["red"], prior, prior]
    )


def test_target_encoding_is_out_of_fold_on_training_rows() -> None:
    train = frame()
    _, out = fit(train, {"target_encode": {"columns": ["c"], "smoothing": 2, "folds": 4}}, seed=7)
    pdf = train.to_pandas()
    pdf["fold"] = fold_ids(train, 4, 7).to_numpy()
    expected = np.empty(len(pdf))
    for fold in range(4):
        inside, outside = pdf["fold"] == fold, pdf[pdf["fold"] != fold]
        prior = outside["y"].mean()
        stats = outside.groupby("c")["y"].agg(["sum", "count"])
        means = (stats["sum"] + 2 * prior) / (stats["count"] + 2)
        expected[inside.to_numpy()] = pdf.loc[inside, "c"].map(means).fillna(prior).to_numpy()
    np.testing.assert_allclose(out.get_column("c").to_numpy(), expected)


def test_date_parts_match_pandas() -> None:
    stamps = [dt.datetime(2021, 1, 1, 5) + dt.timedelta(hours=37 * i) for i in range(200)]
    df = pl.DataFrame(
        {"t": stamps, "s": [x.strftime("%Y/%m/%d") for x in stamps], "y": [0, 1] * 100}
    )
    parts = ["year", "month", "day", "weekday", "hour"]
    _, out = fit(
        df,
        {"date_parts": {"columns": ["t"], "parts": parts}},
        {"date_parts": {"columns": ["s"], "parts": ["day"], "format": "%Y/%m/%d"}},
    )
    ts = pd.Series(stamps)
    assert out.get_column("t_year").to_list() == ts.dt.year.tolist()
    assert out.get_column("t_month").to_list() == ts.dt.month.tolist()
    assert (
        out.get_column("t_day").to_list() == ts.dt.day.tolist() == out.get_column("s_day").to_list()
    )
    assert out.get_column("t_weekday").to_list() == (ts.dt.day_of_week + 1).tolist()
    assert out.get_column("t_hour").to_list() == ts.dt.hour.tolist()
    with pytest.raises(TransformError, match="not a date or datetime"):
        fit(df, {"date_parts": {"columns": ["s"]}})


def test_expression_and_ratio() -> None:
    df = frame().with_columns(pl.Series("b", [0.0, *np.arange(1.0, 600.0)]))
    _, out = fit(
        df,
        {"expression": {"name": "e", "expr": "a * 2 + ln(b + 1)"}},
        {"ratio": {"name": "r", "numerator": "a", "denominator": "b"}},
    )
    a, b = df.get_column("a").to_numpy(), df.get_column("b").to_numpy()
    np.testing.assert_allclose(out.get_column("e").to_numpy(), a * 2 + np.log(b + 1))
    assert out.get_column("r")[0] is None
    np.testing.assert_allclose(out.get_column("r").to_numpy()[1:], a[1:] / b[1:])
    with pytest.raises(
        TransformError, match=r"data.prepare\[0\] \(expression\): unknown column 'aa'"
    ):
        fit(df, {"expression": {"name": "e", "expr": "aa * 2"}})


@pytest.mark.parametrize("method", ["uniform", "quantile"])
def test_bins_match_kbins_discretizer(method: str) -> None:
    train, test = frame(seed=1), frame(seed=2)
    fitted, out = fit(train, {"bin": {"columns": ["a", "b"], "method": method, "bins": 4}})
    options: dict[str, Any] = {"quantile_method": "linear"} if method == "quantile" else {}
    ref = KBinsDiscretizer(n_bins=4, encode="ordinal", strategy=method, **options)
    ref.fit(train.select("a", "b").to_numpy())
    for i, name in enumerate(["a", "b"]):
        assert fitted.learned()[0]["edges"][name] == pytest.approx(list(ref.bin_edges_[i]))
    np.testing.assert_array_equal(
        out.select("a", "b").to_numpy(), ref.transform(train.select("a", "b").to_numpy())
    )
    applied = fitted.apply(test).collect().select("a", "b").to_numpy()
    np.testing.assert_array_equal(applied, ref.transform(test.select("a", "b").to_numpy()))


def test_text_length_in_chars_and_words() -> None:
    texts = ["hello world", "  a  b c ", "", None, "日本語 テキスト"]
    df = pl.DataFrame({"t": texts, "y": [0, 1, 0, 1, 0]})
    _, out = fit(df, {"text_length": {"columns": ["t"]}})
    assert out.get_column("t_length").to_list() == [None if t is None else len(t) for t in texts]
    _, out = fit(df, {"text_length": {"columns": ["t"], "unit": "words"}})
    assert out.get_column("t_length").to_list() == [
        None if t is None else len(t.split()) for t in texts
    ]


def test_sql_step_is_row_wise_and_reapplied() -> None:
    train, test = frame(seed=1), frame(seed=2)
    query = "SELECT *, CASE WHEN a > 10 THEN 'high' ELSE 'low' END AS level FROM data"
    fitted, out = fit(train, {"sql": {"query": query}}, {"one_hot": {"columns": ["level"]}})
    assert (
        out.get_column("level_high").to_list()
        == (train.get_column("a") > 10).cast(pl.Int8).to_list()
    )
    one = fitted.apply(test.head(1).drop("y")).collect()
    assert one.get_column("level_high").item() == int(test.get_column("a")[0] > 10)
    with pytest.raises(TransformError, match="not row-wise"):
        fit(train, {"sql": {"query": "SELECT *, avg(a) OVER () AS m FROM data"}})
    with pytest.raises(TransformError, match="keep every row"):
        fit(train, {"sql": {"query": "SELECT * FROM data WHERE a > 10"}})


def test_sql_lookup_is_learned_on_training_rows() -> None:
    train, test = frame(seed=1), frame(seed=2)
    query = "SELECT c, avg(b) AS b_by_c, count(*) AS n_by_c FROM data WHERE c <> 'pink' GROUP BY c"
    fitted, out = fit(train, {"sql_lookup": {"query": query, "on": ["c"]}})
    means = train.to_pandas().groupby("c")["b"].mean()
    expected = [None if c == "pink" else means[c] for c in train.get_column("c")]
    assert out.get_column("b_by_c").to_list() == pytest.approx(expected)
    applied = fitted.apply(test).collect()
    assert applied.get_column("b_by_c").to_list() == pytest.approx(
        [None if c == "pink" else means[c] for c in test.get_column("c")]
    )
    assert fitted.learned()[0]["table_rows"] == 4
    with pytest.raises(TransformError, match="several rows per"):
        fit(train, {"sql_lookup": {"query": "SELECT c, a AS a2 FROM data", "on": ["c"]}})


def test_select_variance_matches_variance_threshold() -> None:
    df = frame().with_columns(pl.lit(1.0).alias("k"), (pl.col("a") / 100).alias("small"))
    fitted, out = fit(df, {"select": {"method": "variance", "threshold": 0.01}})
    columns = ["a", "b", "k", "small"]
    ref = VarianceThreshold(0.01).fit(df.select(columns).to_numpy())
    kept = [c for c, keep in zip(columns, ref.get_support(), strict=True) if keep]
    assert fitted.learned()[0]["kept"] == kept
    assert fitted.learned()[0]["scores"] == pytest.approx(
        dict(zip(columns, ref.variances_, strict=True))
    )
    assert set(out.columns) == {*kept, "c", "y"}


def test_select_correlation_prunes_greedily() -> None:
    df = frame().with_columns(
        (pl.col("a") * 2 + 0.01 * pl.col("b")).alias("a2"), (-pl.col("b")).alias("nb")
    )
    fitted, out = fit(df, {"select": {"method": "correlation", "threshold": 0.9}})
    corr = df.select("a", "b", "a2", "nb").to_pandas().corr().abs()
    assert corr.loc["a", "a2"] > 0.9
    assert corr.loc["b", "nb"] > 0.9
    assert fitted.learned()[0]["dropped"] == ["a2", "nb"]
    assert fitted.learned()[0]["scores"]["a2"] == pytest.approx(corr.loc["a", "a2"])
    assert "a2" not in out.columns


def test_select_mutual_info_top_k_matches_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    df = frame().with_columns(
        (pl.col("y") + pl.Series(rng.normal(0, 0.3, 600))).alias("signal"),
        pl.Series("noise", rng.normal(size=600)),
    )
    fitted, _ = fit(df, {"select": {"method": "mutual_info", "k": 2}}, seed=5)
    columns = ["a", "b", "signal", "noise"]
    scores = mutual_info_classif(
        df.select(columns).to_numpy(), df.get_column("y").to_numpy(), random_state=5
    )
    assert fitted.learned()[0]["scores"] == pytest.approx(dict(zip(columns, scores, strict=True)))
    top = [columns[i] for i in np.argsort(-scores)[:2]]
    assert set(fitted.learned()[0]["kept"]) == set(top)
    assert "signal" in top


def test_select_importance_keeps_the_informative_column() -> None:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(4)
    df = frame().with_columns(
        (pl.col("y") * 3 + pl.Series(rng.normal(0, 0.5, 600))).alias("signal")
    )
    fitted, _ = fit(df, {"select": {"method": "importance", "k": 1}}, seed=2)
    columns = ["a", "b", "signal"]
    forest = RandomForestClassifier(n_estimators=100, max_depth=10, random_state=2, n_jobs=1)
    forest.fit(df.select(columns).to_numpy(), df.get_column("y").to_numpy())
    expected = dict(zip(columns, forest.feature_importances_, strict=True))
    assert fitted.learned()[0]["scores"] == pytest.approx(expected)
    assert fitted.learned()[0]["kept"] == ["signal"]


def test_selection_needs_complete_columns_and_a_target() -> None:
    df = frame().with_columns(pl.when(pl.col("a") > 12).then(None).otherwise("a").alias("a"))
    with pytest.raises(TransformError, match=r"'a' has .* null.*add an impute step"):
        fit(df, {"select": {"method": "correlation"}})
    with pytest.raises(TransformError, match="pass target="):
        fit_transform(frame(), [{"select": {"method": "importance", "k": 1}}], target=None)


def test_integer_codes_are_encoded_only_when_named() -> None:
    df = frame().with_columns(pl.col("a").round().cast(pl.Int64).alias("code"))
    fitted, _ = fit(df, {"one_hot": {}})
    assert list(fitted.learned()[0]["columns"]) == ["c"]
    fitted, _ = fit(df, {"one_hot": {"columns": ["code"], "max_categories": 4}})
    ref = OneHotEncoder(max_categories=4, sparse_output=False).fit(df.select("code").to_numpy())
    kept = [str(v) for v in ref.categories_[0] if v not in ref.infrequent_categories_[0]]
    assert fitted.learned()[0]["columns"]["code"]["categories"] == sorted(kept)
