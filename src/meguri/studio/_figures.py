"""Plotly figure specs (plain JSON: ``{"data": [...], "layout": {...}}``) for the pages.

Every name a user chose (a column, a metric, a run) goes through :func:`plot_text`, because
Plotly reads a subset of HTML in titles, legends and tick labels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from meguri.studio._render import plot_text

if TYPE_CHECKING:
    from meguri.data import DatasetProfile
    from meguri.data._profile import ColumnProfile

__all__ = [
    "bar_figure",
    "correlation_figure",
    "layout",
    "lines_figure",
    "profile_figures",
    "time_figure",
]

Figure = dict[str, Any]

#: Profile plots per dataset version page; wider tables show their first columns only.
MAX_PROFILE_PLOTS = 48


def layout(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": plot_text(title), "font": {"size": 14}},
        "margin": {"l": 55, "r": 20, "t": 40, "b": 50},
        "legend": {"orientation": "h", "y": -0.2, "yanchor": "top"},
        **extra,
    }


def finite(value: object) -> float | None:
    """``value`` as a float when it is a finite number, else None (a gap in the line)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# -- data profile ------------------------------------------------------------------------------


def profile_figures(profile: DatasetProfile) -> list[Figure]:
    """One figure per column: its histogram, or its top values."""
    figures = []
    for column in profile.columns[:MAX_PROFILE_PLOTS]:
        figure = _column_figure(column)
        if figure is not None:
            figures.append(figure)
    return figures


def correlation_figure(profile: DatasetProfile) -> Figure | None:
    """The heatmap of the profile's correlations (None under two numeric columns)."""
    corr = profile.correlations
    if len(corr.columns) < 2:
        return None
    names = [plot_text(c) for c in corr.columns]
    data = {
        "type": "heatmap", "x": names, "y": names, "z": [list(r) for r in corr.matrix],
        "zmin": -1, "zmax": 1, "colorscale": "RdBu", "reversescale": True,
    }  # fmt: skip
    size = max(360, 16 * len(names) + 160)
    return {"data": [data], "layout": layout("Correlations (Pearson)", height=size)}


def _column_figure(column: ColumnProfile) -> Figure | None:
    hist = column.numeric.histogram if column.numeric else None
    if hist is not None:
        centres = [(a + b) / 2 for a, b in itertools.pairwise(hist.edges)]
        widths = [b - a for a, b in itertools.pairwise(hist.edges)]
        bar = {"type": "bar", "x": centres, "y": list(hist.counts), "width": widths}
        return {"data": [bar], "layout": layout(column.name, bargap=0.02)}
    if column.top:
        labels = [plot_text(v.value) for v in column.top]
        bar = {"type": "bar", "x": labels, "y": [v.count for v in column.top]}
        return {"data": [bar], "layout": layout(f"{column.name} (top values)")}
    return None


# -- lines and bars ----------------------------------------------------------------------------


def lines_figure(
    title: str,
    series: Iterable[tuple[str, Sequence[float], Sequence[float]]],
    *,
    x_title: str = "step",
    y_title: str = "",
) -> Figure:
    """One line per ``(name, x, y)``."""
    traces = [
        {
            "type": "scatter",
            "mode": "lines+markers" if len(x) <= 60 else "lines",
            "name": plot_text(name),
            "x": list(x),
            "y": [finite(v) for v in y],
        }
        for name, x, y in series
    ]
    axes = {"xaxis": {"title": {"text": x_title}}, "yaxis": {"title": {"text": plot_text(y_title)}}}
    return {"data": traces, "layout": layout(title, **axes)}


def bar_figure(
    title: str, categories: Sequence[str], series: Mapping[str, Sequence[object]]
) -> Figure:
    """Grouped bars: one bar per series for each category."""
    labels = [plot_text(c) for c in categories]
    traces = [
        {"type": "bar", "name": plot_text(name), "x": labels, "y": [finite(v) for v in values]}
        for name, values in series.items()
    ]
    return {"data": traces, "layout": layout(title, barmode="group")}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def time_figure(
    title: str,
    starts: Sequence[float],
    series: Mapping[str, Sequence[object]],
    *,
    y_title: str = "",
    thresholds: Iterable[tuple[float, str]] = (),
) -> Figure:
    """Lines over window start times (UTC), with dashed horizontal ``thresholds``."""
    x = [_iso(s) for s in starts]
    traces = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": plot_text(name),
            "x": x,
            "y": [finite(v) for v in values],
        }
        for name, values in series.items()
    ]
    axes = {
        "xaxis": {"type": "date", "title": {"text": "window start (UTC)"}},
        "yaxis": {"title": {"text": plot_text(y_title)}},
        "margin": {"l": 55, "r": 20, "t": 40, "b": 90},
        "legend": {"orientation": "h", "y": -0.35, "yanchor": "top"},
    }
    figure_layout = layout(title, **axes)
    lines = list(thresholds)
    if lines:
        figure_layout["shapes"] = [_hline(value) for value, _ in lines]
        figure_layout["annotations"] = [_hlabel(value, label) for value, label in lines]
    return {"data": traces, "layout": figure_layout}


def _hline(value: float) -> dict[str, Any]:
    return {
        "type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": value, "y1": value,
        "line": {"dash": "dash", "color": "#cf222e", "width": 1},
    }  # fmt: skip


def _hlabel(value: float, label: str) -> dict[str, Any]:
    return {
        "xref": "paper", "x": 1, "xanchor": "right", "yref": "y", "y": value,
        "yanchor": "bottom", "text": plot_text(label), "showarrow": False,
        "font": {"color": "#cf222e", "size": 11},
    }  # fmt: skip
