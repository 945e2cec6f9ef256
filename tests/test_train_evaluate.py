"""Evaluation metrics and bootstrap intervals, checked against scikit-learn's own functions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from meguri.errors import DataError
from meguri.train._evaluate import evaluate, reliability_curve
from meguri.train._metrics import encode
from meguri.train._metrics_bootstrap import bootstrap_ci, bootstrap_distribution, resample_indices

BINARY = "binary_classification"
MULTICLASS = "multiclass_classification"
TOL = 1e-12


def _split(X, y):
    return train_test_split(X, y, test_size=0.4, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def binary():
    """Breast cancer, labels as strings, a logistic regression: (y, pred, proba)."""
    X, y = load_breast_cancer(return_X_y=True)
    names = np.array(["malignant", "benign"])[y]
    Xtr, Xte, ytr, yte = _split(X, names)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05)).fit(Xtr, ytr)
    return yte, model.predict(Xte), model.predict_proba(Xte)


@pytest.fixture(scope="module")
def multiclass():
    X, y = load_wine(return_X_y=True)
    Xtr, Xte, ytr, yte = _split(X, y)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.02)).fit(Xtr, ytr)
    return yte, model.predict(Xte), model.predict_proba(Xte)


@pytest.fixture(scope="module")
def regression():
    X, y = load_diabetes(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.4, random_state=0)
    return yte, Ridge(alpha=0.5).fit(Xtr, ytr).predict(Xte)


def _ece(y01, p):
    """ECE by hand from scikit-learn's calibration_curve and numpy bin counts."""
    prob_true, prob_pred = calibration_curve(y01, p, n_bins=10, strategy="uniform")
    edges = np.linspace(0, 1, 11)
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=10)
    return float(np.sum(counts[counts > 0] / len(p) * np.abs(prob_true - prob_pred)))


def test_binary_metrics_equal_scikit_learn(binary):
    y, pred, proba = binary
    got = evaluate(BINARY, y, pred, proba)
    p, pos = proba[:, 1], "malignant"  # columns follow the sorted classes: benign, malignant
    want = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, pos_label=pos),
        "recall": skm.recall_score(y, pred, pos_label=pos),
        "f1": skm.f1_score(y, pred, pos_label=pos),
        "roc_auc": skm.roc_auc_score(y == pos, p),
        "pr_auc": skm.average_precision_score(y, p, pos_label=pos),
        "log_loss": skm.log_loss(y, proba),
        "brier": skm.brier_score_loss(y, p, pos_label=pos),
        "ece": _ece((y == pos).astype(int), p),
    }
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=TOL), name
    assert 0.9 < got["roc_auc"] <= 1


def test_binary_accepts_one_column_of_probabilities_and_derives_predictions(binary):
    y, pred, proba = binary
    assert evaluate(BINARY, y, y_proba=proba[:, 1]) == evaluate(BINARY, y, pred, proba)


def test_multiclass_metrics_equal_scikit_learn(multiclass):
    y, pred, proba = multiclass
    got = evaluate(MULTICLASS, y, pred, proba)
    want = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "roc_auc": skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"),
        "pr_auc": skm.average_precision_score(y, proba, average="macro"),
        "log_loss": skm.log_loss(y, proba),
        "brier": skm.brier_score_loss(y, proba),
    }
    for average in ("macro", "weighted"):
        want[f"precision_{average}"] = skm.precision_score(y, pred, average=average)
        want[f"recall_{average}"] = skm.recall_score(y, pred, average=average)
        want[f"f1_{average}"] = skm.f1_score(y, pred, average=average)
    top = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(int)
    want["ece"] = _ece(correct, top)
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=TOL), name


def test_regression_metrics_equal_scikit_learn(regression):
    y, pred = regression
    got = evaluate("regression", y, pred)
    want = {
        "mae": skm.mean_absolute_error(y, pred),
        "rmse": skm.root_mean_squared_error(y, pred),
        "r2": skm.r2_score(y, pred),
        "mape": skm.mean_absolute_percentage_error(y, pred),
        "median_ae": skm.median_absolute_error(y, pred),
    }
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=TOL), name


def test_mape_leaves_out_rows_whose_truth_is_zero():
    y, pred = np.array([0.0, 2.0, 4.0, 0.0]), np.array([1.0, 1.0, 5.0, 0.0])
    got = evaluate("regression", y, pred)
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y[1:3], pred[1:3]))
    assert "mape" not in evaluate("regression", [0.0, 0.0], [1.0, 2.0])


def test_reliability_curve_matches_calibration_curve(binary):
    y, _, proba = binary
    curve = reliability_curve(BINARY, y, proba)
    prob_true, prob_pred = calibration_curve(y, proba[:, 1], n_bins=10, pos_label="malignant")
    np.testing.assert_allclose(curve.fraction, prob_true, atol=TOL)
    np.testing.assert_allclose(curve.confidence, prob_pred, atol=TOL)
    assert curve.count.sum() == len(y)
    assert curve.as_dict()["ece"] == evaluate(BINARY, y, y_proba=proba)["ece"]


