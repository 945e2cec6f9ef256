"""The bundled UCI Adult table: the numbers published for the raw files, and the cleaning."""

from __future__ import annotations

import polars as pl
import pytest

from meguri import datasets

COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income_over_50k",
    "source_split",
]
TEXT = [
    "workclass",
    "education",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native_country",
    "source_split",
]


@pytest.fixture(scope="module")
def adult() -> pl.DataFrame:
    frame = pl.from_arrow(datasets.load("adult"))
    assert isinstance(frame, pl.DataFrame)
    return frame


def test_entry_names_source_and_licence() -> None:
    entry = datasets.bundled["adult"]
    assert (entry.target, entry.task) == ("income_over_50k", "binary_classification")
    assert entry.licence == "CC BY 4.0" and "10.24432/C5XW20" in entry.citation
    assert datasets.path("adult").name == "adult.parquet"


def test_columns_and_types(adult: pl.DataFrame) -> None:
    assert adult.columns == COLUMNS
    assert all(adult.schema[c] == pl.String for c in TEXT)
    assert adult.schema["income_over_50k"] == pl.Int8
    numeric = [c for c in COLUMNS if c not in TEXT and c != "income_over_50k"]
    assert all(adult.schema[c] == pl.Int32 for c in numeric)


def test_rows_and_target_rate_per_file(adult: pl.DataFrame) -> None:
    counts = adult.group_by("source_split").agg(
        pl.len().alias("rows"), pl.col("income_over_50k").sum().alias("positive")
    )
    got = {r["source_split"]: (r["rows"], r["positive"]) for r in counts.iter_rows(named=True)}
    # adult.names: 32,561 train and 16,281 test instances; 24.08% / 23.62% above 50K.
    assert got == {"train": (32_561, 7_841), "test": (16_281, 3_846)}
    assert set(adult["income_over_50k"].unique()) == {0, 1}


def test_nulls_only_where_the_raw_files_had_question_marks(adult: pl.DataFrame) -> None:
    nulls = {c: n for c, n in adult.null_count().row(0, named=True).items() if n}
    assert nulls == {"workclass": 2_799, "occupation": 2_809, "native_country": 857}
    train = adult.filter(pl.col("source_split") == "train").null_count()
    assert (train["workclass"][0], train["occupation"][0], train["native_country"][0]) == (
        1_836,
        1_843,
        583,
    )
    # A missing workclass always comes with a missing occupation (the survey skipped both).
    assert adult.filter(
        pl.col("workclass").is_null() & pl.col("occupation").is_not_null()
    ).is_empty()


def test_text_is_clean(adult: pl.DataFrame) -> None:
    text = adult.select(TEXT)
    assert not text.select(pl.any_horizontal(pl.all().str.contains(r"^\s|\s$|^\?$")).any()).item()
    assert set(adult["sex"].unique()) == {"Female", "Male"}
    assert adult["education_num"].min() == 1 and adult["education_num"].max() == 16
