"""Alert rules over monitor windows: fire, keep firing, resolve with hysteresis.

A rule watches one window figure (``drift.share``, ``latency_p99_ms``...) against ``above`` or
``below``, or one success criterion measured on production against the figure that measures
it (``accuracy.<metric>`` once labels arrive; ``latency_p95_ms`` for a latency). A window
*breaches* when its value is past the threshold (for a criterion: when the criterion
fails). Windows without the figure (no labels yet, no traffic) carry no evidence either way and
are skipped, so a quiet hour neither fires nor resolves anything.

* **fire**: at least ``windows`` of the last ``of`` windows with the figure breach (``2 of 3``
  keeps one noisy window from paging anyone);
* **still firing**: the rule holds, or it no longer holds but the newest value sits between the
  threshold and ``clear`` (hysteresis: a figure hovering at the threshold does not flap);
* **resolve**: the rule no longer holds *and* the newest value is back past ``clear`` (by default
  the threshold itself; for a criterion, the criterion passes again).

:func:`evaluate` is pure (windows and firing alerts in, transitions out); :func:`apply_alerts`
reads the firing alerts from the store, records the transitions and notifies.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from meguri.errors import SpecError
from meguri.monitor._exporter import project_label
from meguri.monitor._notify import AlertEvent, Delivery, Notifier, build_notifier
from meguri.spec._model import SuccessCriterion
from meguri.spec._monitor import AlertRuleSpec, MonitorSpec, NotifierSpec
from meguri.store.metadata import Alert, AlertState

if TYPE_CHECKING:
    from meguri.store import Workspace

__all__ = [
    "RuleCheck",
    "Transition",
    "TransitionKind",
    "WindowLike",
    "apply_alerts",
    "evaluate",
    "rule_check",
]

_log = logging.getLogger("meguri.monitor.alerts")


class WindowLike(Protocol):
    """What evaluation reads of a :class:`MonitorWindow`."""

    @property
    def id(self) -> str: ...

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    @property
    def figures(self) -> Mapping[str, float | None]: ...


class TransitionKind(StrEnum):
    FIRE = "fire"
    FIRING = "firing"
    """Still firing: the alert's value and window move on."""
    RESOLVE = "resolve"


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """One rule made concrete: the figure it reads and how a value breaches or clears it."""

    rule: AlertRuleSpec
    figure: str
    criterion: SuccessCriterion | None

    def breaches(self, value: float) -> bool:
        if self.criterion is not None:
            return not self.criterion.check(value)
        if self.rule.above is not None:
            return value > self.rule.above
        return value < self.rule.below if self.rule.below is not None else False

    def cleared(self, value: float) -> bool:
        """Whether ``value`` is back past ``clear`` (default: no longer breaching)."""
        clear = self.rule.clear
        if clear is None:
            return not self.breaches(value)
        if self.criterion is not None:
            comparison = self.criterion.comparison
            if comparison in (">=", ">"):
                return value >= clear
            if comparison in ("<=", "<"):
                return value <= clear
            return self.criterion.check(value)
        return value <= clear if self.rule.above is not None else value >= clear

    def condition(self) -> str:
        """The breaching condition in words, e.g. ``drift.share > 0.3``."""
        if self.criterion is not None:
            return f"{self.figure} fails {self.criterion.comparison} {self.criterion.threshold:g}"
        if self.rule.above is not None:
            return f"{self.figure} > {self.rule.above:g}"
        return f"{self.figure} < {self.rule.below:g}"


@dataclass(frozen=True, slots=True)
class Transition:
    """What one rule does after the newest window: fire, stay firing, or resolve."""

    check: RuleCheck
    kind: TransitionKind
    value: float
    """The figure in the newest window that has it."""
    window_id: str
    window_end: float
    breaching: int
    """Windows breaching among the last ``of`` that have the figure."""
    considered: int

    @property
    def rule(self) -> AlertRuleSpec:
        return self.check.rule

    def summary(self) -> str:
        """One line for a person: what breached, how often, and the latest value."""
        rule = self.rule
        state = "resolved" if self.kind is TransitionKind.RESOLVE else "firing"
        return (
            f"{rule.name} {state}: {self.check.figure} = {self.value:.6g} "
            f"({self.check.condition()} in {self.breaching} of the last {self.considered} "
            f"windows; fires at {rule.windows} of {rule.of})"
        )


