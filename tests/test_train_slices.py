"""Error analysis: slice metrics, worst rows and fairness gaps against scikit-learn and numpy."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from meguri.errors import DataError
from meguri.train._evaluate import evaluate
from meguri.train._slices import fairness_gaps, slice_metrics, worst_rows

BINARY = "binary_classification"


@pytest.fixture(scope="module")
def cancer():
    """Test rows of breast cancer as a Polars frame with a derived categorical column."""
    data = load_breast_cancer(as_frame=True)
    X, y = data.data[["mean radius", "mean texture", "worst area"]], data.target.to_numpy()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.5, random_state=0, stratify=y)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(Xtr, ytr)
    frame = pl.from_pandas(Xte).with_columns(
        size=pl.when(pl.col("mean radius") > 14).then(pl.lit("big")).otherwise(pl.lit("small"))
    )
    return frame, yte, model.predict(Xte), model.predict_proba(Xte)


def _mask(frame, row, bins=5):
    """Rows of one slice, recomputed with numpy: right-closed bins between quantile edges."""
    column = frame[row["feature"]]
    if column.dtype == pl.String:
        return (column == row["slice"]).to_numpy()
    values, label = column.to_numpy(), row["slice"]
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    codes = np.searchsorted(edges, values, side="left")
    if label.startswith("> "):
        return codes == len(edges)
    upper = float(label.rsplit(" ", 1)[-1].strip("]"))  # the label rounds its edges
    return codes == np.argmin(np.abs(edges - upper))


@pytest.mark.parametrize(
    ("metric", "reference"),
    [
        ("accuracy", lambda y, pred, p: skm.accuracy_score(y, pred)),
        ("roc_auc", lambda y, pred, p: skm.roc_auc_score(y, p[:, 1])),
        ("log_loss", lambda y, pred, p: skm.log_loss(y, p, labels=[0, 1])),
        ("f1", lambda y, pred, p: skm.f1_score(y, pred, zero_division=0.0)),
    ],
)
def test_slice_values_equal_scikit_learn_on_the_slice(cancer, metric, reference):
    frame, y, pred, proba = cancer
    table = slice_metrics(frame, y, pred, proba, task=BINARY, metric=metric, min_rows=20)
    assert table.height > 5
    assert table["overall"][0] == pytest.approx(evaluate(BINARY, y, pred, proba)[metric], abs=1e-12)
    for row in table.iter_rows(named=True):
        mask = _mask(frame, row)
        assert row["rows"] == mask.sum() >= 20
        if row["value"] is None:  # ROC AUC of a slice holding one class only
            assert metric == "roc_auc" and len(np.unique(y[mask])) == 1
            continue
        assert row["value"] == pytest.approx(reference(y[mask], pred[mask], proba[mask]), abs=1e-9)
    worse = table["worse_by"].drop_nulls().to_numpy()
    assert (np.diff(worse) <= 0).all()
    assert table["worse_by"].is_null().sum() == table["value"].is_null().sum()  # nulls last
    sign = 1 if metric == "log_loss" else -1
    np.testing.assert_allclose(worse, sign * table["gap"].drop_nulls().to_numpy())


def test_numeric_columns_are_cut_into_quantile_bins_and_small_slices_dropped(cancer):
    frame, y, pred, proba = cancer
    table = slice_metrics(frame, y, pred, proba, task=BINARY, bins=4, min_rows=0)
    per_feature = dict(table.group_by("feature").len().iter_rows())
    assert per_feature == {"mean radius": 4, "mean texture": 4, "worst area": 4, "size": 2}
    assert table.filter(pl.col("feature") == "mean radius")["rows"].sum() == frame.height
    sizes = dict(frame["size"].value_counts().iter_rows())
    cut = min(sizes.values()) + 1
    kept = slice_metrics(frame, y, pred, proba, task=BINARY, features=["size"], min_rows=cut)
    assert kept["slice"].to_list() == [max(sizes, key=sizes.get)]


def test_missing_values_form_their_own_slice():
    frame = pl.DataFrame({"city": ["a", None, "a", None, "b", "b"]})
    table = slice_metrics(frame, [0, 1, 1, 0, 1, 1], [0, 1, 1, 1, 0, 1], task=BINARY, min_rows=1)
    assert dict(zip(table["slice"], table["value"], strict=True)) == {
        "b": 0.5, "null": 0.5, "a": 1.0
    }  # fmt: skip


def test_regression_slices_equal_scikit_learn():
    data = load_diabetes(as_frame=True)
    X, y = data.data, data.target.to_numpy()
    pred = Ridge().fit(X, y).predict(X)
    frame = pl.from_pandas(X[["age", "bmi", "sex"]])
    table = slice_metrics(frame, y, pred, task="regression", metric="rmse")
    for row in table.iter_rows(named=True):
        mask = _mask(frame.with_columns(pl.col("sex").cast(pl.String)), row)
        assert row["value"] == pytest.approx(skm.root_mean_squared_error(y[mask], pred[mask]))
    assert table["metric"][0] == "rmse"
    assert (table["worse_by"].to_numpy() == table["gap"].to_numpy()).all()


def test_slice_errors_name_the_fix(cancer):
    frame, y, pred, _proba = cancer
    with pytest.raises(DataError, match="frame has 5 rows but y_true has"):
        slice_metrics(frame.head(5), y, pred, task=BINARY)
    with pytest.raises(DataError, match="'height' is not a column"):
        slice_metrics(frame, y, pred, task=BINARY, features=["height"])
    with pytest.raises(DataError, match="metric='mae' has no slice form"):
        slice_metrics(frame, y, pred, task=BINARY, metric="mae")
    with pytest.raises(DataError, match="log_loss needs probabilities"):
        slice_metrics(frame, y, pred, task=BINARY, metric="log_loss")


def test_worst_rows_are_the_highest_log_loss(cancer):
    frame, y, pred, proba = cancer
    table = worst_rows(frame, y, pred, proba, task=BINARY, k=7)
    loss = -np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, None))
    expected = np.argsort(-loss, kind="stable")[:7]
    assert table["row"].to_list() == expected.tolist()
    np.testing.assert_allclose(table["loss"].to_numpy(), loss[expected], rtol=1e-12)
    assert table.columns[:2] == ["row", "mean radius"]
    assert table["y_true"].to_list() == y[expected].tolist()


def test_worst_rows_for_regression_rank_absolute_error():
    y, pred = np.array([1.0, 5.0, 2.0, 8.0]), np.array([1.5, 1.0, 2.0, 9.0])
    table = worst_rows(pl.DataFrame({"x": [1, 2, 3, 4]}), y, pred, task="regression", k=2)
    assert table["row"].to_list() == [1, 3]
    assert table["loss"].to_list() == [4.0, 1.0]


def test_fairness_gaps_match_a_hand_computation(cancer):
    frame, y, pred, proba = cancer
    group = frame["size"].to_numpy()
    gaps = fairness_gaps(y, pred, proba, sensitive=group)
    rates = {}
    for g in ("big", "small"):
        m = group == g
        rates[g] = {
            "rows": int(m.sum()),
            "selection_rate": pred[m].mean(),
            "tpr": pred[m & (y == 1)].mean(),
            "fpr": pred[m & (y == 0)].mean(),
            "accuracy": (pred[m] == y[m]).mean(),
        }
        assert gaps["groups"][g] == pytest.approx(rates[g], abs=1e-12)
    sel = [r["selection_rate"] for r in rates.values()]
    tpr = [r["tpr"] for r in rates.values()]
    fpr = [r["fpr"] for r in rates.values()]
    assert gaps["demographic_parity_difference"] == pytest.approx(max(sel) - min(sel))
    assert gaps["demographic_parity_ratio"] == pytest.approx(min(sel) / max(sel))
    assert gaps["equalized_odds_difference"] == pytest.approx(
        max(max(tpr) - min(tpr), max(fpr) - min(fpr))
    )


def test_fairness_skips_undefined_rates_and_checks_lengths():
    gaps = fairness_gaps([1, 1, 0, 1], [1, 0, 0, 1], sensitive=["a", "a", "b", "b"])
    assert gaps["groups"]["a"]["fpr"] is None
    assert gaps["equalized_odds_difference"] == pytest.approx(0.5)
    with pytest.raises(DataError, match="sensitive has 3 rows"):
        fairness_gaps([1, 0, 1, 0], [1, 0, 0, 1], sensitive=["a", "b", "a"])
