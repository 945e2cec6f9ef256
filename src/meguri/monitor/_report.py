"""The monitoring report over a range of monitor windows: one HTML page for people, one JSON
document for machines, both built from the same windows and alerts.

The page needs no network (plotly.js is inlined from the installed ``plotly`` package, as the
data profile report does). Sections, in order: summary (range, rows, model versions, the latest
window's drift verdict, firing alerts), drift per column over time, share of drifted columns,
distributions reference vs current in the latest window, prediction drift, data quality,
accuracy with labelled rows and the production success criteria, latency, throughput and
errors, and the alerts table.

Everything a user named (columns, rules, environment, model names) is escaped: with
``html.escape`` in the page's markup and in Plotly text (which reads a subset of HTML), and
the figure specs travel as JSON in a ``<script type="application/json">`` element with ``<``,
``>`` and ``&`` written as ``\\u003c``-style escapes, so no ``</script>`` or ``<!--`` can end or
bend the element. Each spec carries a ``key`` (e.g. ``drift.columns``, ``distribution.age``)
and a ``section``, which is what tests and other tools look for.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from meguri.data._report import plotly_script
from meguri.spec._criteria import compare

if TYPE_CHECKING:
    from meguri.spec import SuccessCriterion
    from meguri.store.metadata import Alert, MonitorWindow

__all__ = ["monitor_json", "render_monitor_html"]


_QUALITY = (
    "quality.missing_rate",
    "quality.out_of_range_rate",
    "quality.unseen_category_rate",
    "quality.type_error_rate",
)
_LATENCY = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")


# -- JSON for machines ---------------------------------------------------------------------------


def monitor_json(
    windows: Sequence[MonitorWindow],
    alerts: Sequence[Alert],
    *,
    project: str,
    environment: str,
    criteria: Sequence[SuccessCriterion] = (),
) -> dict[str, Any]:
    """The report's facts as plain JSON-able data: summary, windows (time-ordered), alerts and
    the criteria, with non-finite numbers as ``None``."""
    ordered = _ordered(windows)
    document = {
        "project": project,
        "environment": environment,
        "summary": _summary(ordered, alerts, criteria),
        "windows": [_fields(w, _WINDOW_FIELDS) for w in ordered],
        "alerts": [_fields(a, _ALERT_FIELDS) for a in _ordered_alerts(alerts)],
        "criteria": [_fields(c, _CRITERION_FIELDS) for c in criteria],
    }
    plain: dict[str, Any] = orjson.loads(
        orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    )
    return plain


def _ordered(windows: Sequence[MonitorWindow]) -> list[MonitorWindow]:
    return sorted(windows, key=lambda w: (w.start, w.end))


def _ordered_alerts(alerts: Sequence[Alert]) -> list[Alert]:
    return sorted(alerts, key=lambda a: (a.state != "firing", -a.started_at))


_WINDOW_FIELDS = ("id", "start", "end", "rows", "model_versions", "figures", "details")
_ALERT_FIELDS = ("rule", "severity", "state", "value", "started_at", "resolved_at", "detail")
_CRITERION_FIELDS = ("id", "metric", "comparison", "threshold")


def _fields(item: object, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(item, name) for name in names}


def _summary(
    windows: Sequence[MonitorWindow], alerts: Sequence[Alert], criteria: Sequence[SuccessCriterion]
) -> dict[str, Any]:
    versions: dict[str, int] = {}
    for w in windows:
        for name, rows in w.model_versions.items():
            versions[name] = versions.get(name, 0) + rows
    latest = windows[-1] if windows else None
    return {
        "windows": len(windows),
        "start": windows[0].start if windows else None,
        "end": max(w.end for w in windows) if windows else None,
        "rows": sum(w.rows for w in windows),
        "labels": sum(int(_finite(w.figures.get("labels")) or 0) for w in windows),
        "model_versions": versions,
        "latest_window": latest.id if latest else None,
        "drift": _verdict(latest),
        "criteria": _criteria_outcomes(windows, criteria),
        "firing": [a.rule for a in _ordered_alerts(alerts) if a.state == "firing"],
    }


def _verdict(window: MonitorWindow | None) -> dict[str, Any] | None:
    """The window's drift verdict; ``{"skipped": why}`` where the window computed none."""
    skipped = window.details.get("drift") if window is not None else None
    if isinstance(skipped, Mapping) and "skipped" in skipped:
        return {"skipped": str(skipped["skipped"])}
    drift = _drift(window) if window is not None else None
    if drift is None:
        return None
    columns = drift.get("columns") or []
    return {
        "dataset_drift": bool(drift.get("dataset_drift")),
        "share": drift.get("share"),
        "drift_share_threshold": drift.get("drift_share_threshold"),
        "columns": len(columns),
        "drifted": [c["name"] for c in columns if c.get("drifted")],
        "prediction_drifted": bool((drift.get("prediction") or {}).get("drifted")),
    }


