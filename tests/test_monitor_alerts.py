"""Alert rules over monitor windows: k-of-N firing, hysteresis, criteria, missing data, and the
store: alerts opened, followed and resolved with their notifications recorded."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meguri.errors import SpecError
from meguri.monitor._alerts import TransitionKind, apply_alerts, evaluate
from meguri.monitor._notify import Notifier, WebhookNotifier
from meguri.spec import AlertRuleSpec, MonitorSpec, NotifierSpec, SuccessCriterion
from meguri.store import Workspace, open_workspace
from meguri.store.metadata import Alert, AlertState
from meguri.store.metadata.repositories.monitor import NewWindow


@dataclass(frozen=True)
class Window:
    id: str
    start: float
    end: float
    figures: Mapping[str, float | None]


def windows(figure: str, values: Sequence[float | None]) -> list[Window]:
    return [
        Window(f"mw-{i:03d}", 3600.0 * i, 3600.0 * (i + 1), {figure: v})
        for i, v in enumerate(values)
    ]


def replay(
    rule: AlertRuleSpec,
    values: Sequence[float | None],
    criteria: list[SuccessCriterion] | None = None,
    figure: str | None = None,
) -> list[str]:
    """Feed windows one by one, as hourly monitor runs do; the state after each window."""
    firing: dict[str, object] = {}
    states = []
    series = windows(figure or rule.figure or "", values)
    for n in range(1, len(series) + 1):
        for t in evaluate([rule], criteria or [], series[:n], firing):
            if t.kind is TransitionKind.FIRE:
                firing[rule.name] = object()
            elif t.kind is TransitionKind.RESOLVE:
                del firing[rule.name]
        states.append("F" if rule.name in firing else ".")
    return states


def test_fires_when_k_of_the_last_n_windows_breach() -> None:
    rule = AlertRuleSpec(name="drift", figure="drift.share", above=0.3, windows=2, of=3)
    #                        one noisy window does not fire; the second within three does
    states = replay(rule, [0.1, 0.4, 0.1, 0.1, 0.4, 0.2, 0.5, 0.1, 0.1, 0.1])
    assert "".join(states) == "......F..."


def test_transition_carries_the_newest_value_window_and_counts() -> None:
    rule = AlertRuleSpec(name="drift", figure="drift.share", above=0.3, windows=2, of=3)
    [t] = evaluate([rule], [], windows("drift.share", [0.1, 0.45, 0.35]), {})
    assert (t.kind, t.value, t.window_id, t.window_end) == ("fire", 0.35, "mw-002", 3 * 3600.0)
    assert (t.breaching, t.considered) == (2, 3)
    assert "drift.share > 0.3 in 2 of the last 3 windows" in t.summary()


def test_hysteresis_keeps_firing_between_threshold_and_clear() -> None:
    rule = AlertRuleSpec(name="drift", figure="drift.share", above=0.3, clear=0.2)
    #          fire  above clear band: still firing  back at 0.2: resolved  band alone: quiet
    values = [0.35, 0.5, 0.25, 0.29, 0.2, 0.25]
    assert "".join(replay(rule, values)) == "FFFF.."
    firing = {"drift": object()}
    [t] = evaluate([rule], [], windows("drift.share", values[:3]), firing)
    assert (t.kind, t.value) == (TransitionKind.FIRING, 0.25)


def test_resolving_needs_the_rule_to_stop_holding_too() -> None:
    # 2 of 3 with clear 0.2: a value below clear while two of the last three still breach
    rule = AlertRuleSpec(name="d", figure="drift.share", above=0.3, clear=0.2, windows=2, of=3)
    assert "".join(replay(rule, [0.4, 0.4, 0.1, 0.1])) == ".FF."


def test_below_rules_and_their_clear() -> None:
    rule = AlertRuleSpec(name="traffic", figure="throughput_rps", below=5.0, clear=8.0)
    assert "".join(replay(rule, [10.0, 4.0, 6.0, 7.9, 8.0, 5.0])) == ".FFF.."


def test_missing_figures_neither_breach_nor_clear() -> None:
    rule = AlertRuleSpec(name="d", figure="drift.share", above=0.3, windows=2, of=2)
    # None and NaN windows are skipped: 0.4, (gap), 0.4 are two breaching windows in a row
    assert "".join(replay(rule, [0.4, None, math.nan, 0.4, None, None])) == "...FFF"
    assert evaluate([rule], [], windows("drift.share", [None, None]), {}) == []
    # a window without the figure at all (e.g. before the first label arrives)
    bare = [Window("mw-0", 0.0, 1.0, {}), Window("mw-1", 1.0, 2.0, {"other": 1.0})]
    assert evaluate([rule], [], bare, {"d": object()}) == []


def test_windows_are_read_in_time_order() -> None:
    rule = AlertRuleSpec(name="d", figure="error_rate", above=0.05)
    series = windows("error_rate", [0.5, 0.0])
    assert evaluate([rule], [], list(reversed(series)), {"d": object()})[0].kind == "resolve"


auc = SuccessCriterion(
    id="auc-production", metric="roc_auc", measured_on="production", comparison=">=", threshold=0.8
)


def test_criterion_rules_read_accuracy_and_fail_the_criterion() -> None:
    rule = AlertRuleSpec(name="auc", criterion="auc-production")
    states = replay(rule, [0.9, 0.79, None, 0.8, 0.7], [auc], figure="accuracy.roc_auc")
    assert "".join(states) == ".FF.F"
    [t] = evaluate([rule], [auc], windows("accuracy.roc_auc", [0.75]), {})
    assert t.check.figure == "accuracy.roc_auc" and "fails >= 0.8" in t.summary()


def test_criterion_rules_with_clear_need_the_value_past_it() -> None:
    rule = AlertRuleSpec(name="auc", criterion="auc-production", clear=0.85)
    states = replay(rule, [0.7, 0.82, 0.84, 0.86], [auc], figure="accuracy.roc_auc")
    assert "".join(states) == "FFF."
    rmse = SuccessCriterion(
        id="rmse", metric="rmse", measured_on="production", comparison="<=", threshold=3.0
    )
    rule = AlertRuleSpec(name="rmse", criterion="rmse", clear=2.5)
    states = replay(rule, [3.5, 2.9, 2.5], [rmse], figure="accuracy.rmse")
    assert "".join(states) == "FF."


def test_a_system_criterion_reads_its_own_figure() -> None:
    latency = SuccessCriterion(
        id="p95", metric="latency_p95_ms", measured_on="production", comparison="<=", threshold=200
    )
    rule = AlertRuleSpec(name="slow", criterion="p95")
    [t] = evaluate([rule], [latency], windows("latency_p95_ms", [150.0, 250.0]), {})
    assert (t.kind, t.check.figure, t.value) == ("fire", "latency_p95_ms", 250.0)


def test_an_unknown_criterion_names_the_fix() -> None:
    rule = AlertRuleSpec(name="auc", criterion="nope")
    with pytest.raises(SpecError, match=r"'nope'.*auc-production.*monitor\.alerts"):
        evaluate([rule], [auc], windows("accuracy.roc_auc", [0.5]), {})


def reference_states(values: np.ndarray, above: float, clear: float, k: int, n: int) -> str:
    """The same rule written column-wise: breaches, rolling counts over data windows."""
    data = values[~np.isnan(values)]
    if data.size == 0:
        return "." * len(values)
    breach = (data > above).astype(int)
    counts = np.convolve(breach, np.ones(n, dtype=int))[: len(data)]
    holds = counts >= k
    after_data = np.cumsum(~np.isnan(values)) - 1  # index into data after each window
    states, firing = [], False
    for i in after_data:
        if i >= 0:
            firing = bool(holds[i]) or (firing and not data[i] <= clear)
        states.append("F" if firing else ".")
    return "".join(states)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.9])),
        min_size=1,
        max_size=25,
    ),
    st.integers(1, 4),
    st.integers(0, 3),
    st.sampled_from([None, 0.2, 0.1]),
)
def test_replay_matches_a_columnwise_reference(
    values: list[float | None], k: int, extra: int, clear: float | None
) -> None:
    rule = AlertRuleSpec(
        name="r", figure="drift.share", above=0.3, clear=clear, windows=k, of=k + extra
    )
    array = np.array([np.nan if v is None else v for v in values])
    expected = reference_states(array, 0.3, 0.3 if clear is None else clear, k, k + extra)
    assert "".join(replay(rule, values)) == expected


# --- the store and the notifiers ---------------------------------------------------------------


@dataclass
class Receiver:
    """A loopback webhook receiver: answers ``statuses`` in turn (then 200), keeps the bodies."""

    statuses: list[int]
    bodies: list[dict[str, Any]]
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver([], [])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            state.bodies.append(orjson.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(state.statuses.pop(0) if state.statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = open_workspace(tmp_path / "proj", project="churn", user="tester")
    yield workspace
    workspace.close()


def monitor_spec(url: str, **rule: Any) -> MonitorSpec:
    return MonitorSpec.model_validate(
        {
            "alerts": [
                {
                    "name": "data-drift",
                    "figure": "drift.share",
                    "above": 0.3,
                    "clear": 0.2,
                    "windows": 2,
                    "of": 3,
                    "severity": "critical",
                    "notify": ["ops", "log"],
                    **rule,
                }
            ],
            "notifiers": {
                "ops": {"kind": "webhook", "url": url, "allow_private": True},
                "log": {"kind": "log"},
            },
        }
    )


def add_window(ws: Workspace, hour: int, share: float | None) -> None:
    window = NewWindow(
        ws.project.id,
        "production",
        3600.0 * hour,
        3600.0 * (hour + 1),
        100,
        {},
        {"drift.share": share},
    )
    ws.metadata.monitor.save_windows([window])


def test_alerts_are_opened_followed_resolved_and_notified(
    ws: Workspace, receiver: Receiver
) -> None:
    spec = monitor_spec(receiver.url)
    pid = ws.project.id

    def hour(h: int, share: float | None) -> list[Alert]:
        add_window(ws, h, share)
        return apply_alerts(ws, pid, "production", spec, [])

    assert hour(0, 0.1) == [] and hour(1, 0.4) == []
    [fired] = hour(2, 0.35)  # 2 of the last 3 breach
    assert (fired.state, fired.value, fired.severity) == (AlertState.FIRING, 0.35, "critical")
    assert fired.started_at == 3 * 3600.0  # the end of the window that fired it
    newest = ws.metadata.monitor.windows(pid, "production", limit=1)[0]
    assert fired.window_id == fired.last_window_id == newest.id
    sent = fired.detail["notifications"]
    assert [(n["notifier"], n["event"], n["ok"], n["attempts"]) for n in sent] == [
        ("ops", "fire", True, 1),
        ("log", "fire", True, 1),
    ]
    assert fired.detail["breaching"] == 2 and fired.detail["considered"] == 3
    [body] = receiver.bodies
    assert body["status"] == "firing" and body["alerts"][0]["labels"]["project"] == "churn"
    assert body["alerts"][0]["startsAt"] == "1970-01-01T03:00:00.000Z"

    assert apply_alerts(ws, pid, "production", spec, []) == []  # nothing new: no write
    [moved] = hour(3, 0.25)  # back under 0.3 but above clear: still firing, value moves on
    assert (moved.id, moved.state, moved.value) == (fired.id, AlertState.FIRING, 0.25)
    assert hour(4, None) == []  # no data: neither breach nor clear
    [resolved] = hour(5, 0.15)
    assert (resolved.id, resolved.state) == (fired.id, AlertState.RESOLVED)
    assert resolved.resolved_at == 6 * 3600.0
    events = [(n["notifier"], n["event"]) for n in resolved.detail["notifications"]]
    assert events == [("ops", "fire"), ("log", "fire"), ("ops", "resolve"), ("log", "resolve")]
    assert [b["status"] for b in receiver.bodies] == ["firing", "resolved"]
    assert receiver.bodies[1]["alerts"][0]["endsAt"] == "1970-01-01T06:00:00.000Z"
    # the same fingerprint for both: Alertmanager-style receivers pair them up
    assert len({b["alerts"][0]["fingerprint"] for b in receiver.bodies}) == 1
    stored = ws.metadata.monitor.alerts(pid, environment="production")
    assert [a.id for a in stored] == [fired.id]


def test_failed_deliveries_are_recorded_not_raised(ws: Workspace, receiver: Receiver) -> None:
    receiver.statuses = [500, 500, 500]
    spec = monitor_spec(receiver.url, windows=1, of=1, notify=["ops", "log"])

    def broken(name: str, notifier: NotifierSpec) -> Notifier:
        if notifier.kind == "log":
            raise RuntimeError("log sink unavailable")
        return WebhookNotifier(name, notifier, backoff_seconds=0.01)

    add_window(ws, 0, 0.9)
    [alert] = apply_alerts(ws, ws.project.id, "production", spec, [], notifier_factory=broken)
    ops, log = alert.detail["notifications"]
    assert (ops["ok"], ops["attempts"], ops["status"]) == (False, 3, 500)
    assert (log["ok"], log["error"]) == (False, "RuntimeError: log sink unavailable")
    assert alert.state is AlertState.FIRING and len(receiver.bodies) == 3


def test_windows_default_to_the_stored_history(ws: Workspace, receiver: Receiver) -> None:
    spec = monitor_spec(receiver.url)
    for h, share in enumerate([0.5, 0.5, 0.1]):
        add_window(ws, h, share)
    [alert] = apply_alerts(ws, ws.project.id, "production", spec, [])
    assert (alert.value, alert.detail["breaching"]) == (0.1, 2)
    # another environment is separate
    assert apply_alerts(ws, ws.project.id, "staging", spec, []) == []


def test_an_alert_whose_rule_left_the_spec_is_resolved(ws: Workspace, receiver: Receiver) -> None:
    add_window(ws, 0, 0.9)
    spec = monitor_spec(receiver.url, windows=1, of=1)
    [alert] = apply_alerts(ws, ws.project.id, "production", spec, [])
    add_window(ws, 1, 0.9)
    [retired] = apply_alerts(ws, ws.project.id, "production", MonitorSpec(), [])
    assert (retired.id, retired.state) == (alert.id, AlertState.RESOLVED)
    assert "no longer in monitor.alerts" in retired.detail["resolved_because"]
