"""Checked, encoded inputs for evaluation: one place that validates what callers pass.

Classification labels are encoded as integer codes ``0..k-1`` into ``classes`` (the order of the
probability columns); binary probabilities are kept as the ``(n, 2)`` matrix ``[1 - p, p]``
whose second column belongs to the positive class ``classes[1]``. Every problem raises a
:class:`~meguri.errors.DataError` that names the argument and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from meguri.errors import DataError
from meguri.spec import TASKS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

BINARY = "binary_classification"
MULTICLASS = "multiclass_classification"
REGRESSION = "regression"
_PROBA_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Encoded:
    """Classification inputs as codes: ``y`` and ``pred`` index into ``classes``."""

    task: str
    classes: npt.NDArray[Any]
    y: IntArray
    pred: IntArray
    proba: FloatArray | None

    @property
    def k(self) -> int:
        return len(self.classes)

    def require_proba(self, metric: str) -> FloatArray:
        if self.proba is None:
            raise DataError(f"{metric} needs probabilities: pass y_proba (predict_proba output).")
        return self.proba


def check_task(task: str) -> str:
    if task not in TASKS:
        raise DataError(f"task={task!r} is not a task; use one of {', '.join(TASKS)}.")
    return task


def is_classification(task: str) -> bool:
    return check_task(task) != REGRESSION


def as_1d(name: str, values: Any, n: int | None = None) -> npt.NDArray[Any]:
    """``values`` as a 1-D array of length ``n`` (when given), without missing numbers."""
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, not of shape {array.shape}.")
    if n is not None and len(array) != n:
        raise DataError(
            f"{name} has {len(array)} rows but y_true has {n}; pass predictions for the same rows."
        )
    _check_missing(name, array)
    return array


def _check_missing(name: str, array: npt.NDArray[Any]) -> None:
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
    elif array.dtype.kind == "O":
        bad = np.array([v is None or (isinstance(v, float) and v != v) for v in array.tolist()])
    else:
        return
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name} has {int(bad.sum())} missing or infinite values (first at row {first}); "
            "drop those rows or fix the model that produced them."
        )


def regression_inputs(y_true: Any, y_pred: Any) -> tuple[FloatArray, FloatArray]:
    if y_pred is None:
        raise DataError("Regression metrics need y_pred: pass the model's predictions.")
    y = _numeric("y_true", as_1d("y_true", y_true))
    pred = _numeric("y_pred", as_1d("y_pred", y_pred, len(y)))
    if len(y) < 2:
        raise DataError("Regression metrics need at least 2 rows in y_true.")
    return y, pred


def _numeric(name: str, array: npt.NDArray[Any]) -> FloatArray:
    if array.dtype.kind not in "biuf":
        raise DataError(f"{name} must hold numbers for regression, not {array.dtype}.")
    return array.astype(np.float64)


def encode(
    task: str,
    y_true: Any,
    y_pred: Any = None,
    y_proba: Any = None,
    labels: Sequence[Any] | None = None,
) -> Encoded:
    """Check and encode classification inputs (``y_pred`` defaults to the argmax of ``y_proba``)."""
    if y_pred is None and y_proba is None:
        raise DataError("Pass y_pred, y_proba or both to evaluate a classifier.")
    y = as_1d("y_true", y_true)
    if len(y) == 0:
        raise DataError("y_true is empty; evaluate on at least one row.")
    pred = None if y_pred is None else as_1d("y_pred", y_pred, len(y))
    classes = _classes(task, y, pred, labels)
    proba = None if y_proba is None else _proba(task, y_proba, len(y), len(classes))
    if pred is None:
        assert proba is not None
        pred_codes: IntArray = np.argmax(proba, axis=1).astype(np.intp)
    else:
        pred_codes = _codes("y_pred", pred, classes)
    return Encoded(task, classes, _codes("y_true", y, classes), pred_codes, proba)


def _classes(
    task: str, y: npt.NDArray[Any], pred: npt.NDArray[Any] | None, labels: Sequence[Any] | None
) -> npt.NDArray[Any]:
    if labels is not None:
        classes = np.asarray(labels)
        if len(np.unique(classes)) != len(classes):
            raise DataError(f"labels={list(classes)} has duplicates; list each class once.")
    else:
        classes = np.unique(y if pred is None else np.concatenate([y, pred]))
    want = "exactly 2" if task == BINARY else "at least 3"
    if (task == BINARY) != (len(classes) == 2) or len(classes) < 2:
        raise DataError(
            f"{task} needs {want} classes, found {len(classes)} ({list(classes)[:10]}); "
            "pass labels=[...] with every class in probability-column order, or fix task."
        )
    return classes


def _codes(name: str, values: npt.NDArray[Any], classes: npt.NDArray[Any]) -> IntArray:
    order = np.argsort(classes, kind="stable")
    position = np.searchsorted(classes[order], values).clip(0, len(classes) - 1)
    codes = order[position]
    unknown = classes[codes] != values
    if unknown.any():
        raise DataError(
            f"{name} holds {values[unknown][0]!r}, which is not among labels {list(classes)}; "
            "add it to labels."
        )
    result: IntArray = codes.astype(np.intp)
    return result


def _proba(task: str, y_proba: Any, n: int, k: int) -> FloatArray:
    proba = np.asarray(y_proba, dtype=np.float64)
    _check_missing("y_proba", proba.ravel())
    if proba.ndim == 1 and task == BINARY:
        proba = np.column_stack([1.0 - proba, proba])
    if proba.ndim != 2 or proba.shape != (n, k):
        raise DataError(
            f"y_proba has shape {proba.shape}; expected ({n}, {k}): one row per y_true row and "
            "one column per class (for binary, a 1-D array of positive-class probabilities)."
        )
    if proba.min() < 0 or proba.max() > 1:
        raise DataError("y_proba has values outside [0, 1]; pass probabilities, not scores.")
    if np.abs(proba.sum(axis=1) - 1.0).max() > _PROBA_TOLERANCE:
        raise DataError("y_proba rows must sum to 1; pass predict_proba output, not scores.")
    # Float32 outputs sum to 1 only to ~1e-7; rescale so scikit-learn's stricter check passes.
    result: FloatArray = proba / proba.sum(axis=1, keepdims=True)
    return result


def row_log_loss(e: Encoded) -> FloatArray:
    """Each row's log loss, clipped like ``sklearn.metrics.log_loss``; its mean is log_loss."""
    proba = e.require_proba("log_loss")
    eps = np.finfo(np.float64).eps
    loss: FloatArray = -np.log(np.clip(proba[np.arange(len(e.y)), e.y], eps, 1 - eps))
    return loss


def row_brier(e: Encoded) -> FloatArray:
    """Each row's Brier score (binary: ``(p - y)**2``; multiclass: summed over classes)."""
    proba = e.require_proba("brier")
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(e.y)), e.y] = 1.0
    if e.task == BINARY:
        return np.asarray((proba[:, 1] - onehot[:, 1]) ** 2, dtype=np.float64)
    return np.asarray(np.sum((proba - onehot) ** 2, axis=1), dtype=np.float64)


def require_all_classes(encoded: Encoded, metric: str) -> None:
    """Probability metrics (ROC AUC, PR AUC) need every class present in ``y_true``."""
    counts = np.bincount(encoded.y, minlength=encoded.k)
    missing = [encoded.classes[i] for i in np.flatnonzero(counts == 0)]
    if missing:
        raise DataError(
            f"{metric} is undefined: y_true holds no rows of class {missing[0]!r} "
            f"(classes {list(encoded.classes)}); evaluate on a larger or stratified split, "
            "or pass y_proba=None to skip probability metrics."
        )
