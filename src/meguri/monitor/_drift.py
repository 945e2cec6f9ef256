"""Drift of a monitoring window against the model's stored reference, by Evidently's rule.

::

    import polars as pl
    from meguri.data import DriftReference
    from meguri.monitor._drift import drift_report
    from meguri.spec import DriftSpec

    reference = DriftReference.from_json((package / "baseline/reference.json").read_bytes())
    sample = pl.read_parquet(package / "baseline/reference_sample.parquet")
    report = drift_report(reference, window, DriftSpec(), predictions=window["prediction"]
                          .to_numpy(), reference_sample=sample)
    report.share, report.dataset_drift, [c.name for c in report.columns if c.drifted]
    report.to_dict()        # MonitorWindow.details["drift"]
    report.figures()        # the window's drift.* figures

The reference side is only the stored :class:`~meguri.data.DriftReference` (no training rows
at check time); the window's columns are read once, each sorted once (numbers) or counted in
Polars (categories).

**The default rule is Evidently 0.7's** ``DataDriftPreset`` (read in evidently 0.7.23:
``legacy/calculations/stattests/registry.py::_get_default_stattest``,
``legacy/calculations/data_drift.py::get_one_column_drift``/``get_dataset_drift``,
``legacy/calculations/stattests/{wasserstein_distance_norm,jensenshannon,ks_stattest,
chisquare_stattest,z_stattest,utils}.py``). What we match, column by column:

- nulls, NaN and infinities are dropped on both sides first; the *reference size* that picks
  the regime is the reference's count of present values in that column;
- ``n`` is the number of distinct present values of reference and current together
  (``pd.concat([ref, cur]).nunique()``);
- reference size ≤ 1,000: numeric columns with ``n > 5`` get the two-sample KS test
  (``scipy.stats.ks_2samp``), drift when ``p <= 0.05``; other numeric and all categorical
  columns get chi-square when ``n > 2``, else the z-test, drift when ``p < 0.05``;
- reference size > 1,000: numeric columns with ``n > 5`` get the Wasserstein distance
  divided by ``max(np.std(reference), 0.001)`` (``ddof=0``), drift when ``>= 0.1``; other
  numeric and all categorical columns get the Jensen-Shannon distance (scipy, natural log)
  of the shares of each value of either side, drift when ``>= 0.1``;
- chi-square: the current counts against the reference counts scaled by
  ``n_current / n_reference`` over every value of either side (``scipy.stats.chisquare``);
  z-test: share of values other than the smallest value, pooled two-proportion z,
  ``p = 2 (1 - Phi(|z|))``, 1 when both sides hold the same single value;
- the reported ``statistic`` is Evidently's ``drift_score``: the p-value for the tests, the
  distance otherwise; the thresholds are ``DriftSpec.p_value`` (tests) and
  ``DriftSpec.threshold`` (distances), Evidently's 0.05 and 0.1 by default;
- dataset drift when the share of drifted columns is ``>= DriftSpec.share`` (0.5).

Overrides (``DriftSpec.columns``) use Evidently's definitions too, with two exceptions noted:
``ks`` in the large regime (statistic from the reference distribution, scipy's asymptotic
p-value; exact, through scipy, where the reference value counts hold at most 10,000 rows),
``kl_div``/``jensenshannon``/``hellinger`` on numeric columns with more than 20 distinct
reference values binned like Evidently (``"sturges"`` bins over both samples' range; Evidently
bins the distinct values for ``hellinger``), ``psi`` is the standard PSI on the reference
deciles reported beside every column (Evidently's ``psi`` bins like ``kl_div``).

Differences from Evidently: column kinds come from the dtype, as an explicit Evidently
``DataDefinition`` gives them (Evidently's own inference calls integer columns with at most
10 distinct values categorical, which changes the method only for 6 to 10 values); reference
numeric columns with more than 1,000 distinct and 2,000 present values are read through the
quantile sketch (normed Wasserstein within 1e-3 of the exact value, typically 1e-5, see
:mod:`meguri.data._reference`); a
categorical reference with more than 1,000 values compares its 1,000 most frequent and one
"other" bucket; a column with no present values on a side (Evidently raises) is reported with
``statistic`` ``None`` and not drifted.

The multivariate check (``DriftSpec.multivariate``) trains a gradient-boosted domain
classifier (scikit-learn's ``HistGradientBoostingClassifier``) to tell a uniform sample of the
training rows (``baseline/reference_sample.parquet``) from one of the window; the 3-fold
cross-validated ROC AUC above the threshold means the joint distribution moved, which catches
shifts of correlations that no per-column test sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from meguri.data._reference import (
    SMALL_REFERENCE,
    ColumnReference,
    DriftReference,
    Kind,
    bin_counts,
    drift_kind,
    present_numbers,
    psi_counts,
    text_counts,
)
from meguri.errors import DataError, SpecError
from meguri.monitor import _drift_tests as t
from meguri.spec import ColumnDriftSpec, DriftSpec, MultivariateSpec

__all__ = ["ColumnDrift", "Distribution", "DriftReport", "MultivariateDrift", "drift_report"]

Array = np.ndarray[Any, Any]
TESTS = frozenset({"ks", "chisquare", "z"})
"""Methods whose statistic is a p-value (drift below the threshold)."""
OTHER = "(other)"
PLOT_VALUES = 20
_FEW_VALUES = 5  # Evidently: more distinct values than this make a numeric column continuous
_BINNED_VALUES = 20  # Evidently's get_binned_data: above this, numeric columns get bins
_EXACT_KS_ROWS = 10_000  # scipy ks_2samp is exact up to this many rows a side


@dataclass(frozen=True, slots=True)
class Distribution:
    """Shares of present values on shared bins: ``edges`` (numeric) or ``values``."""

    shares: tuple[float, ...]
    edges: tuple[float, ...] | None = None
    values: tuple[str | float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.edges is not None:
            return {"edges": list(self.edges), "shares": list(self.shares)}
        return {"values": list(self.values or ()), "shares": list(self.shares)}


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """One column's verdict. ``statistic`` is Evidently's drift score (the p-value of a test,
    else the distance; ``None`` when a side has no present values), ``psi`` the decile PSI
    reported beside it, ``reference``/``current`` the two distributions for plots."""

    name: str
    kind: Kind
    method: str
    statistic: float | None
    threshold: float
    drifted: bool
    psi: float | None
    p_value: float | None
    reference: Distribution
    current: Distribution

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "method": self.method,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "psi": self.psi,
            "p_value": self.p_value,
            "reference": self.reference.to_dict(),
            "current": self.current.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class MultivariateDrift:
    """The domain classifier's verdict: drifted when its ROC AUC exceeds ``threshold``."""

    roc_auc: float | None
    """Cross-validated ROC AUC; ``None`` when a side has fewer than 10 rows."""
    threshold: float
    drifted: bool
    method: str = "domain_classifier"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "roc_auc": self.roc_auc, "drifted": self.drifted}


