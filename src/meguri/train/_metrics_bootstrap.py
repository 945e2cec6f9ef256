"""Bootstrap confidence intervals, vectorised over resamples.

Each resample is a row of a count matrix ``C`` (resamples x rows: how often each row was drawn),
so every metric becomes matrix algebra over all resamples at once: confusion matrices are
``C @ onehot(true, pred)``, mean losses ``C @ loss / n``, ROC AUC the rank (Mann-Whitney) formula
over rows sorted once by score, average precision the same cumulative counts in descending
order, the median absolute error a weighted median over errors sorted once. Values equal
scikit-learn's functions on the resampled rows (tested). Classification resamples are
stratified by class, so each keeps the class counts of the original and every class is present.
Intervals are percentile intervals. Resamples are drawn in chunks that keep ``C`` near
``_CHUNK_CELLS`` cells; the result depends only on the inputs, ``n`` and ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from meguri.errors import DataError
from meguri.train._evaluate import bin_ids, calibration_inputs
from meguri.train._metrics import (
    BINARY,
    Encoded,
    FloatArray,
    IntArray,
    check_task,
    encode,
    regression_inputs,
    require_all_classes,
    row_brier,
    row_log_loss,
)

_CHUNK_CELLS = 4_000_000
LABEL_METRICS = {
    BINARY: ("accuracy", "balanced_accuracy", "precision", "recall", "f1"),
    "multiclass_classification": (
        "accuracy",
        "balanced_accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
    ),
}
PROBA_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece")
REGRESSION_METRICS = ("mae", "rmse", "r2", "mape", "median_ae")


def bootstrap_ci(
    task: str,
    y_true: Any,
    y_pred: Any = None,
    y_proba: Any = None,
    metrics: Sequence[str] | None = None,
    n: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    labels: Sequence[Any] | None = None,
) -> dict[str, tuple[float, float]]:
    """``{metric: (low, high)}``, the ``1 - alpha`` percentile interval over ``n`` resamples.

    ``metrics`` defaults to every metric :func:`~meguri.train.evaluate` gives for these inputs.
    """
    if not 0 < alpha < 1:
        raise DataError(f"alpha={alpha} must lie between 0 and 1 (0.05 gives 95% intervals).")
    values = bootstrap_distribution(
        task, y_true, y_pred, y_proba, metrics=metrics, n=n, seed=seed, labels=labels
    )
    return {
        name: (float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2)))
        for name, v in values.items()
    }


def bootstrap_distribution(
    task: str,
    y_true: Any,
    y_pred: Any = None,
    y_proba: Any = None,
    *,
    metrics: Sequence[str] | None = None,
    n: int = 1000,
    seed: int = 0,
    labels: Sequence[Any] | None = None,
) -> dict[str, FloatArray]:
    """Each metric's value on each of ``n`` resamples (arrays of length ``n``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"n={n!r} must be a positive number of resamples (e.g. 1000).")
    if check_task(task) == "regression":
        y, pred = regression_inputs(y_true, y_pred)
        kernel = _regression_kernel(y, pred, _wanted(metrics, REGRESSION_METRICS, task))
        strata = np.zeros(len(y), dtype=np.intp)
    else:
        e = encode(task, y_true, y_pred, y_proba, labels)
        kernel = _classification_kernel(e, _classification_metrics(e, metrics))
        strata = e.y
    chunks = [kernel(_counts(idx, len(strata))) for idx in resample_indices(strata, n, seed)]
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def resample_indices(strata: IntArray, n: int, seed: int) -> Iterator[IntArray]:
    """Chunks of resampled row indices (resamples x rows), stratified by ``strata`` codes."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    size = max(1, _CHUNK_CELLS // len(strata))
    for start in range(0, n, size):
        rows = min(size, n - start)
        yield np.concatenate([g[rng.integers(0, len(g), (rows, len(g)))] for g in groups], axis=1)


def _counts(idx: IntArray, n_rows: int) -> FloatArray:
    offsets = (np.arange(idx.shape[0]) * n_rows)[:, None]
    flat = np.bincount((idx + offsets).ravel(), minlength=idx.shape[0] * n_rows)
    return flat.reshape(idx.shape[0], n_rows).astype(np.float64)


def _wanted(metrics: Sequence[str] | None, known: Sequence[str], task: str) -> list[str]:
    if metrics is None:
        return list(known)
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise DataError(
            f"metrics: {unknown[0]!r} has no bootstrap for {task}; use some of {', '.join(known)}."
        )
    return list(metrics)


def _classification_metrics(e: Encoded, metrics: Sequence[str] | None) -> list[str]:
    if metrics is None:
        metrics = LABEL_METRICS[e.task] + (PROBA_METRICS if e.proba is not None else ())
    wanted = _wanted(metrics, LABEL_METRICS[e.task] + PROBA_METRICS, e.task)
    for name in set(wanted) & set(PROBA_METRICS):
        e.require_proba(name)
        require_all_classes(e, name)
    return wanted


# -- classification -----------------------------------------------------------------------------

Kernel = Callable[[FloatArray], dict[str, FloatArray]]


def _group_sums(counts: FloatArray, codes: IntArray, width: int, weights: FloatArray) -> FloatArray:
    """``out[b, c]``: the sum of ``counts[b, i] * weights[i]`` over rows with ``codes[i] == c``."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    out = np.zeros((counts.shape[0], width))
    out[:, sorted_codes[starts]] = np.add.reduceat(
        counts[:, order] * weights[order], starts, axis=1
    )
    return out


