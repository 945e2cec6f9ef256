"""Evaluation plots as Plotly figures, ready for ``run.log_figure(fig, name)``.

:func:`figures` returns, by task and inputs:

- classification: ``confusion_matrix`` (counts), ``confusion_matrix_normalized`` (each true
  class's row sums to 1); with probabilities ``roc``, ``pr`` (one curve per class, one-vs-rest,
  for multiclass) and ``calibration`` (reliability diagram over the histogram of predicted
  probabilities).
- regression: ``residuals`` (residual against prediction) and ``residuals_histogram``.
- with a fitted ``estimator``: ``feature_importance`` (its ``feature_importances_`` or the
  absolute ``coef_``); with ``X`` too, ``permutation_importance`` (scikit-learn's, seeded, mean
  and standard deviation over repeats as error bars).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from sklearn import metrics as skm

from meguri.errors import DataError
from meguri.train._evaluate import reliability_of
from meguri.train._metrics import (
    BINARY,
    Encoded,
    FloatArray,
    check_task,
    encode,
    regression_inputs,
)

_TEMPLATE = "plotly_white"
PERMUTATION_REPEATS = 5


def figures(
    task: str,
    y_true: Any,
    y_pred: Any = None,
    y_proba: Any = None,
    *,
    estimator: Any = None,
    X: Any = None,
    feature_names: Sequence[str] | None = None,
    labels: Sequence[Any] | None = None,
    seed: int = 0,
) -> dict[str, go.Figure]:
    """Every plot that applies to these inputs, by name (see the module docstring)."""
    if check_task(task) == "regression":
        found = residual_figures(*regression_inputs(y_true, y_pred))
    else:
        found = classification_figures(encode(task, y_true, y_pred, y_proba, labels))
    if estimator is not None:
        found |= importance_figures(estimator, X, y_true, feature_names, seed)
    return found


def _figure(title: str, x_title: str, y_title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, template=_TEMPLATE)
    return fig


# -- classification -----------------------------------------------------------------------------


def classification_figures(e: Encoded) -> dict[str, go.Figure]:
    found = {
        "confusion_matrix": confusion_figure(e, normalize=False),
        "confusion_matrix_normalized": confusion_figure(e, normalize=True),
    }
    if e.proba is not None:
        found |= {"roc": roc_figure(e), "pr": pr_figure(e), "calibration": calibration_figure(e)}
    return found


def confusion_figure(e: Encoded, *, normalize: bool) -> go.Figure:
    matrix = skm.confusion_matrix(e.y, e.pred, labels=np.arange(e.k)).astype(np.float64)
    if normalize:
        rows = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    names = [str(c) for c in e.classes]
    text = np.vectorize(lambda v: f"{v:.2f}" if normalize else f"{v:.0f}")(matrix)
    title = "Confusion matrix" + (" (normalised by true class)" if normalize else "")
    fig = _figure(title, "Predicted", "True")
    fig.add_trace(
        go.Heatmap(
            z=matrix, x=names, y=names, text=text, texttemplate="%{text}", colorscale="Blues"
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig


def _one_vs_rest(e: Encoded) -> list[tuple[str, Any, FloatArray]]:
    """(name, 0/1 truth, score) per curve: the positive class, or each class for multiclass."""
    proba = e.require_proba("curves")
    columns = [1] if e.task == BINARY else range(e.k)
    return [(str(e.classes[c]), e.y == c, proba[:, c]) for c in columns]


def roc_figure(e: Encoded) -> go.Figure:
    fig = _figure("ROC curve", "False positive rate", "True positive rate")
    for name, truth, score in _one_vs_rest(e):
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = skm.roc_curve(truth, score)
        auc = skm.auc(fpr, tpr)
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} (AUC {auc:.3f})"))
    fig.add_trace(_diagonal("chance"))
    return fig


def pr_figure(e: Encoded) -> go.Figure:
    fig = _figure("Precision-recall curve", "Recall", "Precision")
    for name, truth, score in _one_vs_rest(e):
        if not truth.any():
            continue
        precision, recall, _ = skm.precision_recall_curve(truth, score)
        ap = skm.average_precision_score(truth, score)
        label = f"{name} (AP {ap:.3f}, base rate {truth.mean():.3f})"
        fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines", name=label, line_shape="hv"))
    return fig


def _diagonal(name: str) -> go.Scatter:
    return go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name=name, line={"dash": "dash"})


def calibration_figure(e: Encoded) -> go.Figure:
    curve = reliability_of(e)
    kind = "positive-class probability" if e.task == BINARY else "top-label confidence"
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3])
    fig.add_trace(
        go.Scatter(
            x=curve.confidence, y=curve.fraction, mode="lines+markers", name="model",
            customdata=curve.count, hovertemplate="%{x:.3f} → %{y:.3f} (%{customdata} rows)",
        ),
        row=1, col=1,
    )  # fmt: skip
    fig.add_trace(_diagonal("perfectly calibrated"), row=1, col=1)
    centres, widths = (curve.bin_lower + curve.bin_upper) / 2, curve.bin_upper - curve.bin_lower
    fig.add_trace(go.Bar(x=centres, y=curve.count, width=widths, name="rows"), row=2, col=1)
    fig.update_layout(title=f"Calibration (ECE {curve.ece:.4f})", template=_TEMPLATE, bargap=0.05)
    fig.update_xaxes(title_text=f"Predicted {kind}", range=[0, 1], row=2, col=1)
    fig.update_yaxes(title_text="Observed frequency", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="Rows", row=2, col=1)
    return fig


# -- regression ---------------------------------------------------------------------------------


def residual_figures(y: FloatArray, pred: FloatArray) -> dict[str, go.Figure]:
    residual = y - pred
    scatter = _figure("Residuals", "Predicted", "Residual (true - predicted)")
    scatter.add_trace(go.Scattergl(x=pred, y=residual, mode="markers", name="rows"))
    scatter.add_hline(y=0, line_dash="dash")
    histogram = _figure("Residual distribution", "Residual (true - predicted)", "Rows")
    histogram.add_trace(go.Histogram(x=residual, name="residuals"))
    return {"residuals": scatter, "residuals_histogram": histogram}


# -- importance ---------------------------------------------------------------------------------


def importance_figures(
    estimator: Any, X: Any, y: Any, feature_names: Sequence[str] | None, seed: int
) -> dict[str, go.Figure]:
    found = {}
    native = _native_importance(estimator)
    if native is not None:
        names = _names(feature_names, estimator, len(native))
        found["feature_importance"] = _bar("Feature importance", names, native)
    if X is not None:
        from sklearn.inspection import permutation_importance

        result = permutation_importance(
            estimator, X, np.asarray(y), n_repeats=PERMUTATION_REPEATS, random_state=seed
        )
        names = _names(feature_names, estimator, len(result.importances_mean))
        title = f"Permutation importance (drop in score, {PERMUTATION_REPEATS} repeats)"
        found["permutation_importance"] = _bar(
            title, names, result.importances_mean, result.importances_std
        )
    return found


def _native_importance(estimator: Any) -> FloatArray | None:
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if hasattr(final, "feature_importances_"):
        return np.asarray(final.feature_importances_, dtype=np.float64)
    if hasattr(final, "coef_"):
        coef = np.atleast_2d(np.asarray(final.coef_, dtype=np.float64))
        return np.asarray(np.abs(coef).mean(axis=0), dtype=np.float64)
    return None


def _names(given: Sequence[str] | None, estimator: Any, n: int) -> list[str]:
    names = list(given) if given is not None else None
    if names is None and hasattr(estimator, "feature_names_in_"):
        names = [str(v) for v in estimator.feature_names_in_]
    names = names or [f"x{i}" for i in range(n)]
    if len(names) != n:
        raise DataError(
            f"feature_names has {len(names)} names but the model has {n} features; "
            "pass one name per column of X."
        )
    return names


def _bar(
    title: str, names: list[str], values: FloatArray, errors: FloatArray | None = None
) -> go.Figure:
    order = np.argsort(values, kind="stable")
    fig = _figure(title, "Importance", "Feature")
    error_x = None if errors is None else {"type": "data", "array": errors[order]}
    fig.add_trace(
        go.Bar(x=values[order], y=[names[i] for i in order], orientation="h", error_x=error_x)
    )
    fig.update_layout(height=max(300, 22 * len(names) + 120))
    return fig
