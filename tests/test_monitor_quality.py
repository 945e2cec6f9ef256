"""The data-quality figures of a monitor window (``quality_figures``) on small hand-built frames.

A training table is profiled as packaging profiles it (the profile goes through its JSON, as
``baseline/profile.json`` does), and a current frame written by hand is measured against it.
Every figure is compared with a count done here in plain Python over the same lists, from the
training values themselves rather than from the profile: missing values, values out of the
training range, text and yes/no values the training rows never held, and the shares of
requests refused for a wrong type or a wrong shape.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import pytest

from meguri.data import DatasetProfile, profile
from meguri.monitor._quality import QualityBaseline, quality_figures

TRAINING: dict[str, list[Any]] = {
    "size": [0.0, 1.5, 2.0, 3.0, None, 4.5, 5.0, 6.0, 7.5, 8.0, 9.0, 10.0],
    "colour": ["red", "green", "blue", "red", "green", None, "blue", "red", "red", "green",
               "blue", "red"],
    "city": ["Osaka", "Kyoto", "Nara", "Kobe", "Sendai", "Sapporo", "Fukuoka", "Nagoya",
             "Hiroshima", "Kanazawa", "Okayama", "Matsue"],
    "member": [True, False, True, True, None, False, True, False, True, True, False, True],
}  # fmt: skip
"""Twelve rows: a number with a null, three colours, twelve cities (more than the profile's
ten top values: not every category is known), a yes/no column with a null."""

CURRENT: dict[str, list[Any]] = {
    "size": [5.0, -1.0, 11.0, None, math.nan, 10.0, 0.0, 20.0],
    "colour": ["red", "purple", None, "blue", "teal", "purple", "green", "Red"],
    "city": ["Osaka", "Tokyo", "Tokyo", None, "Kyoto", "Naha", "Nara", "Kobe"],
    "member": [True, False, None, True, True, False, False, True],
}
"""Eight rows: beyond both ends of the range, a null and a NaN; colours never seen (one only
by case); cities never seen, which are not counted; every yes/no value seen in training."""


def _baseline() -> QualityBaseline:
    stored = profile(pl.DataFrame(TRAINING)).to_json()
    return QualityBaseline.from_profile(DatasetProfile.from_json(stored), list(TRAINING))


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _measured() -> tuple[dict[str, float | None], dict[str, Any]]:
    current = pl.DataFrame(CURRENT, schema={"size": pl.Float64, "colour": pl.String,
                                            "city": pl.String, "member": pl.Boolean})  # fmt: skip
    return quality_figures(current, _baseline())


def test_missing_and_out_of_range_against_the_training_rows() -> None:
    figures, detail = _measured()
    rows = len(CURRENT["size"])
    missing = {name: sum(not _present(v) for v in values) for name, values in CURRENT.items()}
    assert figures["quality.missing_rate"] == pytest.approx(
        sum(missing.values()) / (rows * len(CURRENT))
    )
    for name, count in missing.items():
        column = detail["columns"][name]
        assert column["missing_rate"] == pytest.approx(count / rows), name
        trained = TRAINING[name]
        assert column["baseline_missing_rate"] == pytest.approx(
            sum(v is None for v in trained) / len(trained)
        )
    low = min(v for v in TRAINING["size"] if v is not None)
    high = max(v for v in TRAINING["size"] if v is not None)
    beyond = sum(_present(v) and not low <= v <= high for v in CURRENT["size"])
    assert beyond == 3  # -1, 11 and 20; the range's own ends (0, 10) are inside
    assert figures["quality.out_of_range_rate"] == pytest.approx(beyond / rows)  # one column
    assert detail["columns"]["size"]["out_of_range_rate"] == pytest.approx(beyond / rows)
    assert (detail["columns"]["size"]["min"], detail["columns"]["size"]["max"]) == (low, high)


def test_unseen_categories_count_only_columns_whose_every_category_is_known() -> None:
    figures, detail = _measured()
    rows = len(CURRENT["colour"])
    known_colours = {v for v in TRAINING["colour"] if v is not None}
    new_colours = [v for v in CURRENT["colour"] if v is not None and v not in known_colours]
    assert len(new_colours) == 4  # purple twice, teal, and Red (text compares exactly)
    colour = detail["columns"]["colour"]
    assert colour["unseen_category_rate"] == pytest.approx(len(new_colours) / rows)
    assert colour["unseen_examples"] == sorted(set(new_colours))
    # the yes/no column: both values were seen in training, so none is new
    known_members = {v for v in TRAINING["member"] if v is not None}
    new_members = [v for v in CURRENT["member"] if v is not None and v not in known_members]
    assert new_members == []
    assert detail["columns"]["member"]["unseen_category_rate"] == 0.0
    # twelve cities do not fit the profile's ten top values: unknown, not guessed
    assert len(set(TRAINING["city"])) > 10
    assert "unseen_category_rate" not in detail["columns"]["city"]
    checked = 2  # colour and member
    assert figures["quality.unseen_category_rate"] == pytest.approx(
        (len(new_colours) + len(new_members)) / (rows * checked)
    )


def test_a_yes_no_value_never_seen_in_training_is_unseen() -> None:
    trained = pl.DataFrame({"member": [True, True, None, True]})
    baseline = QualityBaseline.from_profile(
        DatasetProfile.from_json(profile(trained).to_json()), ["member"]
    )
    current = [True, False, False, None, True]
    figures, detail = quality_figures(pl.DataFrame({"member": current}), baseline)
    unseen = sum(v is False for v in current)
    assert figures["quality.unseen_category_rate"] == pytest.approx(unseen / len(current))
    assert detail["columns"]["member"]["unseen_examples"] == ["false"]


@pytest.mark.parametrize(
    ("requests", "errors", "type_errors", "schema_errors"),
    [
        (
            40.0,
            {
                "wrong_type": 3.0,
                "not_finite": 1.0,
                "missing_column": 2.0,
                "wrong_width": 1.0,
                "ragged_rows": 1.0,
                "null_value": 5.0,
                "too_many_rows": 2.0,
                "model_error": 4.0,
            },
            3 + 1,
            2 + 1 + 1,
        ),
        (25.0, {"extra_column": 1.0, "duplicate_column": 2.0, "invalid_columns": 1.0}, 0, 4),
        (10.0, {"wrong_shape": 1.0, "ragged_columns": 2.0, "wrong_type": 5.0}, 5, 3),
        (12.0, {}, 0, 0),
    ],
)
def test_type_and_schema_errors_are_shares_of_every_request(
    requests: float, errors: dict[str, float], type_errors: int, schema_errors: int
) -> None:
    """Type errors: a value of the wrong type or a non-finite number; schema errors: a request
    of the wrong shape. Refusals for other reasons (a null where none is allowed, a request
    over the size limits, a failing model) are neither."""
    figures, _ = quality_figures(
        pl.DataFrame(CURRENT).select("size"), _baseline(), requests=requests, errors=errors
    )
    assert figures["quality.type_error_rate"] == pytest.approx(type_errors / requests)
    assert figures["quality.schema_error_rate"] == pytest.approx(schema_errors / requests)


def test_no_rows_or_no_requests_give_no_figure_rather_than_zero() -> None:
    empty = pl.DataFrame(CURRENT).clear()
    figures, detail = quality_figures(empty, _baseline(), requests=None, errors={"wrong_type": 1})
    assert figures == dict.fromkeys(
        ("quality.missing_rate", "quality.out_of_range_rate", "quality.unseen_category_rate",
         "quality.type_error_rate", "quality.schema_error_rate"),
    )  # fmt: skip
    assert detail["rows"] == 0
    assert all(c["missing_rate"] is None for c in detail["columns"].values())