@dataclass(frozen=True, slots=True)
class DriftReport:
    """A window's drift: per column, of the predictions, and (optionally) of the joint
    distribution; ``dataset_drift`` when the ``share`` of drifted columns reaches the spec's."""

    reference_rows: int
    current_rows: int
    share: float
    dataset_drift: bool
    drift_share_threshold: float
    columns: tuple[ColumnDrift, ...]
    prediction: ColumnDrift | None = None
    multivariate: MultivariateDrift | None = None

    @property
    def drifted(self) -> tuple[str, ...]:
        """Names of the drifted columns."""
        return tuple(c.name for c in self.columns if c.drifted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method_rule": "evidently-default",
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "share": self.share,
            "dataset_drift": self.dataset_drift,
            "drift_share_threshold": self.drift_share_threshold,
            "columns": [c.to_dict() for c in self.columns],
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "multivariate": None if self.multivariate is None else self.multivariate.to_dict(),
        }

    def figures(self) -> dict[str, float | None]:
        """The window figures ``drift.*`` (see the monitor window contract)."""
        out: dict[str, float | None] = {
            "drift.share": self.share,
            "drift.dataset": 1.0 if self.dataset_drift else 0.0,
            "drift.columns": float(len(self.drifted)),
        }
        out.update({f"drift.column.{c.name}": c.statistic for c in self.columns})
        if self.prediction is not None:
            out["drift.prediction"] = self.prediction.statistic
        if self.multivariate is not None:
            out["drift.multivariate"] = self.multivariate.roc_auc
        return out


