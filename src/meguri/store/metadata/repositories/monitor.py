"""The monitoring aggregate: the windows computed from captured predictions, and the alerts
they fire.

A window is identified by ``(project, environment, start, end)``. Saving one again (late
feedback brings labels, a rerun fixes a bug) is an upsert (``INSERT ... ON CONFLICT DO UPDATE``,
which SQLite and PostgreSQL both speak): the content is replaced, the ``id`` stays, so the
alerts that point at the window stay valid. A batch of windows is validated first and then
written in one transaction, so a bad window leaves nothing behind.

At most one alert of a rule fires per project environment. The repository refuses a second
with :class:`~meguri.errors.ConflictError`, and the unique constraint on
``(project, environment, firing_rule)`` (``firing_rule`` is NULL once resolved) refuses it in
the database too, for two writers that race past the check.

The audit log gets one event per saved batch and environment (``monitor.windows_saved``, with
the count and time range, not each window) and one per alert change; the actor is ``by``,
``system`` when the caller names none (the monitoring loop).
"""

from __future__ import annotations

import builtins
import math
import numbers
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from meguri.errors import ConflictError, DataError, NotFoundError
from meguri.store._ids import new_id
from meguri.store.metadata._engine import Database
from meguri.store.metadata._entities import Alert, AlertState, MonitorWindow, NewAuditEvent
from meguri.store.metadata._schema import alerts, monitor_windows, projects
from meguri.store.metadata.repositories.audit import SYSTEM, record

__all__ = ["UNSET", "FigurePoint", "MonitorRepository", "NewWindow"]


@dataclass(frozen=True)
class NewWindow:
    """A window before it is stored (see :meth:`MonitorRepository.save_windows`); the fields
    mean what they mean on :class:`~meguri.store.metadata.MonitorWindow`."""

    project_id: str
    environment: str
    start: float
    end: float
    rows: int
    model_versions: Mapping[str, int] = field(default_factory=dict)
    figures: Mapping[str, float | None] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)


class FigurePoint(NamedTuple):
    """One figure of one window: the window's ``[start, end)`` and the ``value`` (None when the
    window did not measure it)."""

    start: float
    end: float
    value: float | None


class _Unset(Enum):
    UNSET = "unset"


#: "Leave as it is" for :meth:`MonitorRepository.update_alert` arguments where None means
#: something (no value, not resolved).
UNSET: Final = _Unset.UNSET