def rule_check(rule: AlertRuleSpec, criteria: Mapping[str, SuccessCriterion]) -> RuleCheck:
    """The figure ``rule`` reads and its breach test; a criterion must be in ``criteria``.

    A criterion is checked on the figure the windows measure it by: ``accuracy.<metric>`` for
    model metrics, the figure itself for system ones (``latency_p95_ms``), ``drift.share`` for
    ``drift_share``."""
    if rule.figure is not None:
        return RuleCheck(rule, rule.figure, None)
    criterion = criteria.get(rule.criterion or "")
    if criterion is None:
        known = ", ".join(sorted(criteria)) or "none"
        raise SpecError(
            f"alert {rule.name!r} names criterion {rule.criterion!r}, which is not a success "
            f"criterion measured on production (known: {known}); fix monitor.alerts"
        )
    from meguri.monitor._windows import criterion_figure  # windows name the figures

    return RuleCheck(rule, criterion_figure(criterion.metric), criterion)


def evaluate(
    rules: Iterable[AlertRuleSpec],
    criteria: Iterable[SuccessCriterion],
    windows: Sequence[WindowLike],
    firing: Mapping[str, object],
) -> list[Transition]:
    """The transitions after ``windows`` (oldest to newest) for each rule.

    ``firing`` maps a rule name to its currently firing alert; rules absent from it are quiet.
    A quiet rule that does not fire and a rule without any window carrying its figure yield no
    transition.
    """
    by_id = {c.id: c for c in criteria}
    ordered = sorted(windows, key=lambda w: w.end)
    out = []
    for rule in rules:
        transition = _evaluate_rule(rule_check(rule, by_id), ordered, rule.name in firing)
        if transition is not None:
            out.append(transition)
    return out


def _value(window: WindowLike, figure: str) -> float | None:
    value = window.figures.get(figure)
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _evaluate_rule(
    check: RuleCheck, windows: Sequence[WindowLike], is_firing: bool
) -> Transition | None:
    evidence = [(w, v) for w in windows if (v := _value(w, check.figure)) is not None]
    recent = evidence[-check.rule.of :]
    if not recent:
        return None
    breaching = sum(check.breaches(value) for _, value in recent)
    holds = breaching >= check.rule.windows
    newest, value = recent[-1]
    if holds:
        kind = TransitionKind.FIRING if is_firing else TransitionKind.FIRE
    elif not is_firing:
        return None
    else:
        kind = TransitionKind.RESOLVE if check.cleared(value) else TransitionKind.FIRING
    return Transition(check, kind, value, newest.id, newest.end, breaching, len(recent))


# --- the store and the notifiers -------------------------------------------------------------

NotifierFactory = Callable[[str, NotifierSpec], Notifier]
"""Builds a notifier from its name and spec (:func:`~meguri.monitor._notify.build_notifier`)."""


def apply_alerts(
    ws: Workspace,
    project_id: str,
    environment: str,
    spec: MonitorSpec,
    criteria: Iterable[SuccessCriterion],
    windows: Sequence[WindowLike] | None = None,
    *,
    notifier_factory: NotifierFactory = build_notifier,
    external_url: str = "",
    history: int = 100,
) -> list[Alert]:
    """Evaluate ``spec.alerts`` over ``windows``, record each transition, notify fire/resolve.

    ``windows`` are the environment's stored windows, oldest first, ending with the newest;
    they must reach back far enough to hold each rule's last ``of`` windows with its figure.
    ``None`` reads the latest ``history`` windows from the store. ``criteria`` are the spec's
    success criteria (rules may name those measured on production).

    Returns the alerts that changed (opened, moved on or resolved), as stored afterwards. Each
    notification's outcome is appended to the alert's ``detail["notifications"]``; a failed
    delivery is recorded, never raised. An alert starts and resolves at the end of the window
    that fired or cleared it: what the data showed, also when windows are computed late.
    """
    repo = ws.metadata.monitor
    if windows is None:
        windows = repo.windows(project_id, environment, limit=history)
    state = AlertState.FIRING
    firing = {a.rule: a for a in repo.alerts(project_id, environment=environment, state=state)}
    transitions = evaluate(spec.alerts, criteria, windows, firing)
    context = _Context(ws, project_id, environment, spec, notifier_factory, external_url)
    changed = [context.apply(t, firing.get(t.rule.name)) for t in transitions]
    ruled = {rule.name for rule in spec.alerts}
    orphans = [_retire(ws, alert) for name, alert in firing.items() if name not in ruled]
    return [alert for alert in changed if alert is not None] + orphans