def drift_report(
    reference: DriftReference,
    current: pl.DataFrame | pl.LazyFrame,
    settings: DriftSpec,
    *,
    predictions: Array | None = None,
    reference_sample: pl.DataFrame | None = None,
) -> DriftReport:
    """Compare the window ``current`` with ``reference`` column by column (the rule in the
    module docstring), the model's ``predictions`` with its reference predictions, and, when
    ``settings.multivariate`` is on, the joint distribution (``reference_sample`` needed)."""
    data = _window(reference, current)
    _check_overrides(reference, settings)
    columns = tuple(
        _column_drift(ref, data.get_column(ref.name), settings) for ref in reference.columns
    )
    drifted = sum(c.drifted for c in columns)
    share = drifted / len(columns) if columns else 0.0
    prediction = None
    if predictions is not None and reference.prediction is not None and settings.prediction:
        series = pl.Series("prediction", np.asarray(predictions))
        prediction = _column_drift(reference.prediction, series, settings)
    multivariate = None
    if settings.multivariate is not None:
        multivariate = _multivariate(reference, data, reference_sample, settings.multivariate)
    return DriftReport(
        reference_rows=reference.rows,
        current_rows=data.height,
        share=share,
        dataset_drift=bool(columns) and share >= settings.share,
        drift_share_threshold=settings.share,
        columns=columns,
        prediction=prediction,
        multivariate=multivariate,
    )


