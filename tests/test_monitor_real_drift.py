"""Drift detection on real, time-ordered data (the bundled nycflights13 table) and on the
synthetic set of the issue, every figure checked against scipy computing it independently.

What 2013 shows: mild real drift between the first and last fifth of the year (KS about 0.034
on ``distance``, significant at this size, yet every normed distance well under 0.1, so the
default rule flags nothing), the delay rate moving with the seasons (31% in June-July against
16% in September-November: the delay columns drift), and a clear shift (one airport's flights
against all three) flagged as dataset drift.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy import stats
from scipy.spatial import distance

from meguri.data._reference import DriftReference
from meguri.data._sources import load, resolve
from meguri.monitor._drift import drift_report
from meguri.monitor._drift_tests import ks_statistic
from meguri.monitor._report import render_monitor_html
from meguri.spec import ColumnDriftSpec, DriftSpec
from meguri.store.metadata import MonitorWindow

NUMERIC = ("dep_hour", "dep_delay", "arr_delay", "distance", "air_time")
CATEGORICAL = ("carrier", "origin", "dest")
COLUMNS = NUMERIC + CATEGORICAL


@pytest.fixture(scope="module")
def flights() -> pl.DataFrame:
    return load(resolve("bundled://flights"))


@pytest.fixture(scope="module")
def fifths(flights: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    fifth = flights.height // 5
    return flights.head(fifth), flights.tail(fifth)


def _report(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: Sequence[str] = COLUMNS,
    spec: DriftSpec | None = None,
) -> dict[str, Any]:
    built = DriftReference.from_frame(reference, list(columns))
    result: dict[str, Any] = drift_report(
        built, current.select(columns), spec or DriftSpec()
    ).to_dict()
    return result


def _by_name(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["columns"]}


# -- independent computations (scipy, as Evidently does them) ---------------------------------


def _normed_wasserstein(reference: pl.Series, current: pl.Series) -> float:
    ref = reference.drop_nulls().to_numpy().astype(float)
    cur = current.drop_nulls().to_numpy().astype(float)
    return float(stats.wasserstein_distance(ref, cur) / np.std(ref))


def _counts(reference: pl.Series, current: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Counts of each value seen on either side, on the same (sorted) values."""
    values = pl.concat([reference, current]).drop_nulls().unique().sort().to_frame("v")
    counted = [
        values.join(s.value_counts().rename({s.name: "v"}), on="v", how="left")["count"]
        for s in (reference.drop_nulls(), current.drop_nulls())
    ]
    ref, cur = (c.fill_null(0).to_numpy().astype(float) for c in counted)
    return ref, cur


