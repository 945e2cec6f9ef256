"""Evaluation figures: the right set per task, with the numbers scikit-learn gives."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from meguri.errors import DataError
from meguri.train._artifacts import figure_bytes
from meguri.train._plots import figures

BINARY = "binary_classification"


@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer(as_frame=True)
    X, y = data.data.iloc[:, :6], data.target.to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X.iloc[::2], y[::2])
    Xte, yte = X.iloc[1::2], y[1::2]
    return model, Xte, yte, model.predict(Xte), model.predict_proba(Xte)


def test_binary_figures_carry_scikit_learn_curves(cancer):
    model, X, y, pred, proba = cancer
    figs = figures(BINARY, y, pred, proba, estimator=model, X=X)
    assert set(figs) == {
        "confusion_matrix", "confusion_matrix_normalized", "roc", "pr", "calibration",
        "feature_importance", "permutation_importance",
    }  # fmt: skip
    fpr, tpr, _ = skm.roc_curve(y, proba[:, 1])
    np.testing.assert_allclose(figs["roc"].data[0].x, fpr)
    np.testing.assert_allclose(figs["roc"].data[0].y, tpr)
    precision, _recall, _ = skm.precision_recall_curve(y, proba[:, 1])
    np.testing.assert_allclose(figs["pr"].data[0].y, precision)
    np.testing.assert_array_equal(figs["confusion_matrix"].data[0].z, skm.confusion_matrix(y, pred))
    np.testing.assert_allclose(figs["confusion_matrix_normalized"].data[0].z.sum(axis=1), 1.0)
    assert sum(figs["calibration"].data[-1].y) == len(y)  # the histogram under the diagram
    for name, fig in figs.items():
        data, media_type, _ = figure_bytes(fig)
        assert media_type == "application/vnd.plotly.v1+json" and len(data) > 100, name


def test_permutation_importance_is_seeded_with_error_bars(cancer):
    model, X, y, pred, _proba = cancer
    first = figures(BINARY, y, pred, estimator=model, X=X, seed=3)["permutation_importance"]
    again = figures(BINARY, y, pred, estimator=model, X=X, seed=3)["permutation_importance"]
    bar = first.data[0]
    assert list(bar.x) == list(again.data[0].x)
    assert len(bar.error_x.array) == X.shape[1]
    assert set(bar.y) == set(X.columns)  # names from the fitted model's feature_names_in_


def test_multiclass_figures_have_one_curve_per_class():
    X, y = load_wine(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    figs = figures("multiclass_classification", y, y_proba=model.predict_proba(X))
    assert len(figs["roc"].data) == 3 + 1  # three classes and the chance line
    assert len(figs["pr"].data) == 3
    assert figs["confusion_matrix"].data[0].z.shape == (3, 3)


def test_regression_figures_show_residuals_and_importance():
    X, y = load_diabetes(return_X_y=True)
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y)
    pred = model.predict(X)
    names = [f"f{i}" for i in range(X.shape[1])]
    figs = figures("regression", y, pred, estimator=model, feature_names=names)
    assert set(figs) == {"residuals", "residuals_histogram", "feature_importance"}
    np.testing.assert_allclose(figs["residuals"].data[0].y, y - pred)
    bar = figs["feature_importance"].data[0]
    assert dict(zip(bar.y, bar.x, strict=True)) == pytest.approx(
        dict(zip(names, model.feature_importances_, strict=True))
    )
    with pytest.raises(DataError, match="feature_names has 2 names"):
        figures("regression", y, pred, estimator=model, feature_names=["a", "b"])