def _retire(ws: Workspace, alert: Alert) -> Alert:
    """Resolve an alert whose rule left the spec: nothing would ever evaluate it again, and it
    would fire forever on the dashboards."""
    _log.info("alert %s resolved: its rule is no longer in the spec", alert.rule)
    reason = "the rule is no longer in monitor.alerts of the spec"
    return ws.metadata.monitor.update_alert(
        alert.id, state=AlertState.RESOLVED, detail={"resolved_because": reason}
    )


@dataclass
class _Context:
    ws: Workspace
    project_id: str
    environment: str
    spec: MonitorSpec
    notifier_factory: NotifierFactory
    external_url: str

    def apply(self, transition: Transition, current: Alert | None) -> Alert | None:
        if transition.kind is TransitionKind.FIRE:
            return self._fire(transition)
        if current is None:  # evaluate() only moves on or resolves a firing alert
            raise ValueError(f"no firing alert of rule {transition.rule.name!r} to update")
        if transition.kind is TransitionKind.RESOLVE:
            return self._resolve(transition, current)
        if current.value == transition.value and current.last_window_id == transition.window_id:
            return None  # nothing new since the last run
        return self.ws.metadata.monitor.update_alert(
            current.id,
            value=transition.value,
            last_window_id=transition.window_id,
            detail=_detail(transition),
        )

    def _fire(self, transition: Transition) -> Alert:
        rule = transition.rule
        alert = self.ws.metadata.monitor.open_alert(
            self.project_id,
            self.environment,
            rule.name,
            severity=rule.severity,
            value=transition.value,
            window_id=transition.window_id,
            detail=_detail(transition),
            started_at=transition.window_end,
        )
        _log.info("alert %s fired in %s: %s", rule.name, self.environment, transition.summary())
        return self._notify(alert, transition)

    def _resolve(self, transition: Transition, current: Alert) -> Alert:
        resolved = self.ws.metadata.monitor.update_alert(
            current.id,
            value=transition.value,
            last_window_id=transition.window_id,
            detail=_detail(transition),
            state=AlertState.RESOLVED,
            resolved_at=max(transition.window_end, current.started_at),
        )
        _log.info("alert %s resolved in %s", transition.rule.name, self.environment)
        return self._notify(resolved, transition)

    def _notify(self, alert: Alert, transition: Transition) -> Alert:
        if not transition.rule.notify:
            return alert
        event = self._event(alert, transition)
        records = list(alert.detail.get("notifications", []))
        for name in transition.rule.notify:
            delivery = self._deliver(name, event)
            records.append({"event": transition.kind.value, **delivery.to_dict()})
        return self.ws.metadata.monitor.update_alert(alert.id, detail={"notifications": records})

    def _deliver(self, name: str, event: AlertEvent) -> Delivery:
        spec = self.spec.notifiers[name]
        try:
            return self.notifier_factory(name, spec).send(event)
        except Exception as exc:  # a notifier must never break the monitor run
            _log.exception("notifier %s failed", name)
            error = f"{type(exc).__name__}: {exc}"
            return Delivery(name, spec.kind, False, 0, None, error, time.time())

    def _event(self, alert: Alert, transition: Transition) -> AlertEvent:
        resolved = transition.kind is TransitionKind.RESOLVE
        return AlertEvent(
            status="resolved" if resolved else "firing",
            rule=alert.rule,
            severity=alert.severity,
            project=project_label(self.ws, self.project_id),
            environment=self.environment,
            figure=transition.check.figure,
            value=transition.value,
            summary=transition.summary(),
            description=_description(transition),
            starts_at=alert.started_at,
            ends_at=alert.resolved_at if resolved else None,
            alert_id=alert.id,
            window_id=transition.window_id,
            external_url=self.external_url,
        )


def _detail(transition: Transition) -> dict[str, Any]:
    return {
        "figure": transition.check.figure,
        "condition": transition.check.condition(),
        "breaching": transition.breaching,
        "considered": transition.considered,
        "window_end": transition.window_end,
        "summary": transition.summary(),
    }


def _description(transition: Transition) -> str:
    clear = transition.rule.clear
    back = f"{clear:g}" if clear is not None else "its threshold"
    return (
        f"{transition.summary()}. Latest window {transition.window_id}. Resolves once the rule "
        f"no longer holds and {transition.check.figure} is back past {back}."
    )
