"""The monitoring report: every section and figure present, figures carrying the windows' own
numbers, user-named things escaped, an empty range answered with a clear page, and the JSON
for machines plain and finite. Optionally, headless Chromium draws the page without errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meguri.monitor._report import monitor_json, render_monitor_html
from meguri.spec import SuccessCriterion
from meguri.store.metadata import Alert, AlertState, MonitorWindow

EVIL = "<script>alert(1)</script>"
COMMENT = "a<!--b"
COLUMNS = ("age", "city", EVIL, COMMENT)
HOUR = 3600.0
START = datetime(2024, 5, 1, tzinfo=UTC).timestamp()
SECTIONS = (
    "summary",
    "drift-columns",
    "drift-share",
    "distributions",
    "prediction",
    "quality",
    "accuracy",
    "system",
    "alerts",
)


def _numeric(name: str, rng: np.random.Generator, shift: float) -> dict[str, Any]:
    edges = np.linspace(0.0, 10.0, 6)
    reference = np.histogram(rng.normal(5, 2, 2000), bins=edges)[0]
    current = np.histogram(rng.normal(5 + shift, 2, 500), bins=edges)[0]
    return {
        "name": name,
        "kind": "numeric",
        "method": "wasserstein",
        "statistic": shift / 2,
        "threshold": 0.1,
        "drifted": shift / 2 > 0.1,
        "psi": None,
        "p_value": None,
        "reference": {"edges": edges.tolist(), "shares": (reference / reference.sum()).tolist()},
        "current": {"edges": edges.tolist(), "shares": (current / current.sum()).tolist()},
    }


def _categorical(name: str, shift: float) -> dict[str, Any]:
    values = ["Osaka", "Kyoto", EVIL]
    return {
        "name": name,
        "kind": "categorical",
        "method": "jensenshannon",
        "statistic": shift / 4,
        "threshold": 0.1,
        "drifted": shift / 4 > 0.1,
        "psi": 0.01,
        "p_value": None,
        "reference": {"values": values, "shares": [0.5, 0.3, 0.2]},
        "current": {"values": values, "shares": [0.5 - shift / 4, 0.3, 0.2 + shift / 4]},
    }


def _window(i: int, shift: float) -> MonitorWindow:
    rng = np.random.default_rng(i)
    columns = [_numeric("age", rng, shift), _categorical("city", shift)]
    columns += [_numeric(EVIL, rng, shift * 2), _numeric(COMMENT, rng, 0.0)]
    drifted = sum(c["drifted"] for c in columns)
    drift = {
        "method_rule": "evidently-default",
        "reference_rows": 2000,
        "current_rows": 500,
        "share": drifted / len(columns),
        "dataset_drift": drifted / len(columns) >= 0.5,
        "drift_share_threshold": 0.5,
        "columns": columns,
        "prediction": {**_categorical("prediction", shift / 2), "method": "psi"},
        "multivariate": None,
    }
    figures: dict[str, float | None] = {
        f"drift.column.{c['name']}": c["statistic"] for c in columns
    }
    figures |= {
        "drift.share": drift["share"],
        "drift.dataset": float(drift["dataset_drift"]),
        "drift.columns": float(drifted),
        "drift.prediction": shift / 8,
        "requests": 100.0 + i,
        "throughput_rps": (100.0 + i) / HOUR,
        "error_rate": 0.01 * i,
        "errors.wrong_type": float(i),
        "latency_p50_ms": 5.0 + i,
        "latency_p95_ms": 9.0 + i,
        "latency_p99_ms": 15.0 + i,
        "quality.missing_rate": 0.001 * i,
        "quality.out_of_range_rate": 0.002 * i,
        "quality.unseen_category_rate": None if i == 0 else 0.003,
        "quality.type_error_rate": 0.0,
        "labels": float(50 * i),
        "accuracy.roc_auc": None if i == 0 else 0.9 - 0.04 * i,
        "cpu_percent": float("nan"),
    }
    return MonitorWindow(
        id=f"mw-{i}",
        project_id="p-1",
        environment="production",
        start=START + i * HOUR,
        end=START + (i + 1) * HOUR,
        rows=500 + i,
        model_versions={"churn@1": 400, "churn@2": 100 + i},
        figures=figures,
        details={"drift": drift, "quality": {}, "accuracy": {}, "system": {}},
        created_at=START + (i + 1) * HOUR,
    )


# Shuffled on purpose: the report orders windows by time itself.
WINDOWS = [_window(i, shift) for i, shift in [(3, 0.6), (0, 0.0), (2, 0.4), (1, 0.1)]]


def _alert(rule: str, state: AlertState, value: float, hours: tuple[int, int | None]) -> Alert:
    started, resolved = hours
    return Alert(
        id=f"al-{rule}",
        project_id="p-1",
        environment="production",
        rule=rule,
        severity="critical" if state is AlertState.FIRING else "warning",
        state=state,
        value=value,
        started_at=START + started * HOUR,
        resolved_at=None if resolved is None else START + resolved * HOUR,
        window_id="mw-1",
        last_window_id="mw-3",
        detail={"column": rule},
        created_at=START,
    )


ALERTS = [
    _alert("data-drift", AlertState.RESOLVED, 0.25, (1, 2)),
    _alert(EVIL, AlertState.FIRING, 0.75, (3, None)),
]
CRITERIA = [
    SuccessCriterion(
        id="auc-production",
        metric="roc_auc",
        measured_on="production",
        comparison=">=",
        threshold=0.8,
    )
]


def _render(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "project": "churn",
        "environment": "production",
        "criteria": CRITERIA,
        **overrides,
    }
    return render_monitor_html(WINDOWS, ALERTS, **args)


def _figures(page: str) -> dict[str, dict[str, Any]]:
    found = re.search(r'<script type="application/json" id="meguri-figures">(.*?)</script>', page)
    assert found is not None
    specs = json.loads(found.group(1))
    return {spec["key"]: spec for spec in specs}


@pytest.fixture(scope="module")
def page() -> str:
    return _render()


def _trace(figure: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in figure["data"] if t.get("name") == name)


def _x() -> list[str]:
    starts = sorted(w.start for w in WINDOWS)
    return [
        datetime.fromtimestamp(s, UTC).isoformat(sep=" ").removesuffix("+00:00") for s in starts
    ]


def test_every_section_and_figure_is_present(page: str) -> None:
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    figures = _figures(page)
    expected = {"drift.columns", "drift.flags", "drift.share", "drift.prediction"}
    expected |= {f"distribution.{c}" for c in (*COLUMNS, "prediction")}
    expected |= {"quality.rates", "accuracy", "system.latency", "system.throughput"}
    expected |= {"system.errors"}
    assert set(figures) == expected
    for spec in figures.values():
        assert f'<div class="plot" id="{spec["id"]}"' in page
        assert page.index(f'<section id="{spec["section"]}">') < page.index(f'id="{spec["id"]}"')
    assert "Plotly.newPlot" in page and "cdn" not in page.split("<script>", 2)[-1]


def test_drift_figures_carry_the_windows_numbers(page: str) -> None:
    figures = _figures(page)
    ordered = sorted(WINDOWS, key=lambda w: w.start)
    columns = figures["drift.columns"]
    age = _trace(columns, "age")
    assert age["x"] == _x()
    assert age["y"] == [w.figures["drift.column.age"] for w in ordered]
    assert [s["y0"] for s in columns["layout"]["shapes"]] == [0.1]
    assert "jensenshannon, wasserstein" in columns["layout"]["annotations"][0]["text"]
    flags = figures["drift.flags"]["data"][0]
    assert flags["z"][0] == [float(w.details["drift"]["columns"][0]["drifted"]) for w in ordered]
    share = figures["drift.share"]
    assert share["data"][0]["y"] == [w.figures["drift.share"] for w in ordered]
    assert share["layout"]["shapes"][0]["y0"] == 0.5


def test_distributions_use_the_latest_windows_shared_bins(page: str) -> None:
    figures = _figures(page)
    latest = max(WINDOWS, key=lambda w: w.start).details["drift"]["columns"][0]
    age = figures["distribution.age"]
    edges = np.asarray(latest["reference"]["edges"])
    np.testing.assert_allclose(_trace(age, "reference")["x"], (edges[:-1] + edges[1:]) / 2)
    np.testing.assert_allclose(_trace(age, "reference")["width"], np.diff(edges))
    assert _trace(age, "current")["y"] == latest["current"]["shares"]
    city = figures["distribution.city"]
    assert _trace(city, "reference")["x"] == [
        "Osaka",
        "Kyoto",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
    ]
    assert city["layout"]["barmode"] == "group" and age["layout"]["barmode"] == "overlay"
    assert "psi" in figures["distribution.prediction"]["layout"]["title"]["text"]


def test_quality_accuracy_and_system_over_time(page: str) -> None:
    figures = _figures(page)
    ordered = sorted(WINDOWS, key=lambda w: w.start)
    quality = figures["quality.rates"]
    assert [t["name"] for t in quality["data"]] == [
        "missing rate",
        "out of range rate",
        "unseen category rate",
        "type error rate",
    ]
    assert _trace(quality, "unseen category rate")["y"][0] is None
    accuracy = figures["accuracy"]
    assert _trace(accuracy, "roc_auc")["y"] == [w.figures["accuracy.roc_auc"] for w in ordered]
    assert _trace(accuracy, "labelled rows")["y"] == [0.0, 50.0, 100.0, 150.0]
    assert accuracy["layout"]["shapes"][0]["y0"] == 0.8
    assert accuracy["layout"]["annotations"][0]["text"] == "auc-production: roc_auc &gt;= 0.8"
    latency = figures["system.latency"]
    assert [t["name"] for t in latency["data"]] == ["p50", "p95", "p99"]
    assert _trace(latency, "p99")["y"] == [15.0, 16.0, 17.0, 18.0]
    assert _trace(figures["system.errors"], "wrong_type")["y"] == [0.0, 1.0, 2.0, 3.0]
    assert _trace(figures["system.throughput"], "requests")["y"] == [100.0, 101.0, 102.0, 103.0]


def test_summary_tells_range_rows_versions_verdict_and_firing_alerts(page: str) -> None:
    summary = page[page.index('<section id="summary">') : page.index("</section>")]
    assert "2024-05-01 00:00 UTC to 2024-05-01 04:00 UTC" in summary
    assert f"{sum(w.rows for w in WINDOWS)} (300 labelled)" in summary
    assert "churn@1 (1600 rows), churn@2 (406 rows)" in summary
    assert "dataset drift</span>: 3 of 4 columns drifted (share 0.75)" in summary
    assert "auc-production" in summary and '"err">fail</span> at 0.78' in summary
    alerts = page[page.index('<section id="alerts">') :]
    assert alerts.index('"err">firing</td>') < alerts.index('"ok">resolved</td>')


def test_user_named_things_are_escaped_everywhere() -> None:
    page = _render(environment="prod</title><script>alert(2)</script>", project="a&b")
    assert EVIL not in page and "alert(2)</script>" not in page and COMMENT not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the alert rule, the column name
    assert "<title>Monitoring: a&amp;b · prod&lt;/title&gt;" in page
    assert page.count("</script>") == 3  # plotly.js, the figure specs, the drawing code
    figures = _figures(page)  # still valid JSON, and the names come back exactly
    assert f"distribution.{EVIL}" in figures and f"distribution.{COMMENT}" in figures
    assert _trace(figures["drift.columns"], "&lt;script&gt;alert(1)&lt;/script&gt;")


def test_an_empty_range_gives_a_clear_page() -> None:
    page = render_monitor_html([], [], project="churn", environment="staging")
    assert "No monitor windows in this range" in page and "No alerts in this range" in page
    assert "meguri-figures" not in page and len(page) < 10_000  # no plotly.js to draw nothing
    document = monitor_json([], [], project="churn", environment="staging")
    assert document["windows"] == [] and document["summary"]["start"] is None
    assert document["summary"]["drift"] is None


def test_json_for_machines_is_plain_and_ordered() -> None:
    document = monitor_json(
        WINDOWS, ALERTS, project="churn", environment="production", criteria=CRITERIA
    )
    text = json.dumps(document, allow_nan=False)  # NaN figures became null
    assert json.loads(text) == document
    assert [w["id"] for w in document["windows"]] == ["mw-0", "mw-1", "mw-2", "mw-3"]
    assert document["windows"][0]["figures"]["cpu_percent"] is None
    summary = document["summary"]
    assert summary["rows"] == 2006 and summary["labels"] == 300 and summary["firing"] == [EVIL]
    assert summary["drift"]["drifted"] == ["age", "city", EVIL]
    assert summary["criteria"] == [
        {"id": "auc-production", "value": pytest.approx(0.78), "passed": False, "window": "mw-3"}
    ]
    assert document["alerts"][0]["detail"] == {"column": EVIL}
    assert document["criteria"][0]["comparison"] == ">="


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium here")
def test_chromium_draws_every_figure_without_errors(page: str, tmp_path: Path) -> None:
    trap = "<script>addEventListener('error',e=>{document.title='JSERROR '+e.message})</script>"
    file = tmp_path / "report.html"
    file.write_text(page.replace("<head>", "<head>" + trap, 1), encoding="utf-8")
    out = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--dump-dom", file.as_uri()],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "<title>JSERROR" not in out.stdout
    drawn = len(re.findall(r'class="[^"]*js-plotly-plot', out.stdout))
    assert drawn == len(_figures(page))


def test_a_latest_window_that_skipped_drift_says_why() -> None:
    base = max(WINDOWS, key=lambda w: w.start)
    quiet = MonitorWindow(
        **{
            **{f: getattr(base, f) for f in MonitorWindow.__dataclass_fields__},
            "id": "mw-4",
            "start": base.end,
            "end": base.end + HOUR,
            "rows": 3,
            "figures": {"requests": 3.0},
            "details": {"drift": {"skipped": "too few rows", "current_rows": 3}},
        }
    )
    page = render_monitor_html([*WINDOWS, quiet], [], project="churn", environment="production")
    summary = page[page.index('<section id="summary">') : page.index("</section>")]
    assert "skipped: too few rows" in summary
    figures = _figures(page)  # distributions still come from the latest window with a report
    assert (
        _trace(figures["distribution.age"], "current")["y"]
        == (base.details["drift"]["columns"][0]["current"]["shares"])
    )
    assert _trace(figures["drift.columns"], "age")["y"][-1] is None
    document = monitor_json([quiet], [], project="churn", environment="production")
    assert document["summary"]["drift"] == {"skipped": "too few rows"}
