"""The fitted transform as a whole: JSON round trip, serving one row, the bundled dataset, speed."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.preprocessing import StandardScaler

from meguri import datasets
from meguri.data._split import split
from meguri.data._transform import FittedTransform, fit_transform
from meguri.errors import TransformError
from meguri.spec import SplitSpec

STEPS: list[dict[str, Any]] = [
    {"drop_missing": {"columns": ["y"]}},
    {"impute": {"columns": ["a"], "strategy": "median", "indicator": True}},
    {"impute": {"columns": ["c"], "strategy": "mode"}},
    {"clip": {"columns": ["b"], "method": "iqr"}},
    {"zscore_filter": {"columns": ["a"], "threshold": 4}},
    {"date_parts": {"columns": ["when"], "parts": ["month", "weekday"]}},
    {"text_length": {"columns": ["note"], "unit": "words"}},
    {"ratio": {"name": "a_per_b", "numerator": "a", "denominator": "b"}},
    {"expression": {"name": "ab", "expr": "a * b - 1"}},
    {"one_hot": {"columns": ["c"], "max_categories": 3, "unseen": "other"}},
    {
        "sql_lookup": {
            "query": "SELECT city, avg(b) AS b_city FROM data GROUP BY city",
            "on": ["city"],
        }
    },
    {"target_encode": {"columns": ["city"], "smoothing": 3}},
    {"ordinal": {"columns": ["size"], "categories": {"size": ["S", "M", "L"]}}},
    {"bin": {"columns": ["b"], "bins": 4}},
    {"scale": {"columns": ["a", "ab"], "method": "standard"}},
    {"drop": {"columns": ["id"]}},
]


def frame(n: int = 500, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(5, 2, n)
    return pl.DataFrame(
        {
            "id": np.arange(n),
            "a": np.where(rng.random(n) < 0.1, np.nan, a),
            "b": rng.exponential(3, n) + 0.1,
            "c": rng.choice(["x", "y", "z", "w"], n, p=[0.5, 0.3, 0.15, 0.05]),
            "city": rng.choice(["tokyo", "osaka", "kyoto"], n),
            "size": rng.choice(["S", "M", "L"], n),
            "when": [
                dt.date(2024, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 365, n)
            ],
            "note": [["short", "a longer note", None][i] for i in rng.integers(0, 3, n)],
            "y": rng.integers(0, 2, n),
        }
    ).with_columns(pl.col("a").fill_nan(None))


def test_json_round_trip_gives_identical_output() -> None:
    train, test = frame(seed=1), frame(seed=2)
    fitted, _ = fit_transform(train, STEPS, target="y", seed=3)
    blob = fitted.to_json()
    document = json.loads(blob)
    assert document["format"] == "meguri.transform"
    assert document["version"] == 1
    assert b"pickle" not in blob
    again = FittedTransform.from_json(blob)
    assert again.to_json() == blob
    assert again.apply(test).collect().equals(fitted.apply(test).collect())
    assert again.input_schema == fitted.input_schema
    assert again.output_schema == fitted.output_schema


def test_apply_reproduces_fit_output_except_out_of_fold_columns() -> None:
    train = frame(seed=1)
    fitted, out = fit_transform(train, STEPS, target="y", seed=3)
    again = fitted.apply(train, training=True).collect()
    assert again.columns == out.columns
    assert again.drop("city").equals(out.drop("city"))  # city: target-encoded out of fold
    assert dict(zip(out.columns, map(str, out.dtypes), strict=True)) == {
        **fitted.output_schema,
        "y": "Int64",
    }


def test_one_row_from_json_with_nulls_and_unseen_categories() -> None:
    fitted, _ = fit_transform(frame(), STEPS, target="y")
    row = {
        "id": 1,
        "a": None,
        "b": 2,
        "c": "never-seen",
        "city": "nagoya",
        "size": "XL",
        "when": dt.date(2024, 3, 4),
        "note": None,
    }
    one = fitted.apply(pl.DataFrame([row])).collect()
    assert one.height == 1
    assert list(one.columns) == list(fitted.output_schema)
    values = one.row(0, named=True)
    assert values["a_missing"] == 1
    assert values["c_other"] == 1
    assert values["size"] == -1
    assert values["city"] == pytest.approx(fitted.learned()[11]["prior"])
    assert values["b_city"] is None
    assert values["when_month"] == 3
    assert values["when_weekday"] == 1


def test_learned_summarises_every_step() -> None:
    fitted, _ = fit_transform(frame(), STEPS, target="y")
    learned = fitted.learned()
    assert [entry["kind"] for entry in learned] == [next(iter(s)) for s in STEPS]
    assert learned[1]["values"]["a"] == pytest.approx(frame().get_column("a").median())
    assert "table" not in learned[10]
    assert learned[10]["table_rows"] == 3
    json.dumps(learned)


def test_a_foreign_or_newer_document_is_refused() -> None:
    fitted, _ = fit_transform(frame(), STEPS[:2], target="y")
    document = fitted.to_dict()
    with pytest.raises(TransformError, match="refit the transform"):
        FittedTransform.from_dict({**document, "version": 99})
    with pytest.raises(TransformError, match="not JSON"):
        FittedTransform.from_json(b"\x80pickle")


def test_breast_cancer_end_to_end() -> None:
    data = pl.from_arrow(datasets.load("breast_cancer"))
    assert isinstance(data, pl.DataFrame)
    parts = split(data, SplitSpec(method="stratified", seed=1), target="malignant")
    steps = [
        {"scale": {"method": "standard"}},
        {"select": {"method": "correlation", "threshold": 0.95}},
        {"select": {"method": "mutual_info", "k": 10}},
    ]
    fitted, train = fit_transform(parts.train, steps, target="malignant", seed=1)
    assert train.width == 11
    features = [c for c in data.columns if c != "malignant"]
    scaler = StandardScaler().fit(parts.train.select(features).to_numpy())
    kept = [c for c in train.columns if c != "malignant"]
    test = FittedTransform.from_json(fitted.to_json()).apply(parts.test).collect()
    idx = [features.index(c) for c in kept]
    expected = scaler.transform(parts.test.select(features).to_numpy())[:, idx]
    np.testing.assert_allclose(test.select(kept).to_numpy(), expected, atol=1e-9)
    assert test.get_column("malignant").equals(parts.test.get_column("malignant"))


def test_fit_and_apply_many_rows_of_mixed_steps() -> None:
    """Scale and mix, not speed (bench/data.py measures speed): every row comes out."""
    rng = np.random.default_rng(0)
    n = 200_000
    columns: dict[str, Any] = {f"x{i}": rng.normal(i, 1 + i, n) for i in range(15)}
    columns |= {f"k{i}": rng.choice(list("abcdef"), n) for i in range(4)}
    columns["y"] = rng.integers(0, 2, n)
    data = pl.DataFrame(columns)
    steps = [
        {"impute": {"strategy": "median"}},
        {"clip": {"method": "iqr"}},
        {"scale": {"method": "standard"}},
        {"one_hot": {"columns": ["k0", "k1"], "max_categories": 4}},
        {"target_encode": {"columns": ["k2", "k3"]}},
        {"bin": {"columns": ["x1", "x2"], "bins": 10}},
        {"expression": {"name": "e", "expr": "x3 * x4 + x5"}},
        {"select": {"method": "variance"}},
    ]
    fitted, train = fit_transform(data, steps, target="y")
    out = fitted.apply(data).collect()
    assert out.height == n
    assert out.drop("y").columns == train.drop("y").columns
    assert out.select(pl.all().null_count()).sum_horizontal().item() == 0
