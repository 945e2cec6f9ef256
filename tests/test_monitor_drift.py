"""Drift reports against scipy on the same rows: Evidently's default rule, overrides, PSI,
dataset share, prediction drift, the multivariate check, and the package's stored reference."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy import stats
from scipy.spatial import distance

from meguri.data import DriftReference
from meguri.errors import DataError, SpecError
from meguri.monitor._drift import DriftReport, drift_report
from meguri.spec import ColumnDriftSpec, DriftSpec, MultivariateSpec

Array = np.ndarray[Any, Any]


def _rows(g: np.random.Generator, n: int, shift: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "x": g.normal(shift, 1, n),
            "amount": g.lognormal(0.6 * shift, 1, n),
            "few": g.choice(4, n, p=[0.4, 0.3, 0.2, 0.1] if shift == 0 else [0.1, 0.2, 0.3, 0.4]),
            "age": g.integers(18, 90, n),
            "word": g.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1]),
            "flag": g.random(n) < 0.3 + 0.4 * shift,
        }
    )


@pytest.fixture(scope="module")
def large() -> tuple[pl.DataFrame, pl.DataFrame, DriftReport]:
    g = np.random.default_rng(7)
    ref, cur = _rows(g, 20_000, 0.0), _rows(g, 5_000, 0.5)
    reference = DriftReference.from_json(DriftReference.from_frame(ref).to_json())
    return ref, cur, drift_report(reference, cur, DriftSpec())


@pytest.fixture(scope="module")
def small() -> tuple[pl.DataFrame, pl.DataFrame, DriftReport]:
    g = np.random.default_rng(8)
    ref, cur = _rows(g, 700, 0.0), _rows(g, 3_000, 0.3)
    ref = ref.with_columns(pl.when(pl.int_range(700) < 30).then(None).otherwise("x").alias("x"))
    return ref, cur, drift_report(DriftReference.from_frame(ref), cur, DriftSpec())


def _values(frame: pl.DataFrame, name: str) -> Array:
    series = frame.get_column(name).drop_nulls()
    if series.dtype == pl.Boolean:
        return series.cast(pl.String).to_numpy()
    return series.to_numpy()


def _counts(ref: Array, cur: Array) -> tuple[Array, Array, list[Any]]:
    keys = sorted(set(ref.tolist()) | set(cur.tolist()))
    return (
        np.array([np.sum(ref == k) for k in keys], dtype=float),
        np.array([np.sum(cur == k) for k in keys], dtype=float),
        keys,
    )


def _column(report: DriftReport, name: str) -> Any:
    return next(c for c in report.columns if c.name == name)


def test_large_reference_uses_normed_wasserstein_and_jensen_shannon(large: Any) -> None:
    ref, cur, report = large
    methods = {c.name: c.method for c in report.columns}
    assert methods == {
        "x": "wasserstein",
        "amount": "wasserstein",
        "age": "wasserstein",
        "few": "jensenshannon",
        "word": "jensenshannon",
        "flag": "jensenshannon",
    }
    expected = {}
    for name in ("x", "amount", "age"):
        a, b = _values(ref, name), _values(cur, name)
        expected[name] = stats.wasserstein_distance(a, b) / max(np.std(a), 0.001)
        tolerance = 1e-9 if name == "age" else 1e-3  # value counts kept: exact; else sketched
        assert _column(report, name).statistic == pytest.approx(expected[name], abs=tolerance)
    for name in ("few", "word", "flag"):
        r, c, _ = _counts(_values(ref, name), _values(cur, name))
        expected[name] = distance.jensenshannon(r / r.sum(), c / c.sum())
        assert _column(report, name).statistic == pytest.approx(expected[name], rel=1e-12)
    assert report.drifted == ("x", "amount", "few", "flag")
    assert report.drifted == tuple(n for n in expected if expected[n] >= 0.1)
    assert all(c.threshold == 0.1 and c.p_value is None for c in report.columns)


def test_small_reference_uses_ks_chi_square_and_z(small: Any) -> None:
    ref, cur, report = small
    assert {c.name: c.method for c in report.columns} == {
        "x": "ks",
        "amount": "ks",
        "age": "ks",
        "few": "chisquare",
        "word": "chisquare",
        "flag": "z",
    }
    for name in ("x", "amount", "age"):
        expected = stats.ks_2samp(_values(ref, name), _values(cur, name)).pvalue
        assert _column(report, name).statistic == pytest.approx(expected, rel=1e-9)
    for name in ("few", "word"):
        r, c, _ = _counts(_values(ref, name), _values(cur, name))
        expected = stats.chisquare(c, r * c.sum() / r.sum()).pvalue  # as Evidently calls it
        assert _column(report, name).p_value == pytest.approx(expected, rel=1e-9)
    r, c, _ = _counts(_values(ref, "flag"), _values(cur, "flag"))
    # the pooled two-proportion z-test is the 2x2 chi-square test without correction
    expected = stats.chi2_contingency(np.array([r, c]), correction=False).pvalue
    assert _column(report, "flag").p_value == pytest.approx(expected, rel=1e-6)
    assert all(c.threshold == 0.05 for c in report.columns)
    for column in report.columns:
        assert column.drifted == (column.p_value < 0.05 or column.p_value == 0.0)


def test_the_regime_counts_present_reference_values() -> None:
    g = np.random.default_rng(1)
    cur = pl.DataFrame({"x": g.normal(0, 1, 2_000)})
    for present, method in ((1_000, "ks"), (1_001, "wasserstein")):
        values = np.concatenate([g.normal(0, 1, present), [np.nan] * 40, [np.inf]])
        reference = DriftReference.from_frame(pl.DataFrame({"x": values}))
        assert drift_report(reference, cur, DriftSpec()).columns[0].method == method


def test_distinct_values_of_both_sides_pick_the_method() -> None:
    g = np.random.default_rng(2)
    five = DriftReference.from_frame(pl.DataFrame({"k": g.integers(0, 5, 3_000)}))
    assert drift_report(five, pl.DataFrame({"k": [0, 1, 2, 3, 4]}), DriftSpec()).columns[
        0
    ].method == ("jensenshannon")
    sixth = pl.DataFrame({"k": [0, 1, 2, 3, 5]})
    assert drift_report(five, sixth, DriftSpec()).columns[0].method == "wasserstein"
    two = DriftReference.from_frame(pl.DataFrame({"k": g.integers(0, 2, 500)}))
    assert drift_report(two, pl.DataFrame({"k": [0, 1]}), DriftSpec()).columns[0].method == "z"
    three = pl.DataFrame({"k": [0, 1, 2]})
    assert drift_report(two, three, DriftSpec()).columns[0].method == "chisquare"


def _psi(r: Array, c: Array) -> float:
    r, c = r / r.sum(), c / c.sum()
    r, c = np.where(r == 0, 1e-4, r), np.where(c == 0, 1e-4, c)
    return float(np.sum((c - r) * np.log(c / r)))


def test_psi_is_reported_beside_every_column(large: Any) -> None:
    ref, cur, report = large
    a, b = _values(ref, "x"), _values(cur, "x")
    bins = np.concatenate([[-np.inf], np.quantile(a, np.arange(1, 10) / 10), [np.inf]])
    r = np.array([np.sum((a >= lo) & (a < hi)) for lo, hi in itertools.pairwise(bins)], dtype=float)
    c = np.array([np.sum((b >= lo) & (b < hi)) for lo, hi in itertools.pairwise(bins)], dtype=float)
    assert _column(report, "x").psi == pytest.approx(_psi(r, c), rel=1e-9)
    r, c, _ = _counts(_values(ref, "word"), _values(cur, "word"))
    assert _column(report, "word").psi == pytest.approx(_psi(r, c), rel=1e-9)
    assert all(col.psi is not None for col in report.columns)


def test_overrides_replace_method_and_threshold(large: Any) -> None:
    ref, cur, _ = large
    spec = DriftSpec(
        columns={
            "x": ColumnDriftSpec(method="psi", threshold=0.5),
            "age": ColumnDriftSpec(method="ks"),
            "word": ColumnDriftSpec(method="hellinger"),
            "few": ColumnDriftSpec(method="kl_div", threshold=0.9),
            "amount": ColumnDriftSpec(method="jensenshannon"),
        }
    )
    report = drift_report(DriftReference.from_frame(ref[:8_000]), cur, spec)
    x = _column(report, "x")
    assert (x.method, x.threshold, x.statistic) == ("psi", 0.5, x.psi)
    assert x.drifted == (x.statistic >= 0.5)
    # value counts of 8,000 rows kept: scipy's own (asymptotic) KS p-value
    expected = stats.ks_2samp(_values(ref[:8_000], "age"), _values(cur, "age")).pvalue
    assert _column(report, "age").statistic == pytest.approx(expected, rel=1e-9)
    r, c, _ = _counts(_values(ref[:8_000], "word"), _values(cur, "word"))
    hellinger = np.sqrt(1 - np.sum(np.sqrt(r / r.sum() * c / c.sum())))
    assert _column(report, "word").statistic == pytest.approx(hellinger, rel=1e-9)
    r, c, _ = _counts(_values(ref[:8_000], "few"), _values(cur, "few"))
    few = _column(report, "few")
    assert few.statistic == pytest.approx(stats.entropy(r / r.sum(), c / c.sum()), rel=1e-9)
    assert few.threshold == 0.9 and not few.drifted
    a, b = _values(ref[:8_000], "amount"), _values(cur, "amount")
    edges = np.histogram_bin_edges(np.concatenate([a, b]), bins="sturges")
    js = distance.jensenshannon(np.histogram(a, edges)[0], np.histogram(b, edges)[0])
    assert _column(report, "amount").statistic == pytest.approx(js, abs=2e-3)  # sketched side


def test_unusable_overrides_are_spec_errors(large: Any) -> None:
    ref, cur, _ = large
    reference = DriftReference.from_frame(ref.select("x", "word"))
    with pytest.raises(SpecError, match="'word' is categorical"):
        drift_report(reference, cur, DriftSpec(columns={"word": ColumnDriftSpec(method="ks")}))
    with pytest.raises(SpecError, match="nope"):
        drift_report(reference, cur, DriftSpec(columns={"nope": ColumnDriftSpec(method="z")}))
    with pytest.raises(SpecError, match="distinct reference values"):
        drift_report(reference, cur, DriftSpec(columns={"x": ColumnDriftSpec(method="z")}))


def test_dataset_drift_when_the_share_is_reached(large: Any) -> None:
    ref, cur, report = large
    assert report.share == pytest.approx(4 / 6) and report.dataset_drift
    reference = DriftReference.from_frame(ref)
    assert not drift_report(reference, cur, DriftSpec(share=0.7)).dataset_drift
    assert drift_report(reference, cur, DriftSpec(share=4 / 6)).dataset_drift


def test_distributions_share_the_reference_bins(large: Any) -> None:
    ref, cur, report = large
    x = _column(report, "x")
    a, b = _values(ref, "x"), _values(cur, "x")
    counts, edges = np.histogram(a, 20)
    assert x.reference.edges == x.current.edges == tuple(edges)
    assert np.allclose(x.reference.shares, counts / len(a))
    clipped = np.histogram(np.clip(b, edges[0], edges[-1]), edges)[0] / len(b)
    assert np.allclose(x.current.shares, clipped)
    word = _column(report, "word")
    assert set(word.reference.values) == {"a", "b", "c", "d"}
    assert sum(word.current.shares) == pytest.approx(1.0)


def test_many_categories_plot_the_top_values_and_other() -> None:
    g = np.random.default_rng(4)
    words = [f"w{i}" for i in g.integers(0, 40, 3_000)]
    reference = DriftReference.from_frame(pl.DataFrame({"w": words}))
    column = drift_report(reference, pl.DataFrame({"w": words[:500]}), DriftSpec()).columns[0]
    assert len(column.reference.values) == 20 and column.reference.values[-1] == "(other)"
    assert sum(column.reference.shares) == pytest.approx(1.0)


def test_prediction_drift_against_held_out_predictions() -> None:
    g = np.random.default_rng(5)
    frame = pl.DataFrame({"x": g.normal(0, 1, 3_000)})
    reference = DriftReference.from_frame(frame, prediction=g.beta(2, 5, 2_000))
    same = drift_report(reference, frame, DriftSpec(), predictions=g.beta(2, 5, 2_000))
    moved = drift_report(reference, frame, DriftSpec(), predictions=g.beta(5, 2, 2_000))
    assert same.prediction is not None and moved.prediction is not None
    assert same.prediction.method == "wasserstein" and not same.prediction.drifted
    assert moved.prediction.drifted and moved.figures()["drift.prediction"] > 1
    assert drift_report(reference, frame, DriftSpec()).prediction is None
    off = DriftSpec(prediction=False)
    assert drift_report(reference, frame, off, predictions=np.ones(5)).prediction is None


def test_multivariate_check_finds_a_correlation_only_shift() -> None:
    g = np.random.default_rng(6)
    ref = pl.DataFrame({"x": g.normal(0, 1, 6_000), "y": g.normal(0, 1, 6_000)})
    x = g.normal(0, 1, 3_000)
    moved = pl.DataFrame({"x": x, "y": 0.95 * x + np.sqrt(1 - 0.95**2) * g.normal(0, 1, 3_000)})
    steady = pl.DataFrame({"x": g.normal(0, 1, 3_000), "y": g.normal(0, 1, 3_000)})
    reference = DriftReference.from_frame(ref)
    spec = DriftSpec(multivariate=MultivariateSpec(threshold=0.55, sample_rows=2_000))
    report = drift_report(reference, moved, spec, reference_sample=ref.sample(5_000, seed=1))
    assert report.drifted == () and report.multivariate is not None
    assert report.multivariate.drifted and report.multivariate.roc_auc > 0.6  # type: ignore[operator]
    quiet = drift_report(reference, steady, spec, reference_sample=ref.sample(5_000, seed=1))
    assert quiet.multivariate is not None and not quiet.multivariate.drifted
    with pytest.raises(DataError, match="reference sample"):
        drift_report(reference, moved, spec)


def test_multivariate_check_encodes_categories() -> None:
    g = np.random.default_rng(9)
    ref = pl.DataFrame({"c": g.choice(["a", "b"], 2_000), "x": g.normal(0, 1, 2_000)})
    flipped = ref.with_columns(
        pl.when(pl.col("x") > 0).then(pl.lit("a")).otherwise(pl.lit("b")).alias("c")
    )
    spec = DriftSpec(multivariate=MultivariateSpec(sample_rows=1_000))
    report = drift_report(DriftReference.from_frame(ref), flipped, spec, reference_sample=ref)
    assert report.multivariate is not None and report.multivariate.drifted


def test_missing_and_mistyped_columns_are_named(large: Any) -> None:
    ref, cur, _ = large
    reference = DriftReference.from_frame(ref)
    with pytest.raises(DataError, match=r"\['age'\]"):
        drift_report(reference, cur.drop("age"), DriftSpec())
    text = cur.with_columns(pl.col("x").cast(pl.String))
    with pytest.raises(DataError, match="'x' is numeric in the reference"):
        drift_report(reference, text, DriftSpec())
    with pytest.raises(DataError, match="no rows"):
        drift_report(reference, cur.head(0), DriftSpec())


def test_missing_values_are_dropped_and_empty_columns_not_drifted(large: Any) -> None:
    ref, cur, _ = large
    reference = DriftReference.from_frame(ref)
    noisy = cur.with_columns(
        pl.when(pl.int_range(cur.height) % 7 == 0).then(np.inf).otherwise("x").alias("x")
    )
    kept = cur.filter(pl.int_range(cur.height) % 7 != 0)
    got = drift_report(reference, noisy, DriftSpec()).columns[0].statistic
    assert got == pytest.approx(drift_report(reference, kept, DriftSpec()).columns[0].statistic)
    empty = cur.with_columns(pl.lit(None, dtype=pl.Float64).alias("x"))
    column = drift_report(reference, empty, DriftSpec()).columns[0]
    assert column.statistic is None and not column.drifted


def test_report_layout_and_figures(large: Any) -> None:
    _, _, report = large
    body = report.to_dict()
    assert list(body) == [
        "method_rule",
        "reference_rows",
        "current_rows",
        "share",
        "dataset_drift",
        "drift_share_threshold",
        "columns",
        "prediction",
        "multivariate",
    ]
    assert body["method_rule"] == "evidently-default" and body["current_rows"] == 5_000
    column = body["columns"][0]
    assert set(column) == {
        "name",
        "kind",
        "method",
        "statistic",
        "threshold",
        "drifted",
        "psi",
        "p_value",
        "reference",
        "current",
    }
    assert set(column["reference"]) == {"edges", "shares"}
    assert set(body["columns"][4]["current"]) == {"values", "shares"}
    figures = report.figures()
    assert figures["drift.share"] == report.share and figures["drift.columns"] == 4.0
    assert figures["drift.dataset"] == 1.0 and "drift.column.x" in figures


def test_packages_store_the_reference_and_a_sample(tmp_path: Path) -> None:
    import meguri
    from meguri.registry._package import build_package
    from meguri.spec import parse_spec
    from meguri.testing.specs import quick_spec_text
    from meguri.train._train import train

    workspace = meguri.open_workspace(tmp_path / "ws", project="pkg")
    try:
        result = train(
            parse_spec(quick_spec_text("pkg", algorithms=("linear",))), workspace=workspace
        )
    finally:
        workspace.close()
    document = build_package(result, tmp_path / "package")
    assert {"baseline/reference.json", "baseline/reference_sample.parquet"} <= set(
        document["files"]
    )
    reference = DriftReference.from_json(
        (tmp_path / "package/baseline/reference.json").read_bytes()
    )
    train_rows = result.prepared.raw["train"]
    inputs = [c["name"] for c in document["signature"]["inputs"]]
    assert reference.names == tuple(inputs) and reference.rows == train_rows.height
    assert reference == DriftReference.from_frame(
        train_rows, inputs, prediction=reference_predictions(result)
    )
    sample = pl.read_parquet(tmp_path / "package/baseline/reference_sample.parquet")
    assert sample.columns == inputs and sample.height == min(5_000, train_rows.height)
    held_out = result.prepared.raw["test"]
    report = drift_report(reference, held_out, DriftSpec(), reference_sample=sample)
    assert report.reference_rows == train_rows.height and not report.dataset_drift


def reference_predictions(result: Any) -> Array:
    """The model's predictions on the held-out rows the package verified itself on."""
    raw = result.prepared.raw
    part = "validation" if "validation" in raw and raw["validation"].height else "test"
    transform = result.prepared.transform
    x = transform.apply(raw[part]).collect().select(list(transform.output_schema)).to_numpy()
    return np.asarray(result.model.predict(x))