def _window(reference: DriftReference, current: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    lazy = current.lazy()
    names = lazy.collect_schema().names()
    missing = [n for n in reference.names if n not in names]
    if missing:
        raise DataError(
            f"the current data lacks the reference columns {missing} (it has: "
            f"{', '.join(names)}); capture every model input, or rebuild the reference"
        )
    data = lazy.select(reference.names).collect()
    if data.height == 0:
        raise DataError("the current data has no rows; choose a window with captured requests")
    return data


def _check_overrides(reference: DriftReference, settings: DriftSpec) -> None:
    known = set(reference.names) | ({"prediction"} if reference.prediction else set())
    unknown = sorted(set(settings.columns) - known)
    if unknown:
        raise SpecError(
            f"monitor.drift.columns names {unknown}, which the reference does not monitor "
            f"(columns: {', '.join(sorted(known))}); fix the names in the spec"
        )


# -- one column --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Current:
    """The window's present values of one column: sorted numbers, or (categorical columns)
    the counts of every value of either side on shared ``keys``."""

    numbers: Array | None = None
    keys: list[str] | None = None
    reference: Array | None = None
    current: Array | None = None

    @property
    def present(self) -> int:
        if self.numbers is not None:
            return len(self.numbers)
        assert self.current is not None
        return int(self.current.sum())


def _current(ref: ColumnReference, series: pl.Series) -> _Current:
    kind = drift_kind(series.dtype)
    if ref.kind == "numeric":
        if kind != "numeric":
            raise DataError(
                f"column {ref.name!r} is numeric in the reference but {series.dtype} in the "
                "current data; send numbers for it (cast it before predicting)"
            )
        return _Current(numbers=present_numbers(series))
    if kind is None:
        raise DataError(
            f"column {ref.name!r} is categorical in the reference but {series.dtype} in the "
            "current data; send text for it"
        )
    keys, reference, current = _category_counts(ref, series)
    return _Current(keys=keys, reference=reference, current=current)


def _column_drift(ref: ColumnReference, series: pl.Series, settings: DriftSpec) -> ColumnDrift:
    cur = _current(ref, series)
    override = settings.columns.get(ref.name, ColumnDriftSpec())
    if cur.keys is not None:
        method = override.method or _default_method(ref, len(cur.keys))
    else:
        method = override.method or _default_method(ref, _numeric_values(ref, cur))
    _check_method(ref, method)
    threshold = override.threshold or (settings.p_value if method in TESTS else settings.threshold)
    plots = _distributions(ref, cur)
    if ref.present == 0 or cur.present == 0:
        return ColumnDrift(ref.name, ref.kind, method, None, threshold, False, None, None, *plots)
    statistic = _statistic(method, ref, cur)
    p_value = statistic if method in TESTS else None
    if method == "ks":
        drifted = statistic <= threshold
    elif method in TESTS:
        drifted = statistic < threshold
    else:
        drifted = statistic >= threshold
    return ColumnDrift(
        ref.name,
        ref.kind,
        method,
        statistic,
        threshold,
        bool(drifted),
        _psi(ref, cur),
        p_value,
        *plots,
    )


def _default_method(ref: ColumnReference, values: int) -> str:
    """Evidently's ``_get_default_stattest`` (``values``: distinct values of both sides)."""
    small = ref.present <= SMALL_REFERENCE
    if ref.kind == "numeric" and values > _FEW_VALUES:
        return "ks" if small else "wasserstein"
    if small:
        return "chisquare" if values > 2 else "z"
    return "jensenshannon"


def _numeric_values(ref: ColumnReference, cur: _Current) -> int:
    """Distinct present values of both sides, counted exactly up to 6 (all the rule needs)."""
    assert cur.numbers is not None
    if ref.distinct > _FEW_VALUES or ref.values is None:
        return ref.distinct
    uniques = _unique_sorted(cur.numbers)
    if len(uniques) > _FEW_VALUES:
        return len(uniques)
    return len(np.union1d(ref.value_array(), uniques))


def _unique_sorted(values: Array) -> Array:
    if len(values) == 0:
        return values
    kept: Array = values[np.concatenate([[True], values[1:] != values[:-1]])]
    return kept


def _check_method(ref: ColumnReference, method: str) -> None:
    if method in ("wasserstein", "ks") and ref.kind != "numeric":
        raise SpecError(
            f"monitor.drift.columns.{ref.name}: {method} needs a numeric column and "
            f"{ref.name!r} is categorical; use jensenshannon, chisquare, z, psi, kl_div or "
            "hellinger"
        )
    needs_values = method in ("chisquare", "z") and ref.kind == "numeric"
    if needs_values and ref.values is None and ref.present > 0:
        raise SpecError(
            f"monitor.drift.columns.{ref.name}: {method} compares value counts and "
            f"{ref.name!r} has {ref.distinct} distinct reference values (counts are kept up "
            "to 1,000, or 2,000 rows); use ks, wasserstein or psi"
        )


def _statistic(method: str, ref: ColumnReference, cur: _Current) -> float:
    if method == "wasserstein":
        assert cur.numbers is not None
        levels, values = ref.knots()
        return t.wasserstein(levels, values, cur.numbers) / max(ref.std or 0.0, 0.001)
    if method == "ks":
        return _ks(ref, cur)
    if method == "psi":
        return _psi(ref, cur)
    reference, current = _compared_counts(ref, cur, binned=method != "chisquare" and method != "z")
    functions = {
        "jensenshannon": t.jensenshannon,
        "chisquare": t.chisquare_p,
        "z": t.z_p,
        "kl_div": t.kl_div,
        "hellinger": t.hellinger,
    }
    return functions[method](reference, current)


def _ks(ref: ColumnReference, cur: _Current) -> float:
    from scipy import stats  # type: ignore[import-untyped]

    assert cur.numbers is not None
    if ref.exact and ref.present <= _EXACT_KS_ROWS:
        raw = np.repeat(ref.value_array(), np.asarray(ref.counts, dtype=np.int64))
        return float(stats.ks_2samp(raw, cur.numbers).pvalue)
    levels, values = ref.knots()
    statistic = t.ks_statistic(levels, values, cur.numbers)
    return t.ks_p(statistic, ref.present, len(cur.numbers))


def _compared_counts(ref: ColumnReference, cur: _Current, *, binned: bool) -> tuple[Array, Array]:
    """Reference and current counts on the same keys, as Evidently's ``get_binned_data``:
    every value of either side, or (``binned``, numeric columns with more than 20 distinct
    reference values) ``"sturges"`` bins over both samples."""
    if cur.reference is not None and cur.current is not None:
        return cur.reference, cur.current
    assert cur.numbers is not None
    if not binned or (ref.values is not None and ref.distinct <= _BINNED_VALUES):
        _, reference, current = _value_counts(ref, cur.numbers)
        return reference, current
    numbers = cur.numbers
    low, high = min(ref.min or 0.0, numbers[0]), max(ref.max or 0.0, numbers[-1])
    edges = t.sturges_edges(low, high, ref.present + len(numbers))
    levels, values = ref.knots()
    reference = t.knot_counts(levels, values, ref.present, edges)
    return reference, bin_counts(numbers, edges).astype(np.float64)


def _value_counts(ref: ColumnReference, numbers: Array) -> tuple[Array, Array, Array]:
    """Counts of every distinct value of either side (sorted keys), numeric columns."""
    starts = np.flatnonzero(np.concatenate([[True], numbers[1:] != numbers[:-1]]))
    cur_values = numbers[starts]
    cur_counts = np.diff(np.append(starts, len(numbers)))
    ref_values = ref.value_array()
    keys = np.union1d(ref_values, cur_values)
    reference = np.zeros(len(keys))
    current = np.zeros(len(keys))
    reference[np.searchsorted(keys, ref_values)] = np.asarray(ref.counts, dtype=np.float64)
    current[np.searchsorted(keys, cur_values)] = cur_counts
    return keys, reference, current


def _category_counts(ref: ColumnReference, series: pl.Series) -> tuple[list[str], Array, Array]:
    """Counts of every value of either side, sorted by value (the z-test's first key is the
    smallest); with a capped reference, current values outside it join its "other" bucket."""
    counts = text_counts(series, "current")
    kept = pl.DataFrame(
        {"value": list(ref.values or ()), "reference": list(ref.counts or ())},
        schema={"value": pl.String, "reference": pl.Int64},
    )
    joined = (
        kept.join(counts.cast({"current": pl.Int64}), on="value", how="full", coalesce=True)
        .fill_null(0)
        .sort("value")
    )
    if ref.other:
        unseen = int(joined.filter(pl.col("reference") == 0).get_column("current").sum())
        other = pl.DataFrame(
            {"value": [OTHER], "reference": [ref.other], "current": [unseen]},
            schema=joined.schema,
        )
        joined = pl.concat([joined.filter(pl.col("reference") > 0), other])
    return (
        joined.get_column("value").to_list(),
        joined.get_column("reference").to_numpy().astype(np.float64),
        joined.get_column("current").to_numpy().astype(np.float64),
    )


def _psi(ref: ColumnReference, cur: _Current) -> float:
    if cur.reference is not None and cur.current is not None:
        return t.psi(cur.reference, cur.current)
    assert ref.psi is not None and cur.numbers is not None
    edges = np.asarray(ref.psi.edges)
    reference = np.asarray(ref.psi.counts, dtype=np.float64)
    return t.psi(reference, psi_counts(cur.numbers, edges).astype(np.float64))


def _distributions(ref: ColumnReference, cur: _Current) -> tuple[Distribution, Distribution]:
    """Reference and current shares on the reference's 20 bins (values beyond its range in
    the end bins), or on the most common values of both sides (the rest as "(other)")."""
    if ref.kind == "numeric":
        if ref.histogram is None:
            return Distribution(()), Distribution(())
        edges = ref.histogram.edges
        reference = _share(np.asarray(ref.histogram.counts, dtype=np.float64))
        assert cur.numbers is not None
        current = _share(bin_counts(cur.numbers, np.asarray(edges)).astype(np.float64))
        return Distribution(reference, edges=edges), Distribution(current, edges=edges)
    assert cur.keys is not None and cur.reference is not None and cur.current is not None
    keys, ref_counts, cur_counts = cur.keys, cur.reference, cur.current
    order = np.lexsort((-cur_counts, -ref_counts))
    if len(order) > PLOT_VALUES:
        top, rest = order[: PLOT_VALUES - 1], order[PLOT_VALUES - 1 :]
        values = (*(keys[i] for i in top), OTHER)
        ref_counts = np.append(ref_counts[top], ref_counts[rest].sum())
        cur_counts = np.append(cur_counts[top], cur_counts[rest].sum())
    else:
        values = tuple(keys[i] for i in order)
        ref_counts, cur_counts = ref_counts[order], cur_counts[order]
    return (
        Distribution(_share(ref_counts), values=values),
        Distribution(_share(cur_counts), values=values),
    )


def _share(counts: Array) -> tuple[float, ...]:
    total = counts.sum()
    return tuple((counts / total).tolist()) if total > 0 else tuple(0.0 for _ in counts)


# -- multivariate ------------------------------------------------------------------------------


_MAX_CODES = 250  # HistGradientBoosting takes at most 255 categories a feature


def _multivariate(
    reference: DriftReference,
    data: pl.DataFrame,
    sample: pl.DataFrame | None,
    spec: MultivariateSpec,
) -> MultivariateDrift:
    if sample is None:
        raise DataError(
            "monitor.drift.multivariate is on but no reference sample was given; pass the "
            "package's baseline/reference_sample.parquet, or turn multivariate off"
        )
    names = [n for n in reference.names if n in sample.columns]
    if not names:
        raise DataError("the reference sample holds none of the monitored columns; rebuild it")
    ref = sample.select(names)
    ref = ref.sample(n=min(spec.sample_rows, ref.height), seed=0)
    cur = data.select(names).sample(n=min(spec.sample_rows, data.height), seed=0)
    if min(ref.height, cur.height) < 10:
        return MultivariateDrift(None, spec.threshold, False)
    kinds = {c.name: c.kind for c in reference.columns}
    features, categorical = _features(pl.concat([_plain(ref, kinds), _plain(cur, kinds)]), kinds)
    labels = np.concatenate(
        [np.zeros(ref.height, dtype=np.int8), np.ones(cur.height, dtype=np.int8)]
    )
    auc = _domain_auc(features, labels, categorical)
    return MultivariateDrift(auc, spec.threshold, bool(auc > spec.threshold))


def _plain(frame: pl.DataFrame, kinds: dict[str, Kind]) -> pl.DataFrame:
    return frame.select(
        pl.col(n).cast(pl.Float64 if kinds[n] == "numeric" else pl.String) for n in frame.columns
    )


def _features(both: pl.DataFrame, kinds: dict[str, Kind]) -> tuple[Array, Array]:
    """Numbers as floats (NaN for missing), categories as codes by frequency (rare ones
    sharing the last code) for the classifier's native categorical splits."""
    columns = []
    for name in both.columns:
        series = both.get_column(name)
        if kinds[name] == "numeric":
            columns.append(series.fill_nan(None))
            continue
        counts = series.drop_nulls().value_counts(name="__n")
        counts = counts.sort(["__n", name], descending=[True, False])
        codes = pl.Series(np.minimum(np.arange(counts.height), _MAX_CODES), dtype=pl.Float64)
        columns.append(series.replace_strict(counts.get_column(name), codes, default=None))
    matrix = pl.DataFrame(columns).to_numpy().astype(np.float64)
    return matrix, np.array([kinds[n] == "categorical" for n in both.columns])


def _domain_auc(features: Array, labels: Array, categorical: Array) -> float:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    model = HistGradientBoostingClassifier(
        max_iter=50,
        early_stopping=False,
        categorical_features=categorical if categorical.any() else None,
        random_state=0,
    )
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    # one OpenMP thread: on a few thousand rows, more threads mostly wait on each other (and
    # spin for whole seconds when the machine is busy)
    with threadpool_limits(limits=1, user_api="openmp"):
        scores = cross_val_score(model, features, labels, cv=folds, scoring="roc_auc")
    return float(np.mean(scores))
