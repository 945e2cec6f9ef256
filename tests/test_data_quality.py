"""Quality checks with planted violations at known rows, checked against pandas/scikit-learn."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from meguri.data._profile import profile
from meguri.data._quality import QualityReport, QualityResult, run_checks
from meguri.datasets import load
from meguri.errors import DataError, DataQualityError
from meguri.spec import QualitySpec

N = 200


def _spec(*checks: dict[str, object], infer: bool = False, **extra: object) -> QualitySpec:
    return QualitySpec.model_validate({"checks": list(checks), "infer": infer, **extra})


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    rng = np.random.default_rng(3)
    age = rng.integers(18, 90, N).astype(float)
    age[[5, 77]] = np.nan  # missing
    age[[12, 150]] = [130.0, -4.0]  # out of range
    plan = rng.choice(["basic", "pro"], N).astype(object)
    plan[[9, 99, 199]] = ["gold", "gold", None]
    ids = np.arange(N)
    ids[[40, 41]] = ids[30]  # three rows share id 30
    zips = [f"{rng.integers(100, 999)}-{rng.integers(1000, 9999)}" for _ in range(N)]
    zips[60] = "12345"
    return pl.DataFrame(
        {"id": ids, "age": age, "plan": list(plan), "zip": zips},
        schema_overrides={"plan": pl.String},
    ).with_columns(pl.when(pl.int_range(N) == 5).then(None).otherwise(pl.col("age")).alias("age"))


def _only(report: QualityReport) -> QualityResult:
    assert len(report.results) == 1
    return report.results[0]


@pytest.mark.parametrize(
    ("check", "rows"),
    [
        ({"check": "not_null", "column": "age"}, [5, 77]),
        ({"check": "range", "column": "age", "min": 0, "max": 120}, [12, 150]),
        ({"check": "range", "column": "age", "max": 129.9}, [12]),
        ({"check": "allowed_values", "column": "plan", "values": ["basic", "pro"]}, [9, 99]),
        ({"check": "unique", "columns": ["id"]}, [30, 40, 41]),
        ({"check": "regex", "column": "zip", "pattern": r"\d{3}-\d{4}"}, [60]),
        (
            {
                "check": "sql",
                "query": "SELECT _row FROM data WHERE age BETWEEN 101 AND 1e9 OR age < 0",
            },
            [12, 150],
        ),
    ],
)
def test_planted_violations_are_found_at_their_rows(
    frame: pl.DataFrame, check: dict[str, object], rows: list[int]
) -> None:
    result = _only(run_checks(frame, _spec(check)))
    assert not result.passed
    assert (result.failing_rows, list(result.examples)) == (len(rows), rows)
    assert all(str(r) in result.message for r in rows)


def test_counts_match_pandas(frame: pl.DataFrame) -> None:
    pdf = frame.to_pandas()
    spec = _spec(
        {"check": "not_null", "column": "age"},
        {"check": "range", "column": "age", "min": 20, "max": 60},
        {"check": "unique", "columns": ["id", "plan"]},
        examples=1000,
    )
    nulls, in_range, unique = run_checks(frame, spec).results
    assert nulls.failing_rows == pdf["age"].isna().sum()
    outside = pdf.index[(pdf["age"] < 20) | (pdf["age"] > 60)].tolist()
    assert list(in_range.examples) == outside
    dup = pdf.index[pdf.duplicated(["id", "plan"], keep=False)].tolist()
    assert list(unique.examples) == dup


def test_passing_checks_and_example_limit(frame: pl.DataFrame) -> None:
    ok = _only(run_checks(frame, _spec({"check": "not_null", "column": "id"})))
    assert ok.passed and ok.failing_rows == 0 and ok.examples == ()
    spec = _spec({"check": "range", "column": "age", "min": 50}, examples=3)
    result = _only(run_checks(frame, spec))
    assert len(result.examples) == 3 and result.failing_rows > 3 and "…" in result.message


def test_row_count_freshness_and_missing_columns(frame: pl.DataFrame) -> None:
    days = pl.DataFrame({"day": [date(2024, 3, 1), date(2024, 3, 9)]})
    now = datetime(2024, 3, 10, tzinfo=UTC)
    fresh, stale = run_checks(
        days,
        _spec(
            {"check": "freshness", "column": "day", "max_age": "2d"},
            {"check": "freshness", "column": "day", "max_age": "12h"},
        ),
        now=now,
    ).results
    assert fresh.passed and not stale.passed and "older than 12h" in stale.message
    low, high, missing, typed = run_checks(
        frame,
        _spec(
            {"check": "row_count", "min": 1000},
            {"check": "row_count", "max": N},
            {"check": "not_null", "column": "nope"},
            {"check": "range", "column": "plan", "min": 1},
        ),
    ).results
    assert not low.passed and high.passed and f"{N} rows" in low.message
    assert not missing.passed and "'nope' is not in the data" in missing.message
    assert not typed.passed and "'plan' is String" in typed.message


def test_a_failing_query_is_a_failed_check(frame: pl.DataFrame) -> None:
    result = _only(run_checks(frame, _spec({"check": "sql", "query": "SELECT nope FROM data"})))
    assert not result.passed and "fix the SQL" in result.message


def test_report_errors_json_and_raise(frame: pl.DataFrame) -> None:
    spec = _spec(
        {"check": "not_null", "column": "age"},
        {"check": "regex", "column": "zip", "pattern": r"\d{3}-\d{4}", "severity": "warning"},
    )
    report = run_checks(frame, spec)
    assert [r.check for r in report.errors] == ["not_null"]
    assert [r.check for r in report.warnings] == ["regex"]
    assert QualityReport.from_json(report.to_json()) == report
    with pytest.raises(DataQualityError, match=re.escape("not_null(age): 2 rows (rows 5, 77)")):
        report.raise_for_errors()
    with pytest.raises(DataError, match="run the checks again"):
        QualityReport.from_json(b"{}")


# -- inferred checks ---------------------------------------------------------------------------


def _inferred(frame: pl.DataFrame, check: str, **kwargs: object) -> list[QualityResult]:
    report = run_checks(frame, QualitySpec(), **kwargs)  # type: ignore[arg-type]
    return [r for r in report.results if r.check == check]


def test_breast_cancer_is_clean_and_single_feature_aucs_match_sklearn() -> None:
    data = pl.from_arrow(load("breast_cancer"))
    assert isinstance(data, pl.DataFrame)
    report = run_checks(data, QualitySpec(), target="malignant", profile=profile(data))
    assert report.passed and not report.warnings
    from meguri.data._quality_infer import _aucs

    y = data["malignant"].to_numpy()
    aucs = _aucs(data, "malignant", [c for c in data.columns if c != "malignant"], 0.0)
    for name, (_, value) in aucs.items():
        expected = roc_auc_score(y, data[name].to_numpy())
        assert value == pytest.approx(max(expected, 1 - expected), abs=1e-12)


def test_leakage_suspects() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    noisy = y + rng.normal(0, 2, 300)
    frame = pl.DataFrame(
        {
            "y": y,
            "leak": -y * 5.0 + rng.normal(0, 0.01, 300),
            "label": np.where(y == 1, "bad", "good"),
            "noisy": noisy,
            "region": rng.choice(["n", "s"], 300),
        }
    )
    found = {r.columns[0]: r for r in _inferred(frame, "leakage", target="y")}
    assert set(found) == {"leak", "label"}
    assert found["leak"].severity == "error" and "ROC AUC 1.0000" in found["leak"].message
    regression = pl.DataFrame({"t": noisy, "twice": noisy * 2 + 1, "y": y.astype(float)})
    found = {r.columns[0] for r in _inferred(regression, "leakage", target="t")}
    assert found == {"twice"}


def test_constant_duplicates_and_type_drift() -> None:
    frame = pl.DataFrame({"a": [1, 2, 1, 3, 1], "b": ["x", "y", "x", "z", "x"], "k": [7] * 5})
    constant = _inferred(frame, "constant")
    assert [r.columns for r in constant] == [("k",)]
    (dups,) = _inferred(frame, "duplicate_rows")
    assert (dups.failing_rows, dups.examples, dups.severity) == (2, (2, 4), "warning")
    drift = _inferred(
        frame, "type_drift", previous_schema={"a": "Float64", "c": pl.String, "b": "String"}
    )
    messages = {r.columns[0]: (r.severity, r.message) for r in drift}
    assert messages["a"][0] == "error" and "was Float64 and is now Int64" in messages["a"][1]
    assert messages["c"][0] == "error" and "is gone" in messages["c"][1]
    assert messages["k"][0] == "warning" and "is new" in messages["k"][1]
    assert "b" not in messages


def test_pii_by_values_and_by_name() -> None:
    frame = pl.DataFrame(
        {
            "contact": ["ann@example.com", "bo@mail.org", None, "x"],
            "card": ["4111 1111 1111 1111", "5500-0000-0000-0004", "4111111111111112", ""],
            "tel": ["+81 3-1234-5678", "(03) 1234 5678", "090-1234-5678", "n/a"],
            "home_address": ["1 Main St"] * 4,
            "code": ["2024-01-05", "2024-02-05", "2024-03-05", "2024-04-05"],
        }
    )
    found = {r.columns[0]: r for r in _inferred(frame, "pii")}
    assert set(found) == {"contact", "card", "tel", "home_address"}
    assert found["contact"].examples == (0, 1) and "email addresses" in found["contact"].message
    assert found["card"].examples == (0, 1) and "card numbers" in found["card"].message
    assert found["tel"].examples == (0, 1, 2)
    assert "named like personal data" in found["home_address"].message


def test_inferred_checks_pass_quietly_and_target_must_exist(frame: pl.DataFrame) -> None:
    clean = pl.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["p", "q", "r"]})
    report = run_checks(clean, QualitySpec())
    assert report.passed and all(r.passed for r in report.results)
    assert {r.check for r in report.results} == {"constant", "duplicate_rows", "pii"}
    with pytest.raises(DataError, match="'nope' is not in the data"):
        run_checks(frame, QualitySpec(), target="nope")
