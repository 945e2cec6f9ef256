"""The metrics of a task, each computed by scikit-learn's own function on the same predictions.

Names (the keys of :func:`evaluate`):

- binary: ``accuracy``, ``balanced_accuracy``, ``precision``, ``recall``, ``f1`` (of the positive
  class ``classes[1]``), and with probabilities ``roc_auc``, ``pr_auc`` (average precision),
  ``log_loss``, ``brier``, ``ece``.
- multiclass: ``accuracy``, ``balanced_accuracy``, ``precision_macro``, ``recall_macro``,
  ``f1_macro``, ``precision_weighted``, ``recall_weighted``, ``f1_weighted``, and with
  probabilities ``roc_auc`` (one-vs-rest, macro), ``pr_auc`` (macro average precision),
  ``log_loss``, ``brier`` (scikit-learn's multiclass Brier score: the squared distance between
  each probability row and the one-hot truth, summed over classes and averaged over rows),
  ``ece``.
- regression: ``mae``, ``rmse``, ``r2``, ``mape``, ``median_ae``.

``ece`` is the expected calibration error over 10 uniform bins of ``[0, 1]`` (the bins of
``sklearn.calibration.calibration_curve``): ``sum_b (n_b / n) * |fraction_b - confidence_b|``.
For binary tasks it bins the positive-class probability against the positive rate; for
multiclass the top-label confidence against accuracy (Guo et al., 2017).

``mape`` leaves out rows whose true value is 0, where a percentage error is undefined (scikit-learn
divides by machine epsilon there, giving numbers near 1e15); when every true value is 0 the key
is absent. Precision, recall and F1 count 0 when undefined (no predicted or no true positives).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from meguri.train._metrics import (
    BINARY,
    Encoded,
    FloatArray,
    IntArray,
    check_task,
    encode,
    regression_inputs,
    require_all_classes,
)

N_BINS = 10


def evaluate(
    task: str,
    y_true: Any,
    y_pred: Any = None,
    y_proba: Any = None,
    *,
    labels: Sequence[Any] | None = None,
) -> dict[str, float]:
    """Every metric of ``task`` for these predictions (names in the module docstring).

    For classification ``y_pred`` defaults to the argmax of ``y_proba``; probability metrics are
    present only when ``y_proba`` is given (binary: a 1-D positive-class array or the
    ``predict_proba`` matrix; its columns follow ``labels``, by default the sorted classes).
    """
    if check_task(task) == "regression":
        return regression_metrics(*regression_inputs(y_true, y_pred))
    encoded = encode(task, y_true, y_pred, y_proba, labels)
    values = label_metrics(encoded)
    if encoded.proba is not None:
        values |= proba_metrics(encoded)
    return values


def label_metrics(e: Encoded) -> dict[str, float]:
    labels = np.arange(e.k)
    values = {
        "accuracy": float(skm.accuracy_score(e.y, e.pred)),
        "balanced_accuracy": _balanced_accuracy(e.y, e.pred),
    }
    if e.task == BINARY:
        scores = skm.precision_recall_fscore_support(
            e.y, e.pred, labels=labels, pos_label=1, average="binary", zero_division=0.0
        )
        return values | dict(
            zip(("precision", "recall", "f1"), map(float, scores[:3]), strict=True)
        )
    for average in ("macro", "weighted"):
        scores = skm.precision_recall_fscore_support(
            e.y, e.pred, labels=labels, average=average, zero_division=0.0
        )
        names = (f"precision_{average}", f"recall_{average}", f"f1_{average}")
        values |= dict(zip(names, map(float, scores[:3]), strict=True))
    return values


def _balanced_accuracy(y: IntArray, pred: IntArray) -> float:
    with warnings.catch_warnings():
        # A predicted class absent from y_true has no recall; scikit-learn skips it and warns.
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        # One class only (a window whose labels so far are all one class) scores as such.
        warnings.filterwarnings("ignore", "A single label was found in 'y_true' and 'y_pred'")
        return float(skm.balanced_accuracy_score(y, pred))


def proba_metrics(e: Encoded) -> dict[str, float]:
    proba = e.require_proba("roc_auc")
    require_all_classes(e, "roc_auc")
    labels = np.arange(e.k)
    if e.task == BINARY:
        p = proba[:, 1]
        auc = skm.roc_auc_score(e.y, p)
        ap = skm.average_precision_score(e.y, p)
        brier = skm.brier_score_loss(e.y, p)
    else:
        auc = skm.roc_auc_score(e.y, proba, multi_class="ovr", average="macro", labels=labels)
        ap = skm.average_precision_score(e.y, proba, average="macro")
        brier = skm.brier_score_loss(e.y, proba, labels=labels)
    return {
        "roc_auc": float(auc),
        "pr_auc": float(ap),
        "log_loss": float(skm.log_loss(e.y, proba, labels=labels)),
        "brier": float(brier),
        "ece": expected_calibration_error(e),
    }


def regression_metrics(y: FloatArray, pred: FloatArray) -> dict[str, float]:
    values = {
        "mae": float(skm.mean_absolute_error(y, pred)),
        "rmse": float(skm.root_mean_squared_error(y, pred)),
        "r2": float(skm.r2_score(y, pred)),
        "median_ae": float(skm.median_absolute_error(y, pred)),
    }
    nonzero = y != 0
    if nonzero.any():
        values["mape"] = float(skm.mean_absolute_percentage_error(y[nonzero], pred[nonzero]))
    return values


# -- calibration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityCurve:
    """Reliability diagram data over uniform bins; arrays hold the non-empty bins only."""

    bin_lower: FloatArray
    bin_upper: FloatArray
    confidence: FloatArray
    """Mean predicted probability in the bin (``prob_pred`` of ``calibration_curve``)."""
    fraction: FloatArray
    """Observed positive rate (binary) or accuracy (multiclass) (``prob_true``)."""
    count: IntArray
    ece: float

    def as_dict(self) -> dict[str, Any]:
        """Plain lists, ready for ``run.log_dict(curve.as_dict(), "calibration.json")``."""
        return {
            "bin_lower": self.bin_lower.tolist(),
            "bin_upper": self.bin_upper.tolist(),
            "confidence": self.confidence.tolist(),
            "fraction": self.fraction.tolist(),
            "count": self.count.tolist(),
            "ece": self.ece,
        }


def calibration_inputs(e: Encoded) -> tuple[FloatArray, FloatArray]:
    """(confidence, outcome) per row: positive-class probability and truth for binary tasks,
    top-label probability and correctness for multiclass."""
    proba = e.require_proba("calibration")
    if e.task == BINARY:
        return proba[:, 1], (e.y == 1).astype(np.float64)
    return proba.max(axis=1), (np.argmax(proba, axis=1) == e.y).astype(np.float64)


def bin_ids(confidence: FloatArray, n_bins: int = N_BINS) -> IntArray:
    """The uniform bin of each probability, exactly as ``calibration_curve`` assigns it."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], confidence).astype(np.intp)


def reliability_curve(
    task: str,
    y_true: Any,
    y_proba: Any,
    *,
    labels: Sequence[Any] | None = None,
    n_bins: int = N_BINS,
) -> ReliabilityCurve:
    """The reliability diagram's points and the expected calibration error."""
    return reliability_of(encode(check_task(task), y_true, None, y_proba, labels), n_bins)


def reliability_of(e: Encoded, n_bins: int = N_BINS) -> ReliabilityCurve:
    confidence, outcome = calibration_inputs(e)
    ids = bin_ids(confidence, n_bins)
    count = np.bincount(ids, minlength=n_bins)
    seen = count > 0
    mean_conf = np.bincount(ids, weights=confidence, minlength=n_bins)[seen] / count[seen]
    fraction = np.bincount(ids, weights=outcome, minlength=n_bins)[seen] / count[seen]
    ece = float(np.sum(count[seen] / len(ids) * np.abs(fraction - mean_conf)))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return ReliabilityCurve(
        edges[:-1][seen], edges[1:][seen], mean_conf, fraction, count[seen].astype(np.intp), ece
    )


def expected_calibration_error(e: Encoded, n_bins: int = N_BINS) -> float:
    return reliability_of(e, n_bins).ece