_W = monitor_windows.c
_A = alerts.c
_CONTENT = ("rows", "model_versions_json", "figures", "details_json", "created_at")
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class MonitorRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- windows -------------------------------------------------------------------------------

    def save_windows(
        self, windows: Sequence[NewWindow], *, by: str | None = None
    ) -> list[MonitorWindow]:
        """Store ``windows`` in one transaction, replacing any stored window with the same
        ``(project, environment, start, end)``; the stored windows, in the order given.

        Raises :class:`DataError` naming the field of a malformed window (``end`` not after
        ``start``, a figure that is not a number; NaN and infinite figures are stored as None)
        and :class:`NotFoundError` for an unknown project. Nothing is written then."""
        now = time.time()
        rows = {_key_of(w): _window_row(w, now) for w in windows}  # a repeated key: last wins
        if not rows:
            return []
        with self._db.write() as conn:
            _require_projects(conn, {w.project_id for w in windows})
            conn.execute(_upsert(conn.dialect.name), builtins.list(rows.values()))
            keys = sa.tuple_(_W.project_id, _W.environment, _W.start, _W.end)
            query = sa.select(monitor_windows).where(keys.in_(builtins.list(rows)))
            stored = {_key_of(w): w for w in map(_window, conn.execute(query))}
            record(conn, _saved_events(by or SYSTEM, stored.values()))
        return [stored[_key_of(w)] for w in windows]

    def windows(
        self,
        project_id: str,
        environment: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> builtins.list[MonitorWindow]:
        """The environment's windows that start in ``[since, until)``, oldest first; with
        ``limit``, the latest ``limit`` of them (still oldest first)."""
        query = _range(sa.select(monitor_windows), project_id, environment, since, until, limit)
        with self._db.read() as conn:
            found = [_window(row) for row in conn.execute(query)]
        return found[::-1] if limit is not None else found

    def figure_series(
        self,
        project_id: str,
        environment: str,
        figure: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> builtins.list[FigurePoint]:
        """One figure over the windows :meth:`windows` would return, without loading their
        details (for charts, Prometheus and k-of-N alert rules). The figure is picked from each
        window's figures here rather than with a SQL JSON path: a column name may hold quotes
        or non-ASCII letters, which SQLite's JSON paths do not match reliably."""
        query = _range(
            sa.select(_W.start, _W.end, _W.figures), project_id, environment, since, until, limit
        )
        with self._db.read() as conn:
            found = [FigurePoint(s, e, f.get(figure)) for s, e, f in conn.execute(query)]
        return found[::-1] if limit is not None else found

    def get_window(self, window_id: str) -> MonitorWindow:
        with self._db.read() as conn:
            row = conn.execute(sa.select(monitor_windows).where(_W.id == window_id)).first()
        if row is None:
            raise _no_window(window_id)
        return _window(row)

    def environments(self, project_id: str) -> builtins.list[str]:
        """The project's environments that have windows, by name."""
        query = (
            sa.select(_W.environment)
            .where(_W.project_id == project_id)
            .distinct()
            .order_by(_W.environment)
        )
        with self._db.read() as conn:
            return builtins.list(conn.execute(query).scalars())

    # -- alerts --------------------------------------------------------------------------------

    def open_alert(
        self,
        project_id: str,
        environment: str,
        rule: str,
        *,
        severity: str,
        value: float | None,
        window_id: str,
        detail: Mapping[str, Any] | None = None,
        started_at: float | None = None,
        by: str | None = None,
    ) -> Alert:
        """A new firing alert of ``rule`` in the environment, fired by window ``window_id``
        (``started_at`` defaults to now).

        Raises :class:`ConflictError` when the rule already fires there: update that alert,
        or resolve it first."""
        _require_text(rule=rule, severity=severity, environment=environment)
        now = time.time()
        row = {
            "id": new_id("al"),
            "project_id": project_id,
            "environment": environment,
            "rule": rule,
            "severity": severity,
            "state": AlertState.FIRING.value,
            "firing_rule": rule,
            "value": _finite(value),
            "started_at": now if started_at is None else started_at,
            "resolved_at": None,
            "window_id": window_id,
            "last_window_id": window_id,
            "detail_json": _dumps(dict(detail or {}), "detail"),
            "created_at": now,
        }
        try:
            with self._db.write() as conn:
                _require_window(conn, window_id, project_id, environment)
                _refuse_second_firing(conn, project_id, environment, rule)
                conn.execute(alerts.insert(), row)
                alert = _alert(conn.execute(_alert_by_id(str(row["id"]))).one())
                detail = {"severity": severity, "value": alert.value, "window": window_id}
                record(conn, [_alert_event(by, "alert.opened", alert, detail)])
                return alert
        except sa.exc.IntegrityError:  # a concurrent writer opened it first
            raise _already_firing(rule, environment, None) from None

    def update_alert(
        self,
        alert_id: str,
        *,
        value: float | _Unset | None = UNSET,
        last_window_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
        state: AlertState | None = None,
        resolved_at: float | _Unset | None = UNSET,
        by: str | None = None,
    ) -> Alert:
        """Change the given fields of an alert; ``detail`` is merged into the stored detail
        (its top-level keys replace the stored ones). Resolving sets ``resolved_at`` to now
        unless given; firing again clears it, and raises :class:`ConflictError` when another
        alert of the rule fires meanwhile."""
        try:
            with self._db.write() as conn:
                row = conn.execute(_alert_by_id(alert_id).with_for_update()).first()
                if row is None:
                    raise _no_alert(alert_id)
                if last_window_id is not None:
                    _require_window(conn, last_window_id, row.project_id, row.environment)
                changes = _alert_changes(row, value, last_window_id, detail, state, resolved_at)
                conn.execute(alerts.update().where(_A.id == alert_id).values(changes))
                alert = _alert(conn.execute(_alert_by_id(alert_id)).one())
                action = _alert_action(row.state, alert.state)
                described = {
                    k: v for k, v in changes.items() if k not in ("detail_json", "firing_rule")
                }
                described["detail"] = dict(detail or {})
                record(conn, [_alert_event(by, action, alert, described)])
                return alert
        except sa.exc.IntegrityError:  # fired again while another alert of the rule fires
            alert = self.get_alert(alert_id)
            raise _already_firing(alert.rule, alert.environment, None) from None

    def alerts(
        self,
        project_id: str,
        *,
        environment: str | None = None,
        rule: str | None = None,
        state: AlertState | None = None,
        limit: int | None = None,
    ) -> builtins.list[Alert]:
        """The project's alerts, newest first, narrowed to the given environment, rule, state."""
        query = sa.select(alerts).where(_A.project_id == project_id)
        if environment is not None:
            query = query.where(_A.environment == environment)
        if rule is not None:
            query = query.where(_A.rule == rule)
        if state is not None:
            query = query.where(_A.state == AlertState(state).value)
        _require_limit(limit)
        query = query.order_by(_A.created_at.desc(), _A.id.desc()).limit(limit)
        with self._db.read() as conn:
            return [_alert(row) for row in conn.execute(query)]

    def get_alert(self, alert_id: str) -> Alert:
        with self._db.read() as conn:
            row = conn.execute(_alert_by_id(alert_id)).first()
        if row is None:
            raise _no_alert(alert_id)
        return _alert(row)


# -- windows: validation and rows ------------------------------------------------------------


def _key_of(window: NewWindow | MonitorWindow) -> tuple[str, str, float, float]:
    return (window.project_id, window.environment, float(window.start), float(window.end))


def _window_row(window: NewWindow, now: float) -> dict[str, Any]:
    where = f"the window of environment {window.environment!r} starting at {window.start!r}"
    _require_text(environment=window.environment)
    start = _real(window.start, f"start of {where}")
    end = _real(window.end, f"end of {where}")
    for name, value in (("start", start), ("end", end)):
        if value is None:
            raise DataError(f"The {name} of {where} is not a finite time; give epoch seconds")
    if not end > start:  # type: ignore[operator]  # both checked finite above
        raise DataError(
            f"The end ({window.end!r}) of {where} must be a finite time after its start; "
            "windows are [start, end) in epoch seconds"
        )
    return {
        "id": new_id("mw"),
        "project_id": window.project_id,
        "environment": window.environment,
        "start": start,
        "end": end,
        "rows": _count(window.rows, f"rows of {where}"),
        "model_versions_json": _dumps(_model_versions(window.model_versions, where), where),
        "figures": _figures(window.figures, where),
        "details_json": _dumps(dict(window.details), f"details of {where}"),
        "created_at": now,
    }


def _figures(figures: Mapping[str, object], where: str) -> dict[str, float | None]:
    clean: dict[str, float | None] = {}
    for name, value in figures.items():
        if not isinstance(name, str) or not name:
            raise DataError(f"A figure name of {where} is {name!r}; name figures with text")
        if value is not None and not isinstance(value, numbers.Real):
            raise DataError(
                f"figures[{name!r}] of {where} is {type(value).__name__} {value!r}; a figure "
                "is a number or None"
            )
        clean[name] = _finite(value)
    return clean


def _model_versions(versions: Mapping[str, object], where: str) -> dict[str, int]:
    return {
        str(ref): _count(rows, f"model_versions[{ref!r}] of {where}")
        for ref, rows in versions.items()
    }


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise DataError(f"The {what} is {value!r}; it must be a whole number of rows, 0 or more")
    return int(value)


def _real(value: object, what: str) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"The {what} is {value!r}; it must be a time in epoch seconds")
    return _finite(value)


def _finite(value: object) -> float | None:
    """``value`` as a float, None for None, NaN and infinities (not numbers a chart can draw,
    and not storable in every backend)."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]  # callers checked numbers.Real
    return number if math.isfinite(number) else None


def _dumps(value: object, what: str) -> str:
    try:
        return orjson.dumps(value, option=_JSON_OPTIONS).decode()
    except TypeError as err:
        raise DataError(f"The {what} cannot be stored as JSON: {err}") from None


def _require_text(**values: str) -> None:
    for name, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"The {name} is {value!r}; give a non-empty name")


def _require_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise DataError(f"The limit is {limit!r}; give a whole number, 0 or more, or None")


def _require_projects(conn: sa.Connection, project_ids: Iterable[str]) -> None:
    wanted = set(project_ids)
    found = set(conn.execute(sa.select(projects.c.id).where(projects.c.id.in_(wanted))).scalars())
    for missing in sorted(wanted - found):
        raise NotFoundError(
            f"No project with id {missing!r} (the project_id of a monitor window); open the "
            "workspace (meguri.init()) so that the project exists"
        )


def _upsert(dialect: str) -> sa.Insert:
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    statement = insert(monitor_windows)
    return statement.on_conflict_do_update(
        index_elements=[_W.project_id, _W.environment, _W.start, _W.end],
        set_={name: statement.excluded[name] for name in _CONTENT},
    )


def _range(
    query: sa.Select[Any],
    project_id: str,
    environment: str,
    since: float | None,
    until: float | None,
    limit: int | None,
) -> sa.Select[Any]:
    query = query.where(_W.project_id == project_id, _W.environment == environment)
    _require_limit(limit)
    if since is not None:
        query = query.where(_W.start >= since)
    if until is not None:
        query = query.where(_W.start < until)
    if limit is None:
        return query.order_by(_W.start, _W.end)
    return query.order_by(_W.start.desc(), _W.end.desc()).limit(limit)


def _window(row: sa.Row[Any]) -> MonitorWindow:
    m = row._mapping
    return MonitorWindow(
        id=m["id"],
        project_id=m["project_id"],
        environment=m["environment"],
        start=m["start"],
        end=m["end"],
        rows=m["rows"],
        model_versions=orjson.loads(m["model_versions_json"]),
        figures=dict(m["figures"]),
        details=orjson.loads(m["details_json"]),
        created_at=m["created_at"],
    )


def _require_window(conn: sa.Connection, window_id: str, project_id: str, env: str) -> None:
    query = sa.select(_W.id).where(
        _W.id == window_id, _W.project_id == project_id, _W.environment == env
    )
    if conn.execute(query).first() is None:
        raise NotFoundError(
            f"No monitor window {window_id!r} in environment {env!r} of project {project_id!r} "
            "(the window of an alert must be one of its environment's stored windows); "
            "`meguri monitor show --env ENV` lists them"
        )


def _no_window(window_id: str) -> NotFoundError:
    return NotFoundError(
        f"No monitor window {window_id!r}; `meguri monitor show --env ENV` lists the windows "
        "and `meguri monitor run --env ENV` computes them"
    )


# -- alerts ----------------------------------------------------------------------------------


def _alert_by_id(alert_id: str) -> sa.Select[Any]:
    return sa.select(alerts).where(_A.id == alert_id)


def _refuse_second_firing(conn: sa.Connection, project_id: str, env: str, rule: str) -> None:
    query = sa.select(_A.id).where(
        _A.project_id == project_id, _A.environment == env, _A.firing_rule == rule
    )
    firing = conn.execute(query).scalar_one_or_none()
    if firing is not None:
        raise _already_firing(rule, env, firing)


def _alert_changes(
    row: sa.Row[Any],
    value: float | _Unset | None,
    last_window_id: str | None,
    detail: Mapping[str, Any] | None,
    state: AlertState | None,
    resolved_at: float | _Unset | None,
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if value is not UNSET:
        changes["value"] = _finite(value)
    if last_window_id is not None:
        changes["last_window_id"] = last_window_id
    if detail:
        changes["detail_json"] = _dumps({**orjson.loads(row.detail_json), **detail}, "detail")
    if state is not None:
        state = AlertState(state)
        firing = state is AlertState.FIRING
        changes["state"] = state.value
        changes["firing_rule"] = row.rule if firing else None
        if firing or row.resolved_at is None:  # firing again clears it; resolving sets it once
            changes["resolved_at"] = None if firing else time.time()
    if resolved_at is not UNSET:
        changes["resolved_at"] = resolved_at
    return changes


def _saved_events(actor: str, windows: Iterable[MonitorWindow]) -> builtins.list[NewAuditEvent]:
    """One ``monitor.windows_saved`` event per (project, environment) of the batch."""
    groups: dict[tuple[str, str], builtins.list[MonitorWindow]] = {}
    for window in windows:
        groups.setdefault((window.project_id, window.environment), []).append(window)
    return [
        NewAuditEvent(
            actor,
            "monitor.windows_saved",
            "environment",
            environment,
            project_id,
            {
                "windows": len(group),
                "start": min(w.start for w in group),
                "end": max(w.end for w in group),
            },
        )
        for (project_id, environment), group in sorted(groups.items())
    ]


def _alert_action(before: str, after: AlertState) -> str:
    if AlertState(before) is after:
        return "alert.updated"
    return "alert.resolved" if after is AlertState.RESOLVED else "alert.refired"


def _alert_event(
    by: str | None, action: str, alert: Alert, detail: dict[str, Any]
) -> NewAuditEvent:
    info = {"environment": alert.environment, "rule": alert.rule, **detail}
    return NewAuditEvent(by or SYSTEM, action, "alert", alert.id, alert.project_id, info)


def _alert(row: sa.Row[Any]) -> Alert:
    m = dict(row._mapping)
    del m["firing_rule"]
    detail = orjson.loads(m.pop("detail_json"))
    return Alert(**{**m, "state": AlertState(m["state"]), "detail": detail})


def _already_firing(rule: str, environment: str, alert_id: str | None) -> ConflictError:
    which = f" ({alert_id})" if alert_id else ""
    return ConflictError(
        f"Alert rule {rule!r} already fires in environment {environment!r}{which}; update that "
        "alert (update_alert) or resolve it before opening another. "
        "`meguri monitor show --env ENV` lists the firing alerts"
    )


def _no_alert(alert_id: str) -> NotFoundError:
    return NotFoundError(f"No alert {alert_id!r}; `meguri monitor show --env ENV` lists the alerts")