def _shares(reference: pl.Series, current: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    ref, cur = _counts(reference, current)
    return ref / ref.sum(), cur / cur.sum()


def _jensen_shannon(reference: pl.Series, current: pl.Series) -> float:
    return float(distance.jensenshannon(*_shares(reference, current)))


def _expected_statistic(kind: str, reference: pl.Series, current: pl.Series) -> float:
    if kind == "wasserstein":
        return _normed_wasserstein(reference, current)
    return _jensen_shannon(reference, current)


def _default_method(reference: pl.Series) -> str:
    numeric = reference.dtype.is_numeric() and reference.n_unique() > 5
    return "wasserstein" if numeric else "jensenshannon"


def _check_default_rule(
    report: Mapping[str, Any], ref: pl.DataFrame, cur: pl.DataFrame, tolerance: float = 1e-9
) -> None:
    """Every column's method, statistic and verdict as scipy computes them on the raw rows.
    Exact where the reference keeps every value count (the flights columns); continuous columns
    are read from the reference's quantile sketch, within 1e-3 of the exact distance."""
    for name, column in _by_name(report).items():
        method = _default_method(ref[name])
        expected = _expected_statistic(method, ref[name], cur[name])
        assert column["method"] == method, name
        assert column["statistic"] == pytest.approx(expected, abs=tolerance), name
        assert column["threshold"] == 0.1
        assert column["drifted"] == (expected >= 0.1), name


# -- real data: nycflights13 ------------------------------------------------------------------


def test_first_and_last_fifth_ks_on_distance_agrees_with_scipy(
    fifths: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    first, last = fifths
    expected = stats.ks_2samp(first["distance"].to_numpy(), last["distance"].to_numpy())
    assert 0.03 < expected.statistic < 0.04  # "KS about 0.03" (the issue)
    # Our D, from the stored reference (not the raw rows) against the window's values.
    reference = DriftReference.from_frame(first, ["distance"])
    levels, values = reference.column("distance").knots()
    current = np.sort(last["distance"].to_numpy().astype(float))
    assert ks_statistic(levels, values, current) == pytest.approx(expected.statistic, abs=1e-12)
    # The report, the KS test named in the spec: Evidently's drift score is the p-value.
    spec = DriftSpec(columns={"distance": ColumnDriftSpec(method="ks")})
    column = _by_name(_report(first, last, ["distance"], spec))["distance"]
    assert (column["method"], column["threshold"]) == ("ks", 0.05)
    assert column["p_value"] == pytest.approx(expected.pvalue, rel=1e-6)
    assert column["statistic"] == column["p_value"] and expected.pvalue < 1e-30
    assert column["drifted"]  # with 65k rows a side, a 0.034 gap is significant


def test_mild_real_drift_flags_no_column_under_the_default_rule(
    fifths: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    first, last = fifths
    report = _report(first, last)
    _check_default_rule(report, first, last)
    statistics = {c["name"]: c["statistic"] for c in report["columns"]}
    assert 0.06 < statistics["distance"] < 0.07 and 0.09 < statistics["dest"] < 0.1
    assert [c["name"] for c in report["columns"] if c["drifted"]] == []
    assert report["share"] == 0.0 and not report["dataset_drift"]
    assert (report["reference_rows"], report["current_rows"]) == (first.height, last.height)


def test_delay_rate_moves_with_the_seasons(flights: pl.DataFrame) -> None:
    summer = flights.filter(pl.col("month").is_in([6, 7]))
    autumn = flights.filter(pl.col("month").is_in([9, 10, 11]))
    assert summer["delayed"].mean() == pytest.approx(0.3114, abs=1e-4)
    assert autumn["delayed"].mean() == pytest.approx(0.1580, abs=1e-4)
    columns = [*COLUMNS, "delayed"]
    report = _report(summer, autumn, columns)
    _check_default_rule(report, summer, autumn)
    drifted = sorted(c["name"] for c in report["columns"] if c["drifted"])
    assert drifted == ["arr_delay", "delayed", "dep_delay"]
    assert report["share"] == pytest.approx(3 / 9) and not report["dataset_drift"]


def test_one_airport_against_all_three_is_dataset_drift(
    fifths: tuple[pl.DataFrame, pl.DataFrame], flights: pl.DataFrame
) -> None:
    first, _ = fifths
    jfk = flights.filter(pl.col("origin") == "JFK").tail(first.height // 3)
    report = _report(first, jfk)
    _check_default_rule(report, first, jfk)
    drifted = sorted(c["name"] for c in report["columns"] if c["drifted"])
    assert drifted == ["air_time", "carrier", "dep_hour", "dest", "distance", "origin"]
    assert report["share"] == pytest.approx(6 / 8) and report["dataset_drift"]


def test_reference_and_current_distributions_share_bins(
    fifths: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    first, last = fifths
    columns = _by_name(_report(first, last))
    distance_ = columns["distance"]
    edges = np.asarray(distance_["reference"]["edges"])
    assert distance_["current"]["edges"] == distance_["reference"]["edges"] and len(edges) == 21
    for side, frame in (("reference", first), ("current", last)):
        values = np.clip(frame["distance"].to_numpy(), edges[0], edges[-1])  # ends take the rest
        counts = np.histogram(values, bins=edges)[0]
        assert distance_[side]["shares"] == pytest.approx(counts / counts.sum(), abs=1e-12)
    origin = columns["origin"]
    assert origin["reference"]["values"] == origin["current"]["values"]
    origins = last["origin"].value_counts()
    share = dict(zip(origins["origin"], origins["count"] / last.height, strict=True))
    got = dict(zip(origin["current"]["values"], origin["current"]["shares"], strict=True))
    assert got == pytest.approx(share)


# -- small references: statistical tests, as Evidently at or below 1,000 rows ------------------


def test_small_reference_uses_ks_and_chi_square(
    fifths: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    first, last = fifths
    ref = first.sample(1_000, seed=3)
    cur = last.sample(800, seed=4)
    columns = _by_name(_report(ref, cur, ["distance", "origin"]))
    ks = stats.ks_2samp(ref["distance"].to_numpy(), cur["distance"].to_numpy())
    assert columns["distance"]["method"] == "ks"
    assert columns["distance"]["p_value"] == pytest.approx(ks.pvalue, rel=1e-6)
    assert columns["distance"]["drifted"] == (ks.pvalue < 0.05)
    ref_counts, cur_counts = _counts(ref["origin"], cur["origin"])
    chi = stats.chisquare(cur_counts, ref_counts * cur.height / ref.height)
    assert columns["origin"]["method"] == "chisquare"
    assert columns["origin"]["p_value"] == pytest.approx(chi.pvalue, rel=1e-6)


# -- the synthetic set of the issue -----------------------------------------------------------


def _synthetic(rows: int, seed: int, drift: bool) -> pl.DataFrame:
    """20 numeric and 5 categorical columns; with ``drift``, 5 numeric columns shift and 1
    categorical column's frequencies change."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for i in range(20):
        shift = 0.5 if drift and i < 5 else 0.0
        data[f"num_{i}"] = rng.normal(shift, 1.0 + 0.1 * i, rows)
    for j in range(5):
        p = [0.6, 0.3, 0.1] if drift and j == 0 else [0.4, 0.35, 0.25]
        data[f"cat_{j}"] = rng.choice(["a", "b", "c"], size=rows, p=p)
    return pl.DataFrame(data)


def test_synthetic_set_flags_exactly_the_injected_columns() -> None:
    reference = _synthetic(20_000, 1, drift=False)
    current = _synthetic(20_000, 2, drift=True)
    report = _report(reference, current, reference.columns)
    _check_default_rule(report, reference, current, tolerance=2e-3)
    drifted = sorted(c["name"] for c in report["columns"] if c["drifted"])
    assert drifted == ["cat_0", "num_0", "num_1", "num_2", "num_3", "num_4"]
    assert report["share"] == pytest.approx(6 / 25) and not report["dataset_drift"]
    calm = _report(reference, _synthetic(20_000, 3, drift=False), reference.columns)
    assert not any(c["drifted"] for c in calm["columns"])


# -- the monitoring report over 2013, month by month -------------------------------------------


def test_monthly_windows_of_2013_in_the_report(flights: pl.DataFrame) -> None:
    january = flights.filter(pl.col("month") == 1)
    reference = DriftReference.from_frame(january, [*COLUMNS, "delayed"])
    windows = []
    for key, rows in flights.filter(pl.col("month") > 1).group_by("month", maintain_order=True):
        report = drift_report(reference, rows, DriftSpec())
        times = rows["time_hour"].dt.epoch("s")
        windows.append(
            MonitorWindow(
                id=f"mw-{key[0]}",
                project_id="p-flights",
                environment="production",
                start=float(times.min()),  # type: ignore[arg-type]
                end=float(times.max()) + 3600.0,  # type: ignore[arg-type]
                rows=rows.height,
                model_versions={"delays@1": rows.height},
                figures=report.figures(),
                details={"drift": report.to_dict()},
                created_at=0.0,
            )
        )
    page = render_monitor_html(windows, [], project="flights", environment="production")
    specs = re.search(r'id="meguri-figures">(.*?)</script>', page)
    assert specs is not None
    figures = {f["key"]: f for f in json.loads(specs.group(1))}
    delays = next(t for t in figures["drift.columns"]["data"] if t["name"] == "dep_delay")
    expected = [
        _normed_wasserstein(january["dep_delay"], flights.filter(pl.col("month") == m)["dep_delay"])
        for m in range(2, 13)
    ]
    np.testing.assert_allclose(delays["y"], expected, rtol=1e-9)
    flags = figures["drift.flags"]["data"][0]
    drifted = {
        name: [m for m, flag in zip(range(2, 13), row, strict=True) if flag]
        for name, row in zip(flags["y"], flags["z"], strict=True)
    }
    for w in windows:  # the heatmap is the reports' own verdicts
        month = int(w.id.removeprefix("mw-"))
        for c in w.details["drift"]["columns"]:
            assert (month in drifted[c["name"]]) == c["drifted"]
    # Against January: February and March are alike; the delays drift from April on (summer
    # and December most: normed Wasserstein about 0.3 in June and July); no month reaches
    # dataset drift (at most 4 of 9 columns, in September).
    assert drifted["arr_delay"] == [4, 5, 6, 7, 9, 10, 11, 12]
    assert all(2 not in months and 3 not in months for months in drifted.values())
    assert drifted["origin"] == drifted["carrier"] == drifted["delayed"] == []
    share = figures["drift.share"]["data"][0]["y"]
    assert max(share) == pytest.approx(4 / 9) and share.index(max(share)) == 7  # September
    assert not any(w.figures["drift.dataset"] for w in windows)
    assert "distribution.dest" in figures
