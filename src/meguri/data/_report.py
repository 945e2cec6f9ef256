"""A self-contained HTML report of a dataset profile (and optionally its quality report).

The page needs no network: plotly.js is read from the installed ``plotly`` package and
inlined once; each figure is a plain Plotly JSON spec drawn by ``Plotly.newPlot``. Sections:
warnings, a summary table (one row per column), the quality results when given, one plot per
column (histogram or top values) and the correlation heatmap.
"""

from __future__ import annotations

import html
import itertools
from importlib import resources
from typing import Any

import orjson

from meguri.data._profile import ColumnProfile, DatasetProfile, profile_warnings
from meguri.data._quality import QualityReport
from meguri.errors import ConfigError

__all__ = ["plotly_script", "render_profile_html"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
h1{margin-bottom:.2rem} .meta{color:#666;margin-bottom:1.5rem}
table{border-collapse:collapse;font-size:.85rem;margin-bottom:1.5rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th:first-child,td:first-child,td.l{text-align:left}
.warn{color:#9a5b00} .err{color:#b00020} .ok{color:#1b7f3b}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:1rem}
.plot{height:300px}
"""


def plotly_script() -> str:
    """plotly.js from the installed ``plotly`` package, for inlining into a self-contained page
    (every HTML report uses it, so no report needs the network)."""
    try:
        path = resources.files("plotly") / "package_data" / "plotly.min.js"
        return path.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise ConfigError(
            f"HTML reports need plotly.js from the plotly package ({err}); "
            "install it: pip install plotly"
        ) from None


def render_profile_html(
    profile: DatasetProfile, title: str, *, quality: QualityReport | None = None
) -> str:
    """The whole report as one HTML page (plotly.js inlined; about 4.5 MB)."""
    figures = _figures(profile)
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<div class="meta">{profile.rows} rows · {len(profile.columns)} columns'
        + (f" · target {_e(profile.target)}" if profile.target else "")
        + "</div>",
        _warnings_html(profile),
        _summary_html(profile),
        _quality_html(quality) if quality is not None else "",
        "<h2>Columns</h2>",
        '<div class="grid">'
        + "".join(f'<div class="plot" id="{f["id"]}"></div>' for f in figures if f["id"] != _HEAT)
        + "</div>",
        _heatmap_div(figures),
    ]
    return _page(title, "\n".join(body), figures)


_HEAT = "correlations"


def _heatmap_div(figures: list[dict[str, Any]]) -> str:
    heat = [f for f in figures if f["id"] == _HEAT]
    if not heat:
        return ""
    height = heat[0]["layout"]["height"]
    return f'<h2>Correlations</h2><div id="{_HEAT}" style="height:{height}px"></div>'


def _page(title: str, body: str, figures: list[dict[str, Any]]) -> str:
    specs = orjson.dumps(figures).decode().replace("</", "<\\/")
    draw = (
        f"const figs={specs};for(const f of figs){{Plotly.newPlot(f.id,f.data,f.layout,"
        "{displayModeBar:false,responsive:true});}"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style>"
        f"<script>{plotly_script()}</script></head><body>{body}<script>{draw}</script>"
        "</body></html>"
    )


def _e(text: object) -> str:
    return html.escape(str(text))


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _warnings_html(profile: DatasetProfile) -> str:
    found = profile_warnings(profile)
    if not found:
        return '<h2>Warnings</h2><p class="ok">None.</p>'
    items = "".join(f'<li class="warn">{_e(w.message)}</li>' for w in found)
    return f"<h2>Warnings ({len(found)})</h2><ul>{items}</ul>"


_SUMMARY_HEAD = (
    "column",
    "type",
    "count",
    "missing",
    "distinct",
    "min",
    "max",
    "mean",
    "std",
    "median",
    "top value",
)


def _summary_html(profile: DatasetProfile) -> str:
    head = "".join(f"<th>{h}</th>" for h in _SUMMARY_HEAD)
    rows = "".join(_summary_row(c, profile.rows) for c in profile.columns)
    return f"<h2>Summary</h2><table><tr>{head}</tr>{rows}</table>"


def _summary_row(column: ColumnProfile, rows: int) -> str:
    share = f"{column.missing} ({column.missing / rows:.1%})" if rows else "0"
    low, high, mean, std, median = ("",) * 5
    if column.numeric is not None:
        n = column.numeric
        low, high, mean, std = _num(n.min), _num(n.max), _num(n.mean), _num(n.std)
        median = _num(n.quantiles.get("p50"))
    elif column.temporal is not None:
        low, high = column.temporal.min or "", column.temporal.max or ""
    top = f"{column.top[0].value} ({column.top[0].count})" if column.top else ""
    cells = [column.dtype, column.count, share, column.distinct, low, high, mean, std, median]
    tds = "".join(f"<td>{_e(c)}</td>" for c in cells)
    return f'<tr><td class="l">{_e(column.name)}</td>{tds}<td class="l">{_e(top)}</td></tr>'


def _quality_html(report: QualityReport) -> str:
    rows = []
    for r in report.results:
        css = "ok" if r.passed else ("err" if r.severity == "error" else "warn")
        state = "passed" if r.passed else r.severity
        rows.append(
            f'<tr><td class="l">{_e(r.name)}</td><td class="l {css}">{state}</td>'
            f"<td>{r.failing_rows}</td><td class=l>{_e(r.message)}</td></tr>"
        )
    head = "<tr><th>check</th><th>result</th><th>rows</th><th>message</th></tr>"
    failed = len(report.errors) + len(report.warnings)
    return f"<h2>Quality ({failed} failed)</h2><table>{head}{''.join(rows)}</table>"


# -- figures (plain Plotly JSON) ---------------------------------------------------------------


def _figures(profile: DatasetProfile) -> list[dict[str, Any]]:
    figures = []
    for i, column in enumerate(profile.columns):
        figure = _column_figure(column)
        if figure is not None:
            figures.append({"id": f"col{i}", **figure})
    heatmap = _heatmap(profile)
    if heatmap is not None:
        figures.append({"id": _HEAT, **heatmap})
    return figures


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": title}, "margin": {"l": 50, "r": 20, "t": 40, "b": 60}, **extra}


def _column_figure(column: ColumnProfile) -> dict[str, Any] | None:
    hist = column.numeric.histogram if column.numeric else None
    if hist is not None:
        edges = hist.edges
        centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        widths = [b - a for a, b in itertools.pairwise(edges)]
        bar = {"type": "bar", "x": centres, "y": list(hist.counts), "width": widths}
        return {"data": [bar], "layout": _layout(column.name, bargap=0.02)}
    if column.top:
        labels = [str(v.value) for v in column.top]
        bar = {"type": "bar", "x": labels, "y": [v.count for v in column.top]}
        return {"data": [bar], "layout": _layout(f"{column.name} (top values)")}
    return None


def _heatmap(profile: DatasetProfile) -> dict[str, Any] | None:
    corr = profile.correlations
    if len(corr.columns) < 2:
        return None
    names = list(corr.columns)
    data = {
        "type": "heatmap",
        "z": [list(row) for row in corr.matrix],
        "x": names,
        "y": names,
        "zmin": -1,
        "zmax": 1,
        "colorscale": "RdBu",
    }
    size = max(400, 18 * len(names) + 150)
    layout = _layout("Pearson correlations", height=size, yaxis={"autorange": "reversed"})
    return {"data": [data], "layout": layout}
