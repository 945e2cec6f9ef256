"""Helpers of the Studio tests: a project built with the real SDK, a small app that mounts the
Studio behind a stand-in for the server's auth middleware, and a live server for the browser.

The project ("world"): two trained and registered versions of model ``bc`` (the second fails
its staging check), two spec versions and two versions of a document (with a script tag and a
template expression in them), an experiment of 30 runs with metric histories, a production
deployment in the middle of a canary, twelve hourly monitor windows whose last four drift, the
production checks of those windows, one firing and one resolved alert.

Imported by the other ``test_studio_*`` modules; its own tests check the helpers themselves.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request, Response
from starlette.middleware.base import RequestResponseEndpoint

from meguri import registry
from meguri.spec import parse_spec, save_document, save_spec_version
from meguri.store import Workspace, open_workspace
from meguri.store.metadata import (
    Alert,
    AlertState,
    CheckResult,
    DeploymentState,
    DeploymentTarget,
    Experiment,
    ModelVersion,
    MonitorWindow,
    RevisionState,
    Run,
    RunStatus,
    User,
)
from meguri.store.metadata.repositories.deployments import NewRevision
from meguri.store.metadata.repositories.monitor import NewWindow
from meguri.studio import create_router
from meguri.testing.specs import quick_spec_text
from meguri.train import train

#: A user string that would run if a page did not escape it, and read 49 if a page evaluated it.
XSS = "<script>alert(1)</script>{{7*7}}"
#: The policy the test app sends: what a Studio page must live with (no inline script).
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'"
)
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC: the first monitor window
HOUR = 3600.0
SWEEP_RUNS = 30


@dataclass
class World:
    ws: Workspace
    passing: ModelVersion  # bc@1: every gate passes
    failing: ModelVersion  # bc@2: its staging check fails
    sweep: Experiment
    sweep_runs: list[Run]
    xss_run: Run
    windows: list[MonitorWindow]
    firing: Alert
    resolved: Alert


def _spec_texts() -> tuple[str, str]:
    first = quick_spec_text("studio", scale_only=True)
    second = first.replace(
        "Ranks malignant above benign cases on held-out data.", f"Ranks malignant first. {XSS}"
    ).replace("    threshold: 0.9\n", "    threshold: 0.88\n", 1)
    assert second.count(XSS) == 1 and "threshold: 0.88" in second
    return first, second


def build_world(root: Path) -> World:
    ws = open_workspace(root, project="studio", user="ann")
    pid = ws.project.id
    first, second = _spec_texts()
    save_spec_version(ws.metadata, pid, first, created_by="ann", message="first spec")
    save_spec_version(ws.metadata, pid, second, created_by="bob", message=f"recall 0.88 {XSS}")
    spec = parse_spec(second)
    versions = []
    for seed in (42, 7):
        seeded = parse_spec(second.replace("  seed: 42\n", f"  seed: {seed}\n", 1))
        versions.append(registry.register_model(train(seeded, workspace=ws), "bc", workspace=ws))
    assert spec.success_criteria
    _staging_checks(ws, versions)
    _deployments(ws, versions)
    windows = _windows(ws)
    firing, resolved = _alerts(ws, windows)
    _documents(ws)
    sweep, sweep_runs, xss_run = _sweep(ws)
    return World(
        ws, versions[0], versions[1], sweep, sweep_runs, xss_run, windows, firing, resolved
    )


#: The criteria the fixture records checks of by hand: metric, comparison, threshold.
CRITERIA = {
    "latency-staging": ("latency_p95_ms", "<=", 50.0),
    "drift-production": ("drift_share", "<=", 0.3),
    "auc-production": ("roc_auc", ">=", 0.93),
}


def _check(
    ws: Workspace,
    criterion: str,
    value: float,
    subject: tuple[str, str],
    evidence: dict[str, object],
) -> CheckResult:
    metric, comparison, threshold = CRITERIA[criterion]
    passed = value <= threshold if comparison == "<=" else value >= threshold
    latest = ws.metadata.specs.latest(ws.project.id)
    return CheckResult(
        id="", project_id=ws.project.id, spec_version_id=latest.id if latest else None,
        criterion_id=criterion, stage=criterion.rsplit("-", 1)[1], metric=metric,
        comparison=comparison, threshold=threshold, value=value, passed=passed,
        subject_kind=subject[0], subject_id=subject[1], created_at=0.0, created_by="ann",
        evidence=evidence,
    )  # fmt: skip


def _staging_checks(ws: Workspace, versions: list[ModelVersion]) -> None:
    latencies = (12.5, 80.0)  # bc@2 is too slow for the 50 ms requirement
    where = {"environment": "staging"}
    for v, ms in zip(versions, latencies, strict=True):  # bc@2's check is the newer
        ws.metadata.checks.record(
            [_check(ws, "latency-staging", ms, ("model_version", v.id), where)]
        )


def _target(version: ModelVersion, weight: float, role: str) -> DeploymentTarget:
    return DeploymentTarget(version.id, version.ref, version.package_digest, weight, role)


def _deployments(ws: Workspace, versions: list[ModelVersion]) -> None:
    repo, (one, two) = ws.metadata.deployments, versions
    production = repo.ensure(ws.project.id, "production", "bc", by="ann")
    live = repo.add_revision(
        production.id, NewRevision([_target(one, 100.0, "primary")], "all_at_once", "ann"),
        expected=0,
    )  # fmt: skip
    repo.set_revision_state(live.id, RevisionState.LIVE)
    canary = NewRevision(
        [_target(one, 100.0, "primary"), _target(two, 0.0, "canary")], "canary", "bob",
        settings={"steps": [10.0, 100.0]},
    )  # fmt: skip
    baking = repo.add_revision(production.id, canary, expected=1)
    repo.set_revision_state(baking.id, RevisionState.BAKING, step=0)
    repo.update(production.id, state=DeploymentState.BAKING)
    staging = repo.ensure(ws.project.id, "staging", "bc", by="ann")
    first = NewRevision([_target(two, 100.0, "primary")], "all_at_once", "ann")
    repo.set_revision_state(repo.add_revision(staging.id, first, expected=0).id, RevisionState.LIVE)


def window_figures(i: int) -> dict[str, float | None]:
    """The figures of window ``i`` (0-11): calm for eight hours, then drifting."""
    drifting = i >= 8
    return {
        "drift.share": 0.6 + 0.02 * (i - 8) if drifting else 0.05,
        "drift.column.mean_radius": 0.4 + 0.05 * (i - 8) if drifting else 0.02 + 0.001 * i,
        "drift.column.mean_texture": 0.03,
        "accuracy.roc_auc": 0.9 if drifting else 0.98,
        "labels": 40.0,
        "latency_p95_ms": 8.0 + i / 10,
        "error_rate": 0.0,
        "requests": 100.0,
    }


def _windows(ws: Workspace) -> list[MonitorWindow]:
    hours = [(T0 + i * HOUR, T0 + (i + 1) * HOUR) for i in range(12)]
    new = [
        NewWindow(ws.project.id, "production", start, end, rows=100,
                  model_versions={"bc@1": 90, "bc@2": 10}, figures=window_figures(i))
        for i, (start, end) in enumerate(hours)
    ]  # fmt: skip
    windows = ws.metadata.monitor.save_windows(new)
    for w in windows:  # one record per window: newer windows' checks are newer
        evidence = {"environment": "production", "start": w.start, "end": w.end,
                    "model_versions": dict(w.model_versions)}  # fmt: skip
        share, auc = w.figures["drift.share"], w.figures["accuracy.roc_auc"]
        assert share is not None and auc is not None
        subject = ("monitor_window", w.id)
        ws.metadata.checks.record(
            [
                _check(ws, "drift-production", share, subject, evidence),
                _check(ws, "auc-production", auc, subject, evidence),
            ]
        )
    return windows


def _alerts(ws: Workspace, windows: list[MonitorWindow]) -> tuple[Alert, Alert]:
    repo, pid = ws.metadata.monitor, ws.project.id
    slow = repo.open_alert(pid, "production", "latency-high", severity="warning", value=61.0,
                           window_id=windows[2].id, started_at=windows[2].end)  # fmt: skip
    resolved = repo.update_alert(slow.id, state=AlertState.RESOLVED, resolved_at=windows[3].end)
    firing = repo.open_alert(
        pid, "production", "drift-share-high", severity="critical",
        value=windows[-1].figures["drift.share"], window_id=windows[8].id,
        started_at=windows[8].end, detail={"notified": ["log"]},
    )  # fmt: skip
    return firing, resolved


def _documents(ws: Workspace) -> None:
    pid = ws.project.id
    first = f"# Design notes\n\nWe rank the cases.\n\n{XSS}\n"
    second = f"# Design notes\n\nWe rank the riskiest cases first.\n\n{XSS}\n"
    save_document(ws.metadata, pid, "design-notes", first, created_by="ann", message="draft")
    save_document(ws.metadata, pid, "design-notes", second, created_by="bob", message=XSS)


def sweep_metrics(i: int) -> tuple[dict[str, str], list[tuple[str, float, int, float]]]:
    """Params and metric points of sweep run ``i``: accuracy rises over 5 steps to a final
    value that depends on the learning rate and depth."""
    lr, depth = (0.01, 0.1, 0.3)[i % 3], 2 + i % 5
    final = round(0.7 + 0.01 * depth + (0.05 if lr == 0.1 else 0.0) + 0.001 * i, 6)
    points = [("accuracy", round(final - 0.02 * (4 - s), 6), s, T0 + s) for s in range(5)]
    points.append(("loss", round(math.log(2.0 + i), 6), 0, T0))
    return {"lr": str(lr), "depth": str(depth)}, points


def _sweep(ws: Workspace) -> tuple[Experiment, list[Run], Run]:
    repo = ws.metadata.runs
    sweep = repo.ensure_experiment(ws.project.id, "sweep", "ann")
    runs = []
    for i in range(SWEEP_RUNS):
        run = repo.create_run(sweep.id, created_by="ann", name=f"trial-{i:02d}")
        params, points = sweep_metrics(i)
        repo.log_batch(run.id, points, params=params, tags={"team": "a" if i % 2 else "b"})
        repo.end_run(run.id, RunStatus.FINISHED)
        runs.append(repo.get_run(run.id))
    xss = repo.create_run(sweep.id, created_by="mallory", name=XSS)
    repo.log_batch(xss.id, [("accuracy", 0.5, 0, T0)], params={"note": XSS}, tags={XSS: XSS})
    return sweep, runs, repo.get_run(xss.id)


# -- the app -------------------------------------------------------------------------------------


@dataclass
class Caller:
    """Who the stand-in middleware says is asking (None name: nobody signed in)."""

    name: str | None = "ann"
    role: str | None = "admin"
    csrf_token: str | None = "csrf-test-token"
    is_admin: bool = False
    seen: list[str] = field(default_factory=list)


def studio_app(ws: Workspace, caller: Caller | None = None) -> FastAPI:
    """The Studio mounted on a bare FastAPI app; ``app.state.caller`` decides who is asking
    (tests change it between requests). Every response carries :data:`STRICT_CSP` unless the
    page set its own policy."""
    app = FastAPI()
    app.state.workspace = ws
    app.state.caller = caller or Caller()

    @app.middleware("http")
    async def auth(request: Request, call_next: RequestResponseEndpoint) -> Response:
        who: Caller = request.app.state.caller
        if who.name is not None:
            request.state.user = User(
                id=f"usr-{who.name}", name=who.name, email=None, is_admin=who.is_admin,
                created_at=0.0, created_by="test", disabled=False,
            )  # fmt: skip
            request.state.role = who.role
            request.state.csrf_token = who.csrf_token
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", STRICT_CSP)
        return response

    app.include_router(create_router())
    return app


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# -- reading pages -------------------------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr", "path", "rect"}  # fmt: skip


@dataclass
class Node:
    """An element of a parsed page: tag, attributes, children (nodes and text)."""

    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str, class_: str | None = None) -> list[Node]:
        return [
            n for n in self.iter()
            if n.tag == tag and (class_ is None or class_ in n.attrs.get("class", "").split())
        ]  # fmt: skip

    def by_id(self, ident: str) -> Node:
        found = [n for n in self.iter() if n.attrs.get("id") == ident]
        assert len(found) == 1, f"{len(found)} elements with id {ident!r}"
        return found[0]

    def rows(self) -> list[list[str]]:
        """The cell texts of each body row of this table (stripped, whitespace collapsed)."""
        body = [r for b in self.find_all("tbody") for r in b.find_all("tr")]
        return [[" ".join(c.text().split()) for c in r.children
                 if isinstance(c, Node) and c.tag in ("td", "th")] for r in body]  # fmt: skip


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag == "br":
            node.children.append("\n")  # a line break separates words, as a browser shows
        if tag not in _VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str) -> Node:
    builder = _Builder()
    builder.feed(page)
    builder.close()
    return builder.root


def figures(page: str) -> dict[str, dict[str, object]]:
    """The Plotly figure specs of a page, by the id of their JSON script element."""
    found = parse(page).find_all("script")
    return {
        s.attrs["id"]: json.loads(s.text())
        for s in found
        if s.attrs.get("type") == "application/json"
    }


# -- the helpers' own tests ------------------------------------------------------------------------


def test_window_figures_drift_after_eight_hours() -> None:
    assert [window_figures(i)["drift.share"] > 0.3 for i in range(12)] == [False] * 8 + [True] * 4


def test_sweep_metrics_end_at_their_final_value() -> None:
    params, points = sweep_metrics(4)
    accuracy = [p for p in points if p[0] == "accuracy"]
    assert params == {"lr": "0.1", "depth": "6"}
    assert accuracy[-1][1] == round(0.7 + 0.06 + 0.05 + 0.004, 6)
    assert [p[2] for p in accuracy] == [0, 1, 2, 3, 4]


def test_parse_reads_tables_ids_and_figures() -> None:
    page = (
        '<div id="x"><table><tbody><tr><td>a <b>b</b></td><td>c&amp;d</td></tr></tbody></table>'
        '<br><script type="application/json" id="f">{"data": [], "n": "\\u003c"}</script></div>'
    )
    root = parse(page)
    assert root.by_id("x").find_all("table")[0].rows() == [["a b", "c&d"]]
    assert figures(page) == {"f": {"data": [], "n": "<"}}
