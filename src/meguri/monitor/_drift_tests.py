"""The drift statistics, each from the stored reference and the current window's values.

The reference side is a quantile function given by knots ``(levels, values)``, piecewise
linear in between (:meth:`meguri.data._reference.ColumnReference.knots`: exact steps where the
value counts were kept, the quantile sketch otherwise), or aligned value counts. The current
side is the window's present values sorted once, or its value counts. Everything here is
numpy over whole columns (the Wasserstein integral in blocks, to bound memory); scipy gives
the distributions of the test statistics.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import stats  # type: ignore[import-untyped]
from scipy.spatial import distance  # type: ignore[import-untyped]

__all__ = [
    "PSI_EPSILON",
    "cdf",
    "chisquare_p",
    "hellinger",
    "jensenshannon",
    "kl_div",
    "knot_counts",
    "ks_p",
    "ks_statistic",
    "psi",
    "sturges_edges",
    "wasserstein",
    "z_p",
]

Array = np.ndarray[Any, Any]
Side = Literal["left", "right"]
PSI_EPSILON = 1e-4
"""Share given to an empty bin in the PSI (the usual convention; Evidently's too)."""
_BLOCK = 1 << 16


def wasserstein(levels: Array, values: Array, current: Array) -> float:
    """``∫ |Q_ref(p) - Q_cur(p)| dp`` over ``[0, 1]``: the first Wasserstein distance
    (``scipy.stats.wasserstein_distance``), with ``Q_ref`` piecewise linear through the knots
    and ``Q_cur`` the step quantile function of the sorted ``current`` values.

    On each current step ``[i/n, (i+1)/n)`` the current quantile is constant and, unless a knot
    falls inside, the reference linear, so the piece integrates in closed form: one vectorised
    pass over the steps (in blocks, to bound memory), then the few steps holding a knot (at most
    two per knot) are integrated again piece by piece and swapped in.
    """
    n = len(current)
    slope = _slopes(levels, values)
    intercept = values - levels * slope
    first = np.clip(np.ceil(levels * n), 0, n).astype(np.int64)  # first step of each segment
    first[0] = 0  # the knots start at level 0
    ends = np.append(first[1:], n)
    knots = np.arange(len(levels))
    total = 0.0
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        counts = np.clip(ends, start, stop) - np.clip(first, start, stop)
        segment = np.repeat(knots, counts)
        total += _steps_area(np.arange(start, stop), segment, intercept, slope, current)
    knotted = np.floor(levels * n).astype(np.int64)
    touched = np.unique(np.clip(np.concatenate([knotted, knotted - 1]), 0, n - 1))
    segment = np.searchsorted(first, touched, side="right") - 1
    total -= _steps_area(touched, segment, intercept, slope, current)
    return (total + _pieces_area(touched, levels, intercept, slope, current)) / n


def _slopes(levels: Array, values: Array) -> Array:
    width = np.diff(levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(width > 0, np.diff(values) / width, 0.0)
    return np.append(slope, 0.0)


def _steps_area(
    steps: Array, segment: Array, intercept: Array, slope: Array, current: Array
) -> float:
    """``n`` times the integral over whole steps, the reference line of ``segment`` on each."""
    n = len(current)
    rise = slope[segment]
    d0 = intercept[segment] + rise * (steps / n) - current[steps]
    return float(_area(d0, d0 + rise / n).sum())


def _pieces_area(
    steps: Array, levels: Array, intercept: Array, slope: Array, current: Array
) -> float:
    """``n`` times the integral over ``steps`` cut at every knot inside them."""
    n = len(current)
    points = np.unique(np.concatenate([steps / n, (steps + 1) / n, levels]))
    left, right = points[:-1], points[1:]
    middle = (left + right) * 0.5
    step = np.minimum((middle * n).astype(np.int64), n - 1)
    keep = np.isin(step, steps)
    left, right, middle, step = left[keep], right[keep], middle[keep], step[keep]
    knot = np.clip(np.searchsorted(levels, middle, side="right") - 1, 0, len(levels) - 1)
    d0 = intercept[knot] + slope[knot] * left - current[step]
    d1 = intercept[knot] + slope[knot] * right - current[step]
    return float(np.dot((right - left) * n, _area(d0, d1)))


def _area(d0: Array, d1: Array) -> Array:
    """Mean of ``|d|`` for ``d`` linear from ``d0`` to ``d1`` (it may cross zero)."""
    a0, a1 = np.abs(d0), np.abs(d1)
    spread = a0 + a1
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(spread > 0, (d0 * d0 + d1 * d1) / (2.0 * spread), 0.0)
    return np.asarray(np.where(d0 * d1 < 0, crossing, spread * 0.5))


def cdf(levels: Array, values: Array, x: Array, *, side: Side = "right") -> Array:
    """The reference CDF at ``x``: ``P(X <= x)`` (``side="right"``) or ``P(X < x)``
    (``"left"``), inverting the piecewise-linear quantile function of the knots (two or more;
    equal values are a step of the CDF, equal levels a flat stretch)."""
    x = np.asarray(x, dtype=np.float64)
    k = np.searchsorted(values, x, side=side) - 1  # the last knot below x (or at it: "right")
    last = len(values) - 1
    kk = np.clip(k, 0, last - 1)
    step = values[kk + 1] - values[kk]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(step > 0, (x - values[kk]) / step, 0.0)
    out = levels[kk] + np.clip(frac, 0.0, 1.0) * (levels[kk + 1] - levels[kk])
    return np.asarray(np.where(k < 0, 0.0, np.where(k >= last, 1.0, out)))


def ks_statistic(levels: Array, values: Array, current: Array) -> float:
    """``sup |F_ref - F_cur|``: both CDFs only change at the current values and the knots,
    linearly or by steps, so the supremum is at one of their one-sided limits."""
    n = len(current)
    points = np.concatenate([current, values])
    gaps = []
    sides: tuple[Side, Side] = ("right", "left")
    for side in sides:
        ref = cdf(levels, values, points, side=side)
        cur = np.searchsorted(current, points, side=side) / n
        gaps.append(np.abs(ref - cur).max())
    return float(max(gaps))


def ks_p(statistic: float, n_reference: int, n_current: int) -> float:
    """scipy ``ks_2samp``'s asymptotic two-sided p-value (what it uses above 10,000 rows)."""
    m, n = sorted([float(n_reference), float(n_current)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(stats.kstwo.sf(statistic, np.round(en)), 0.0, 1.0))


def knot_counts(levels: Array, values: Array, present: int, edges: Array) -> Array:
    """Reference counts in the ``numpy.histogram`` bins of ``edges`` (the last bin closed)."""
    below = cdf(levels, values, edges, side="left")
    below[-1] = cdf(levels, values, edges[-1:], side="right")[0]
    return np.diff(below) * present


def sturges_edges(low: float, high: float, count: int) -> Array:
    """``numpy.histogram_bin_edges(data, "sturges")`` of ``count`` values in ``[low, high]``."""
    bins = int(np.ceil(np.log2(count) + 1.0)) if count > 0 else 1
    if low == high:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


def jensenshannon(reference: Array, current: Array) -> float:
    """Evidently's ``jensenshannon``: scipy's distance (natural log) of the two shares."""
    return float(distance.jensenshannon(reference, current))


def chisquare_p(reference: Array, current: Array) -> float:
    """Evidently's ``chisquare``: observed current counts against the reference counts scaled
    to the current total (``scipy.stats.chisquare``); an unseen category makes p 0."""
    if len(reference) < 2:
        return 1.0
    expected = reference * (current.sum() / reference.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(expected > 0, (current - expected) ** 2 / expected, np.inf)
    terms = np.where((expected == 0) & (current == 0), 0.0, terms)
    return float(stats.chi2.sf(terms.sum(), len(reference) - 1))


def z_p(reference: Array, current: Array) -> float:
    """Evidently's ``z`` test: the share of values other than the first key (``keys`` sorted),
    two-proportion z statistic, ``2 * (1 - Phi(|z|))``; 1 when both hold the same one value."""
    ref_used, cur_used = reference > 0, current > 0
    if ref_used.sum() == 1 and cur_used.sum() == 1 and np.array_equal(ref_used, cur_used):
        return 1.0
    n1, n2 = float(reference.sum()), float(current.sum())
    p1 = float(reference[1:].sum()) / n1
    p2 = float(current[1:].sum()) / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def psi(reference: Array, current: Array) -> float:
    """Population stability index ``Σ (c - r) ln(c / r)`` of the two shares, an empty bin
    counted as :data:`PSI_EPSILON`."""
    r = _shares(reference)
    c = _shares(current)
    r = np.where(r == 0, PSI_EPSILON, r)
    c = np.where(c == 0, PSI_EPSILON, c)
    return float(np.sum((c - r) * np.log(c / r)))


def kl_div(reference: Array, current: Array) -> float:
    """Evidently's ``kl_div``: ``scipy.stats.entropy(ref, cur)`` after its zero filling."""
    return float(stats.entropy(_fill_zeros(_shares(reference)), _fill_zeros(_shares(current))))


def hellinger(reference: Array, current: Array) -> float:
    """Evidently's ``hellinger``: ``sqrt(1 - Σ sqrt(p q))`` of the shares, clipped to [0, 1]."""
    overlap = float(np.sum(np.sqrt(_shares(reference) * _shares(current))))
    return float(np.sqrt(1.0 - np.clip(overlap, 0.0, 1.0)))


def _shares(counts: Array) -> Array:
    total = counts.sum()
    return np.asarray(counts / total if total > 0 else np.zeros_like(counts, dtype=float))


def _fill_zeros(shares: Array) -> Array:
    """Evidently's ``feel_zeroes``: a zero share becomes the smallest non-zero share / 1e6
    when that is at most 1e-4, else 1e-4."""
    nonzero = shares[shares != 0]
    if nonzero.size == 0:
        return shares
    smallest = nonzero.min()
    fill = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return np.where(shares == 0, fill, shares)