def _criteria_outcomes(
    windows: Sequence[MonitorWindow], criteria: Sequence[SuccessCriterion]
) -> list[dict[str, Any]]:
    """Each criterion on the latest window that has a value for its figure (accuracy metrics
    once labels arrive; ``drift_share`` and system figures from every window)."""
    from meguri.monitor._windows import criterion_figure

    outcomes = []
    for c in criteria:
        key = criterion_figure(c.metric)
        measured = [w for w in windows if _finite(w.figures.get(key)) is not None]
        value = _finite(measured[-1].figures.get(key)) if measured else None
        passed = None if value is None else compare(value, c.comparison, c.threshold)
        window = measured[-1].id if measured else None
        outcomes.append({"id": c.id, "value": value, "passed": passed, "window": window})
    return outcomes


def _drift(window: MonitorWindow) -> Mapping[str, Any] | None:
    """The window's drift report (``None`` where it has none or skipped it: too few rows)."""
    drift = window.details.get("drift")
    return drift if isinstance(drift, Mapping) and "columns" in drift else None


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# -- the HTML page -------------------------------------------------------------------------------


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1400px}
h1{margin-bottom:.2rem} .note{color:#666}
table{border-collapse:collapse;font-size:.85rem;margin-bottom:1.5rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:left;vertical-align:top}
.err{color:#b00020} .ok{color:#1b7f3b}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:1rem}
.plot{height:380px}
"""
_DRAW = (
    "const figs=JSON.parse(document.getElementById('meguri-figures').textContent);"
    "for(const f of figs){Plotly.newPlot(f.id,f.data,f.layout,"
    "{displayModeBar:false,responsive:true});}"
)
_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


@dataclass
class _Figures:
    """The page's figures in order; each call to :meth:`add` returns the div that draws it."""

    specs: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self, section: str, key: str, data: list[dict[str, Any]], layout: dict[str, Any]
    ) -> str:
        fig_id = f"fig-{len(self.specs)}"
        spec = {"id": fig_id, "key": key, "section": section, "data": data, "layout": layout}
        self.specs.append(spec)
        style = f' style="height:{int(layout["height"])}px"' if "height" in layout else ""
        return f'<div class="plot" id="{fig_id}"{style}></div>'


def render_monitor_html(
    windows: Sequence[MonitorWindow],
    alerts: Sequence[Alert],
    *,
    project: str,
    environment: str,
    criteria: Sequence[SuccessCriterion] = (),
) -> str:
    """The whole report as one self-contained HTML page (plotly.js inlined, about 4.8 MB; a
    range without windows gives a short page that says so, without plotly.js). ``criteria``
    are the success criteria measured on production (``spec.criteria_on("production")``):
    drawn on the accuracy chart and checked against the latest labelled window."""
    ordered = _ordered(windows)
    summary = _summary(ordered, alerts, criteria)
    title = f"Monitoring: {project} · {environment}"
    parts = [f"<h1>{_e(title)}</h1>", _summary_html(summary, criteria)]
    figures = _Figures()
    if ordered:
        parts += _chart_sections(ordered, figures, criteria)
    parts.append(_alerts_html(_ordered_alerts(alerts)))
    return _page(title, "\n".join(parts), figures.specs)


def _chart_sections(
    windows: list[MonitorWindow], figures: _Figures, criteria: Sequence[SuccessCriterion]
) -> list[str]:
    x = [_iso(w.start) for w in windows]
    return [
        _section("drift-columns", "Drift per column", _drift_columns(windows, x, figures)),
        _section("drift-share", "Share of drifted columns", _drift_share(windows, x, figures)),
        _section(
            "distributions", "Distributions in the latest window", _distributions(windows, figures)
        ),
        _section("prediction", "Prediction drift", _prediction(windows, x, figures)),
        _section("quality", "Data quality", _quality(windows, x, figures)),
        _section("accuracy", "Accuracy", _accuracy(windows, x, figures, criteria)),
        _section("system", "Latency, throughput and errors", _system(windows, x, figures)),
    ]


def _page(title: str, body: str, specs: list[dict[str, Any]]) -> str:
    scripts = ""
    if specs:
        payload = _script_json(specs)
        scripts = (
            f'<script type="application/json" id="meguri-figures">{payload}</script>'
            f"<script>{_DRAW}</script>"
        )
    head_js = f"<script>{plotly_script()}</script>" if specs else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style>{head_js}</head>"
        f"<body>{body}{scripts}</body></html>"
    )