def _classification_kernel(e: Encoded, wanted: list[str]) -> Kernel:
    pairs, ones = e.y * e.k + e.pred, np.ones(len(e.y))
    losses = {"log_loss": row_log_loss, "brier": row_brier}
    per_row = {m: fn(e) for m, fn in losses.items() if m in wanted}
    ranks = _rank_sets(e) if {"roc_auc", "pr_auc"} & set(wanted) else []

    def kernel(counts: FloatArray) -> dict[str, FloatArray]:
        total = counts.sum(axis=1)
        cm = _group_sums(counts, pairs, e.k * e.k, ones).reshape(-1, e.k, e.k)
        values = _from_confusion(cm, total, e.task == BINARY)
        values |= {m: counts @ loss / total for m, loss in per_row.items()}
        if ranks:
            curves = [_rank_metrics(counts, r) for r in ranks]
            values["roc_auc"] = np.mean([c[0] for c in curves], axis=0)
            values["pr_auc"] = np.mean([c[1] for c in curves], axis=0)
        if "ece" in wanted:
            values["ece"] = _ece(e, counts, total)
        return {m: values[m] for m in wanted}

    return kernel


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    """``num / den``, 0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _from_confusion(cm: FloatArray, total: FloatArray, binary: bool) -> dict[str, FloatArray]:
    tp = np.diagonal(cm, axis1=1, axis2=2)
    true_n, pred_n = cm.sum(axis=2), cm.sum(axis=1)
    recall, precision = _ratio(tp, true_n), _ratio(tp, pred_n)
    f1 = _ratio(2 * tp, true_n + pred_n)
    present = true_n > 0
    values = {
        "accuracy": tp.sum(axis=1) / total,
        "balanced_accuracy": (recall * present).sum(axis=1) / present.sum(axis=1),
    }
    if binary:
        return values | {"precision": precision[:, 1], "recall": recall[:, 1], "f1": f1[:, 1]}
    weights = true_n / total[:, None]
    for name, per_class in (("precision", precision), ("recall", recall), ("f1", f1)):
        values[f"{name}_macro"] = per_class.mean(axis=1)
        values[f"{name}_weighted"] = (per_class * weights).sum(axis=1)
    return values


RankSet = tuple[IntArray, FloatArray, IntArray]
"""(row order by ascending score, 1.0 where the row is positive, start of each tied group)."""


def _rank_sets(e: Encoded) -> list[RankSet]:
    proba = e.require_proba("roc_auc")
    columns = [1] if e.task == BINARY else range(e.k)
    sets = []
    for c in columns:
        order = np.argsort(proba[:, c], kind="stable")
        score = proba[order, c]
        starts = np.flatnonzero(np.r_[True, score[1:] != score[:-1]])
        sets.append((order, (e.y[order] == c).astype(np.float64), starts))
    return sets


def _rank_metrics(counts: FloatArray, rank_set: RankSet) -> tuple[FloatArray, FloatArray]:
    """(ROC AUC, average precision) of one positive class on every resample.

    Per tied-score group in ascending order: ``pos``/``neg`` drawn counts. AUC counts, for each
    positive, the negatives below it (ties count half); AP sums each group's precision at its
    threshold (the rows at or above it), weighted by the group's share of positives.
    """
    order, positive, starts = rank_set
    pos = counts[:, order]
    neg = pos.copy()
    pos *= positive
    neg -= pos
    if len(starts) < len(order):
        pos, neg = np.add.reduceat(pos, starts, axis=1), np.add.reduceat(neg, starts, axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    neg_below = np.cumsum(neg, axis=1)
    neg_below -= 0.5 * neg
    auc = np.einsum("ij,ij->i", pos, neg_below) / (n_pos * n_neg)
    pos_below = np.cumsum(pos, axis=1)
    pos_below -= pos
    tp = n_pos[:, None] - pos_below
    at_or_above = tp + (n_neg[:, None] - neg_below + 0.5 * neg)
    precision = np.divide(tp, at_or_above, out=np.zeros_like(tp), where=pos > 0)
    ap = np.einsum("ij,ij->i", pos, precision) / n_pos
    return auc, ap


def _ece(e: Encoded, counts: FloatArray, total: FloatArray) -> FloatArray:
    confidence, outcome = calibration_inputs(e)
    ids = bin_ids(confidence)
    gap = _group_sums(counts, ids, int(ids.max()) + 1, outcome - confidence)
    result: FloatArray = np.abs(gap).sum(axis=1) / total
    return result


# -- regression ---------------------------------------------------------------------------------


def _regression_kernel(y: FloatArray, pred: FloatArray, wanted: list[str]) -> Kernel:
    error = pred - y
    centred = y - y.mean()
    nonzero = y != 0
    if "mape" in wanted and not nonzero.any():
        raise DataError("mape is undefined: every y_true is 0; leave mape out of metrics.")
    ape = np.where(nonzero, np.abs(error) / np.where(nonzero, np.abs(y), 1.0), 0.0)
    order = np.argsort(np.abs(error), kind="stable")

    def kernel(counts: FloatArray) -> dict[str, FloatArray]:
        total = counts.sum(axis=1)
        sse = counts @ error**2
        sst = counts @ centred**2 - (counts @ centred) ** 2 / total
        values = {
            "mae": counts @ np.abs(error) / total,
            "rmse": np.sqrt(sse / total),
            "r2": _r2(sse, sst),
            "mape": counts @ ape / (counts @ nonzero.astype(np.float64)),
            "median_ae": _weighted_median(counts[:, order], np.abs(error)[order], total),
        }
        return {m: values[m] for m in wanted}

    return kernel


def _r2(sse: FloatArray, sst: FloatArray) -> FloatArray:
    """1 - SSE/SST; like scikit-learn, 1 for a perfect fit and 0 when y_true is constant."""
    constant = sst <= 1e-12 * np.maximum(sse, 1.0)
    r2 = 1.0 - sse / np.where(constant, 1.0, sst)
    return np.where(constant, np.where(sse == 0, 1.0, 0.0), r2)


def _weighted_median(
    counts: FloatArray, sorted_values: npt.NDArray[np.float64], total: FloatArray
) -> FloatArray:
    """The median of each resample: the mean of the two middle draws (``np.median``)."""
    cumulative = np.cumsum(counts, axis=1)
    low = (cumulative <= ((total - 1) // 2)[:, None]).sum(axis=1)
    high = (cumulative <= (total // 2)[:, None]).sum(axis=1)
    result: FloatArray = (sorted_values[low] + sorted_values[high]) / 2
    return result