def test_labels_set_the_probability_columns():
    y = np.array(["b", "a", "b", "a"])
    proba_b = np.array([0.9, 0.2, 0.6, 0.4])  # probability of "b"
    in_b_a_order = evaluate(BINARY, y, y_proba=np.column_stack([proba_b, 1 - proba_b]),
                            labels=["b", "a"])  # fmt: skip
    assert in_b_a_order["roc_auc"] == 1.0  # positive class is "a" here
    assert in_b_a_order["recall"] == skm.recall_score(y, ["b", "a", "b", "a"], pos_label="a")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"y_true": [1, 1, 1], "y_proba": [0.2, 0.7, 0.9], "labels": [0, 1]}, "no rows of class"),
        ({"y_true": [1, 1, 1], "y_proba": [0.2, 0.7, 0.9]}, "pass labels"),
        ({"y_true": [0, 1, 1], "y_pred": [0, 1]}, "y_pred has 2 rows but y_true has 3"),
        ({"y_true": [0, 1, 1], "y_proba": [0.1, np.nan, 0.9]}, "y_proba has 1 missing"),
        ({"y_true": [0, 1, 1], "y_proba": [[0.1, 0.1]] * 3}, "rows must sum to 1"),
        ({"y_true": [0, 1, 1], "y_proba": [0.1, 1.2, 0.9]}, "outside"),
        ({"y_true": [0, 1, 1], "y_proba": [0.1, 0.2]}, r"expected \(3, 2\)"),
        ({"y_true": [0, 1, 1], "y_pred": [0, 2, 1], "labels": [0, 1]}, "not among labels"),
        ({"y_true": [0, 1, 1]}, "Pass y_pred, y_proba or both"),
    ],
)
def test_degenerate_classification_inputs_raise_clear_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        evaluate(BINARY, **kwargs)


def test_degenerate_regression_and_task_errors():
    with pytest.raises(DataError, match="y_pred has 1 missing"):
        evaluate("regression", [1.0, 2.0], [1.0, np.nan])
    with pytest.raises(DataError, match="is not a task"):
        evaluate("ranking", [1, 2], [1, 2])
    with pytest.raises(DataError, match="multiclass_classification needs at least 3"):
        evaluate(MULTICLASS, [0, 1], [0, 1])


# -- bootstrap ------------------------------------------------------------------------------------


def _check_resamples(task, y, pred, proba, n=6, seed=3):
    """The vectorised per-resample values equal evaluate (scikit-learn) on the same rows."""
    values = bootstrap_distribution(task, y, pred, proba, n=n, seed=seed)
    strata = np.zeros(len(y), int) if task == "regression" else encode(task, y, pred, proba).y
    idx = np.concatenate(list(resample_indices(strata, n, seed)))
    for b in range(n):
        rows = idx[b]
        want = evaluate(task, y[rows], pred[rows], None if proba is None else proba[rows])
        for name, got in values.items():
            assert got[b] == pytest.approx(want[name], rel=1e-12, abs=TOL), (name, b)
    return values


def test_bootstrap_binary_resamples_equal_scikit_learn(binary):
    y, pred, proba = binary
    values = _check_resamples(BINARY, y, pred, proba)
    assert set(values) == set(evaluate(BINARY, y, pred, proba))


def test_bootstrap_handles_tied_scores(binary):
    y, pred, proba = binary
    _check_resamples(BINARY, y, pred, np.round(proba, 1))


def test_bootstrap_multiclass_and_regression_resamples_equal_scikit_learn(multiclass, regression):
    _check_resamples(MULTICLASS, *multiclass)
    _check_resamples("regression", *regression, None)


def test_bootstrap_is_stratified_seeded_and_brackets_the_estimate(binary):
    y, pred, proba = binary
    strata = encode(BINARY, y, pred, proba).y
    idx = next(resample_indices(strata, 50, seed=1))
    per_resample = (strata[idx] == 1).sum(axis=1)
    assert (per_resample == (strata == 1).sum()).all()
    first = bootstrap_ci(BINARY, y, pred, proba, n=200, seed=7)
    assert first == bootstrap_ci(BINARY, y, pred, proba, n=200, seed=7)
    assert first != bootstrap_ci(BINARY, y, pred, proba, n=200, seed=8)
    point = evaluate(BINARY, y, pred, proba)
    for name, (low, high) in first.items():
        assert low <= point[name] <= high, name


def test_bootstrap_picks_metrics_and_rejects_unknown(regression):
    y, pred = regression
    ci = bootstrap_ci("regression", y, pred, metrics=["rmse"], n=50)
    assert list(ci) == ["rmse"]
    with pytest.raises(DataError, match="'roc_auc' has no bootstrap for regression"):
        bootstrap_ci("regression", y, pred, metrics=["roc_auc"], n=50)
    with pytest.raises(DataError, match=r"alpha=1\.5"):
        bootstrap_ci("regression", y, pred, alpha=1.5)


def test_bootstrap_on_ten_thousand_rows_has_narrow_intervals():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 10_000)
    p = np.clip(0.35 * y + 0.65 * rng.random(10_000), 0, 1)
    ci = bootstrap_ci(BINARY, y, (p > 0.5).astype(int), p, metrics=["roc_auc", "accuracy"], n=200)
    point = skm.roc_auc_score(y, p)
    assert ci["roc_auc"][0] < point < ci["roc_auc"][1]
    assert ci["roc_auc"][1] - ci["roc_auc"][0] < 0.03