def _script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` left to end it."""
    text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    for raw, escaped in _ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


def _section(anchor: str, title: str, content: str) -> str:
    return f'<section id="{anchor}"><h2>{title}</h2>{content}</section>'


def _e(text: object) -> str:
    return html.escape(str(text))


def _t(text: object) -> str:
    """Text for Plotly, which reads a subset of HTML and decodes ``&lt;``, ``&gt;``, ``&amp;``."""
    return html.escape(str(text), quote=False)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _when(epoch: float | None) -> str:
    return (
        "" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")
    )


def _num(value: object) -> str:
    number = _finite(value)
    return "" if number is None else f"{number:.4g}"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _summary_html(summary: Mapping[str, Any], criteria: Sequence[SuccessCriterion]) -> str:
    if not summary["windows"]:
        return _section(
            "summary", "Summary", _note("No monitor windows in this range: nothing to chart yet.")
        )
    versions = ", ".join(f"{_e(k)} ({v} rows)" for k, v in summary["model_versions"].items())
    firing = summary["firing"]
    rows = [
        ("range", f"{_when(summary['start'])} to {_when(summary['end'])}"),
        ("windows", str(summary["windows"])),
        ("rows", f"{summary['rows']} ({summary['labels']} labelled)"),
        ("model versions", versions or "none"),
        ("latest window", _e(summary["latest_window"])),
        ("drift (latest window)", _verdict_html(summary["drift"])),
        ("firing alerts", _e(", ".join(firing)) if firing else '<span class="ok">none</span>'),
    ]
    rows += [_criterion_row(c, o) for c, o in zip(criteria, summary["criteria"], strict=True)]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return _section("summary", "Summary", f"<table>{table}</table>")


def _verdict_html(verdict: Mapping[str, Any] | None) -> str:
    if verdict is None:
        return '<span class="note">not computed</span>'
    if "skipped" in verdict:
        return f'<span class="note">skipped: {_e(verdict["skipped"])}</span>'
    names = ", ".join(verdict["drifted"]) or "none"
    count = f"{len(verdict['drifted'])} of {verdict['columns']} columns drifted"
    share = f"{count} (share {_num(verdict['share'])}): {_e(names)}"
    limit = f" (dataset drift at {_num(verdict['drift_share_threshold'])})"
    if verdict["dataset_drift"]:
        return f'<span class="err">dataset drift</span>: {share}{limit}'
    return f'<span class="ok">no dataset drift</span>: {share}{limit}'


def _criterion_row(criterion: SuccessCriterion, outcome: Mapping[str, Any]) -> tuple[str, str]:
    rule = f"{criterion.metric} {criterion.comparison} {criterion.threshold:g}"
    if outcome["passed"] is None:
        state = '<span class="note">not measured yet (accuracy needs labels)</span>'
    else:
        css, word = ("ok", "pass") if outcome["passed"] else ("err", "fail")
        state = f'<span class="{css}">{word}</span> at {_num(outcome["value"])}'
    return f"criterion {_e(criterion.id)}", f"{_e(rule)}: {state}"


def _alerts_html(alerts: Sequence[Alert]) -> str:
    if not alerts:
        return _section("alerts", "Alerts", _note("No alerts in this range."))
    head = "".join(
        f"<th>{h}</th>"
        for h in ("rule", "severity", "state", "value", "started", "resolved", "detail")
    )
    rows = []
    for a in alerts:
        css = "err" if a.state == "firing" else "ok"
        detail = a.detail if isinstance(a.detail, str) else orjson.dumps(a.detail).decode()
        cells = (
            f"<td>{_e(a.rule)}</td><td>{_e(a.severity)}</td>"
            f'<td class="{css}">{_e(a.state)}</td><td>{_num(a.value)}</td>'
            f"<td>{_when(a.started_at)}</td><td>{_when(a.resolved_at)}</td><td>{_e(detail)}</td>"
        )
        rows.append(f"<tr>{cells}</tr>")
    return _section(
        "alerts", f"Alerts ({len(alerts)})", f"<table><tr>{head}</tr>{''.join(rows)}</table>"
    )


# -- figures -------------------------------------------------------------------------------------


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": _t(title)},
        "margin": {"l": 60, "r": 60, "t": 50, "b": 100},
        "legend": {"orientation": "h", "y": -0.3, "yanchor": "top"},
        **extra,
    }


def _time_layout(title: str, y: str, **extra: Any) -> dict[str, Any]:
    axis = {"title": {"text": "window start (UTC)"}, "type": "date"}
    return _layout(title, xaxis=axis, yaxis={"title": {"text": y}}, **extra)


def _series(windows: Sequence[MonitorWindow], key: str) -> list[float | None]:
    return [_finite(w.figures.get(key)) for w in windows]


def _line(windows: Sequence[MonitorWindow], x: list[str], key: str, name: str) -> dict[str, Any]:
    y = _series(windows, key)
    return {"type": "scatter", "mode": "lines+markers", "x": x, "y": y, "name": _t(name)}


def _keys(windows: Iterable[MonitorWindow], prefix: str) -> list[str]:
    """Figure names under ``prefix`` in any window, in order of first appearance."""
    seen: dict[str, None] = {}
    for w in windows:
        seen.update((k, None) for k in w.figures if k.startswith(prefix))
    return list(seen)


def _hline(
    value: float, label: str, color: str = "#b00020"
) -> tuple[dict[str, Any], dict[str, Any]]:
    shape = {
        "type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": value, "y1": value,
        "line": {"dash": "dash", "color": color, "width": 1},
    }  # fmt: skip
    note = {
        "xref": "paper", "x": 1, "xanchor": "right", "yref": "y", "y": value, "yanchor": "bottom",
        "text": _t(label), "showarrow": False, "font": {"color": color, "size": 11},
    }  # fmt: skip
    return shape, note


def _with_lines(layout: dict[str, Any], lines: Iterable[tuple[float, str]]) -> dict[str, Any]:
    pairs = [_hline(v, label) for v, label in lines]
    layout["shapes"] = [s for s, _ in pairs]
    layout["annotations"] = [a for _, a in pairs]
    return layout


def _drift_columns(windows: list[MonitorWindow], x: list[str], figures: _Figures) -> str:
    keys = _keys(windows, "drift.column.")
    if not keys:
        return _note("No per-column drift in these windows.")
    names = [k.removeprefix("drift.column.") for k in keys]
    traces = [_line(windows, x, k, n) for k, n in zip(keys, names, strict=True)]
    layout = _with_lines(
        _time_layout("Drift statistic per column", "statistic"), _thresholds(windows)
    )
    parts = [figures.add("drift-columns", "drift.columns", traces, layout)]
    heat = _drift_heatmap(windows, x, names)
    if heat is not None:
        parts.append(figures.add("drift-columns", "drift.flags", *heat))
    return "".join(parts)


def _thresholds(windows: Sequence[MonitorWindow]) -> list[tuple[float, str]]:
    """One line per distinct threshold of the latest drift report, named by its methods."""
    latest = _latest_drift(windows)
    methods: dict[float, set[str]] = {}
    for c in (latest[1].get("columns") or []) if latest else []:
        if _finite(c.get("threshold")) is not None:
            methods.setdefault(float(c["threshold"]), set()).add(str(c.get("method")))
    return [(t, f"threshold {t:g} ({', '.join(sorted(m))})") for t, m in sorted(methods.items())]


def _drift_heatmap(
    windows: Sequence[MonitorWindow], x: list[str], names: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    flags: list[list[float | None]] = [[None] * len(windows) for _ in names]
    text: list[list[str]] = [[""] * len(windows) for _ in names]
    row = {n: i for i, n in enumerate(names)}
    for j, w in enumerate(windows):
        for c in (_drift(w) or {}).get("columns") or []:
            if (i := row.get(c.get("name"))) is not None:
                flags[i][j] = 1.0 if c.get("drifted") else 0.0
                text[i][j] = f"{_t(c.get('method'))} {_num(c.get('statistic'))}"
    if all(v is None for r in flags for v in r):
        return None
    data = {
        "type": "heatmap", "x": x, "y": [_t(n) for n in names], "z": flags, "text": text,
        "zmin": 0, "zmax": 1, "colorscale": [[0, "#e8f3ec"], [1, "#d9534f"]], "showscale": False,
        "hovertemplate": "%{y} at %{x}: %{text}<extra></extra>", "xgap": 1, "ygap": 1,
    }  # fmt: skip
    height = max(260, 24 * len(names) + 140)
    layout = _time_layout("Drifted columns per window (red: drifted)", "column", height=height)
    layout["yaxis"]["automargin"] = True
    return [data], layout


def _drift_share(windows: list[MonitorWindow], x: list[str], figures: _Figures) -> str:
    if all(v is None for v in _series(windows, "drift.share")):
        return _note("No drift computed in these windows.")
    share = _line(windows, x, "drift.share", "share of drifted columns")
    dataset = _series(windows, "drift.dataset")
    share["marker"] = {"color": ["#d9534f" if d else "#1b7f3b" for d in dataset], "size": 9}
    latest = _latest_drift(windows)
    limit = _finite(latest[1].get("drift_share_threshold")) if latest else None
    lines = [(limit, f"dataset drift at {limit:g}")] if limit is not None else []
    layout = _time_layout("Share of drifted columns (red: dataset drift)", "share")
    layout["yaxis"]["range"] = [0, 1.05]
    return figures.add("drift-share", "drift.share", [share], _with_lines(layout, lines))


def _latest_drift(
    windows: Sequence[MonitorWindow],
) -> tuple[MonitorWindow, Mapping[str, Any]] | None:
    for w in reversed(windows):
        if (d := _drift(w)) is not None:
            return w, d
    return None


def _distributions(windows: list[MonitorWindow], figures: _Figures) -> str:
    latest = _latest_drift(windows)
    columns = list((latest[1].get("columns") or []) if latest else [])
    if latest is None or not columns:
        return _note("No distributions: no drift report in these windows.")
    columns.sort(key=lambda c: not c.get("drifted"))
    plots = [
        figures.add("distributions", f"distribution.{c['name']}", *_histogram(c)) for c in columns
    ]
    window = latest[0]
    head = _note(
        f"Window {window.id} ({_when(window.start)}): reference vs current, drifted first."
    )
    return head + f'<div class="grid">{"".join(plots)}</div>'


def _histogram(column: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Reference and current shares on the same bins (numeric) or values (categorical)."""
    reference, current = column.get("reference") or {}, column.get("current") or {}
    if "edges" in reference:
        edges = [float(e) for e in reference["edges"]]
        x: list[Any] = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        extra: dict[str, Any] = {"width": [b - a for a, b in itertools.pairwise(edges)]}
        mode = "overlay"
    else:
        x, extra, mode = [_t(v) for v in reference.get("values", [])], {}, "group"
    data = [
        {"type": "bar", "x": x, "y": part.get("shares", []), "name": name, "opacity": 0.6, **extra}
        for name, part in (("reference", reference), ("current", current))
    ]
    verdict = "drifted" if column.get("drifted") else "not drifted"
    title = f"{column['name']}: {column.get('method')} {_num(column.get('statistic'))}, {verdict}"
    layout = _layout(title, barmode=mode, bargap=0.02, yaxis={"title": {"text": "share"}})
    return data, layout


def _prediction(windows: list[MonitorWindow], x: list[str], figures: _Figures) -> str:
    parts = []
    if any(v is not None for v in _series(windows, "drift.prediction")):
        trace = _line(windows, x, "drift.prediction", "prediction drift")
        layout = _time_layout("Prediction drift statistic", "statistic")
        parts.append(figures.add("prediction", "drift.prediction", [trace], layout))
    latest = _latest_drift(windows)
    entry = latest[1].get("prediction") if latest else None
    if isinstance(entry, Mapping):
        parts.append(figures.add("prediction", "distribution.prediction", *_histogram(entry)))
    return f'<div class="grid">{"".join(parts)}</div>' if parts else _note("No prediction drift.")


def _quality(windows: list[MonitorWindow], x: list[str], figures: _Figures) -> str:
    found = [k for k in _keys(windows, "quality.") if k.endswith("_rate") and k.count(".") == 1]
    keys = [k for k in _QUALITY if k in found] + [k for k in found if k not in _QUALITY]
    if not keys:
        return _note("No data quality figures in these windows.")
    traces = [_line(windows, x, k, k.removeprefix("quality.").replace("_", " ")) for k in keys]
    layout = _time_layout("Data quality against the training baseline", "share of rows")
    return figures.add("quality", "quality.rates", traces, layout)


def _accuracy(
    windows: list[MonitorWindow],
    x: list[str],
    figures: _Figures,
    criteria: Sequence[SuccessCriterion],
) -> str:
    keys = _keys(windows, "accuracy.")
    if not keys:
        return _note("No labelled rows in these windows yet (send feedback to measure accuracy).")
    traces = [_line(windows, x, k, k.removeprefix("accuracy.")) for k in keys]
    labels = {"type": "bar", "x": x, "y": _series(windows, "labels"), "name": "labelled rows"}
    traces.append({**labels, "yaxis": "y2", "opacity": 0.3})
    lines = [
        (c.threshold, f"{c.id}: {c.metric} {c.comparison} {c.threshold:g}")
        for c in criteria
        if f"accuracy.{c.metric}" in keys
    ]
    layout = _time_layout("Accuracy on labelled rows", "metric")
    layout["yaxis2"] = {"title": {"text": "labelled rows"}, "overlaying": "y", "side": "right"}
    return figures.add("accuracy", "accuracy", traces, _with_lines(layout, lines))


def _system(windows: list[MonitorWindow], x: list[str], figures: _Figures) -> str:
    parts = []
    latency = [_line(windows, x, k, k.split("_")[1]) for k in _LATENCY if _keys(windows, k)]
    if latency:
        layout = _time_layout("Latency", "ms")
        parts.append(figures.add("system", "system.latency", latency, layout))
    if _keys(windows, "throughput_rps") or _keys(windows, "requests"):
        parts.append(_throughput(windows, x, figures))
    if _keys(windows, "error_rate") or _keys(windows, "errors."):
        parts.append(_errors(windows, x, figures))
    if not parts:
        return _note("No system figures in these windows.")
    return f'<div class="grid">{"".join(parts)}</div>'


def _throughput(windows: list[MonitorWindow], x: list[str], figures: _Figures) -> str:
    rps = _line(windows, x, "throughput_rps", "requests per second")
    requests = {"type": "bar", "x": x, "y": _series(windows, "requests"), "name": "requests"}
    layout = _time_layout("Throughput", "requests per second")
    layout["yaxis2"] = {"title": {"text": "requests"}, "overlaying": "y", "side": "right"}
    data = [rps, {**requests, "yaxis": "y2", "opacity": 0.3}]
    return figures.add("system", "system.throughput", data, layout)


def _errors(windows: list[MonitorWindow], x: list[str], figures: _Figures) -> str:
    rate = _line(windows, x, "error_rate", "error rate")
    codes = [
        {"type": "bar", "x": x, "y": _series(windows, k), "name": _t(k.removeprefix("errors.")),
         "yaxis": "y2", "opacity": 0.5}
        for k in _keys(windows, "errors.")
    ]  # fmt: skip
    layout = _time_layout("Errors", "error rate", barmode="stack")
    layout["yaxis2"] = {"title": {"text": "errors by code"}, "overlaying": "y", "side": "right"}
    return figures.add("system", "system.errors", [rate, *codes], layout)
