"""Contract of the monitoring repository (windows and alerts), run on every metadata backend."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from meguri.errors import ConflictError, DataError, NotFoundError
from meguri.store.metadata import AlertState, MetadataStore, MonitorWindow
from meguri.store.metadata._schema import alerts
from meguri.store.metadata.repositories.monitor import NewWindow

__all__ = [
    "test_alerts_list_newest_first_and_filter",
    "test_bad_windows_name_the_field_and_write_nothing",
    "test_concurrent_openers_of_one_rule_one_wins",
    "test_concurrent_saves_of_one_window_keep_one",
    "test_one_alert_of_a_rule_fires_per_environment",
    "test_saving_a_window_again_replaces_it",
    "test_the_database_refuses_a_second_firing_alert",
    "test_unknown_windows_and_alerts_raise_not_found",
    "test_update_alert_merges_detail_and_resolves",
    "test_windows_order_range_limit_and_figure_series",
    "test_windows_round_trip",
]

THREADS = 6
HOUR = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _project(store: MetadataStore, name: str = "monitoring") -> str:
    return store.projects.ensure(name, "tester").id


def _window(project_id: str, hour: int, env: str = "production", **fields: Any) -> NewWindow:
    values: dict[str, Any] = {
        "rows": 100 + hour,
        "model_versions": {"churn@1": 100 + hour},
        "figures": {"requests": 100.0 + hour, "drift.share": hour / 10},
        "details": {"drift": {"share": hour / 10, "columns": [{"name": "age"}]}},
    }
    values.update(fields)
    return NewWindow(project_id, env, T0 + hour * HOUR, T0 + (hour + 1) * HOUR, **values)


def _saved(store: MetadataStore, project_id: str, hours: range) -> list[MonitorWindow]:
    return store.monitor.save_windows([_window(project_id, h) for h in hours])


def test_windows_round_trip(metadata_store: MetadataStore) -> None:
    project_id = _project(metadata_store)
    figures = {"requests": 120, "latency_p95_ms": math.nan, "drift.column.age": math.inf}
    details = {"drift": {"columns": [{"name": "age", "p_value": math.nan}]}, "system": {}}
    new = _window(project_id, 0, figures=figures, details=details)
    [saved] = metadata_store.monitor.save_windows([new])
    assert saved.id.startswith("mw-") and saved.created_at > 0
    assert (saved.project_id, saved.environment) == (project_id, "production")
    assert (saved.start, saved.end, saved.rows) == (T0, T0 + HOUR, 100)
    assert saved.model_versions == {"churn@1": 100}
    # NaN and infinities are not numbers a chart can draw: stored as "not measured".
    assert saved.figures == {"requests": 120.0, "latency_p95_ms": None, "drift.column.age": None}
    assert saved.details == {"drift": {"columns": [{"name": "age", "p_value": None}]}, "system": {}}
    assert metadata_store.monitor.get_window(saved.id) == saved
    assert metadata_store.monitor.windows(project_id, "production") == [saved]
    assert metadata_store.monitor.environments(project_id) == ["production"]
    assert metadata_store.monitor.save_windows([]) == []
    # Figures of columns with quotes and non-ASCII names read back like any other.
    odd = {'drift.column.a"b': 0.25, "drift.column.気温": 0.5, "drift.column.it's": None}
    [later] = metadata_store.monitor.save_windows([_window(project_id, 1, figures=odd)])
    assert later.figures == odd
    for name, value in odd.items():
        series = metadata_store.monitor.figure_series(project_id, "production", name)
        assert series == [(saved.start, saved.end, None), (later.start, later.end, value)]


def test_saving_a_window_again_replaces_it(metadata_store: MetadataStore) -> None:
    project_id = _project(metadata_store)
    first, other = _saved(metadata_store, project_id, range(2))
    late = _window(project_id, 0, rows=7, figures={"labels": 5.0}, details={"accuracy": {}})
    [again] = metadata_store.monitor.save_windows([late])
    assert again.id == first.id  # alerts that point at the window stay valid
    assert (again.rows, again.figures, again.details) == (7, {"labels": 5.0}, {"accuracy": {}})
    assert again.model_versions == {"churn@1": 100} and again.created_at >= first.created_at
    assert metadata_store.monitor.windows(project_id, "production") == [again, other]
    # The same key twice in one batch: the last one wins, both results name the one window.
    twice = [_window(project_id, 1, rows=1), _window(project_id, 1, rows=2)]
    stored = metadata_store.monitor.save_windows(twice)
    assert [w.id for w in stored] == [other.id, other.id] and stored[1].rows == 2
    assert len(metadata_store.monitor.windows(project_id, "production")) == 2


def test_windows_order_range_limit_and_figure_series(metadata_store: MetadataStore) -> None:
    project_id = _project(metadata_store)
    repo = metadata_store.monitor
    saved = repo.save_windows([_window(project_id, h) for h in (5, 0, 3, 1, 4, 2)])
    repo.save_windows([_window(project_id, 9, env="staging")])
    repo.save_windows([_window(_project(metadata_store, "other"), 9)])
    ordered = sorted(saved, key=lambda w: w.start)
    assert repo.windows(project_id, "production") == ordered
    since, until = T0 + 1 * HOUR, T0 + 4 * HOUR  # windows that start in [since, until)
    expected = [w for w in ordered if since <= w.start < until]
    assert [w.start for w in expected] == [T0 + h * HOUR for h in (1, 2, 3)]
    assert repo.windows(project_id, "production", since=since, until=until) == expected
    assert repo.windows(project_id, "production", limit=2) == ordered[-2:]  # latest, oldest first
    assert repo.windows(project_id, "production", until=until, limit=2) == ordered[2:4]
    assert repo.windows(project_id, "production", since=T0 + 99 * HOUR) == []
    assert repo.windows(project_id, "production", limit=0) == []
    assert repo.environments(project_id) == ["production", "staging"]
    assert repo.environments(_project(metadata_store, "empty")) == []
    series = repo.figure_series(project_id, "production", "drift.share", since=since, limit=2)
    assert series == [(w.start, w.end, w.figures["drift.share"]) for w in ordered[-2:]]
    missing = repo.figure_series(project_id, "production", "accuracy.roc_auc")
    assert [p.value for p in missing] == [None] * 6


def test_bad_windows_name_the_field_and_write_nothing(metadata_store: MetadataStore) -> None:
    project_id = _project(metadata_store)
    good = _window(project_id, 0)
    bad: list[tuple[NewWindow, str]] = [
        (NewWindow(project_id, "production", T0, T0, 1), "end"),
        (NewWindow(project_id, "production", math.nan, T0, 1), "start"),
        (_window(project_id, 1, rows=-1), "rows"),
        (_window(project_id, 1, figures={"requests": "many"}), r"figures\['requests'\]"),
        (_window(project_id, 1, model_versions={"churn@1": 1.5}), "model_versions"),
        (_window(project_id, 1, details={"x": object()}), "details"),
        (_window(project_id, 1, env=""), "environment"),
    ]
    for window, field in bad:
        with pytest.raises(DataError, match=field):
            metadata_store.monitor.save_windows([good, window])
    with pytest.raises(NotFoundError, match="prj-nope"):
        metadata_store.monitor.save_windows([good, _window("prj-nope", 1)])
    with pytest.raises(DataError, match="limit"):
        metadata_store.monitor.windows(project_id, "production", limit=-1)
    assert metadata_store.monitor.windows(project_id, "production") == []


def test_one_alert_of_a_rule_fires_per_environment(metadata_store: MetadataStore) -> None:
    project_id = _project(metadata_store)
    window = _saved(metadata_store, project_id, range(1))[0]
    [staging] = metadata_store.monitor.save_windows([_window(project_id, 0, env="staging")])
    repo = metadata_store.monitor
    alert = repo.open_alert(
        project_id, "production", "drift", severity="warning", value=0.4, window_id=window.id
    )
    assert alert.id.startswith("al-") and alert.state is AlertState.FIRING
    assert (alert.window_id, alert.last_window_id, alert.value) == (window.id, window.id, 0.4)
    assert alert.resolved_at is None and alert.detail == {} and alert.started_at > 0
    with pytest.raises(ConflictError, match=f"'drift' already fires.*{alert.id}"):
        repo.open_alert(
            project_id, "production", "drift", severity="x", value=1, window_id=window.id
        )
    # Another rule, or the same rule in another environment, fires on its own.
    repo.open_alert(
        project_id, "production", "latency", severity="critical", value=None, window_id=window.id
    )
    repo.open_alert(
        project_id,
        "staging",
        "drift",
        severity="warning",
        value=0.5,
        window_id=staging.id,
        started_at=T0,
    )
    resolved = repo.update_alert(alert.id, state=AlertState.RESOLVED)
    again = repo.open_alert(
        project_id, "production", "drift", severity="warning", value=0.6, window_id=window.id
    )
    assert again.id != alert.id and resolved.state is AlertState.RESOLVED
    with pytest.raises(ConflictError, match="already fires"):  # re-firing the old one
        repo.update_alert(alert.id, state=AlertState.FIRING)
    firing = repo.alerts(project_id, state=AlertState.FIRING)
    assert sorted((a.environment, a.rule) for a in firing) == [
        ("production", "drift"),
        ("production", "latency"),
        ("staging", "drift"),
    ]


def test_update_alert_merges_detail_and_resolves(metadata_store: MetadataStore) -> None:
    project_id = _project(metadata_store)
    first, second = _saved(metadata_store, project_id, range(2))
    repo = metadata_store.monitor
    alert = repo.open_alert(
        project_id,
        "production",
        "accuracy",
        severity="critical",
        value=0.71,
        window_id=first.id,
        detail={"notifications": [{"notifier": "log", "ok": True}]},
    )
    retrain = {"run_id": "run-1", "model_version": "churn@2", "deployment_revision": 3}
    moved = repo.update_alert(
        alert.id, value=math.nan, last_window_id=second.id, detail={"retraining": retrain}
    )
    assert (moved.value, moved.last_window_id, moved.window_id) == (None, second.id, first.id)
    assert moved.detail == {
        "notifications": [{"notifier": "log", "ok": True}],
        "retraining": retrain,
    }
    assert moved.state is AlertState.FIRING and moved.started_at == alert.started_at
    kept = repo.update_alert(alert.id, detail={"notifications": []})  # value left as it was
    assert kept.value is None and kept.detail == {"notifications": [], "retraining": retrain}
    resolved = repo.update_alert(alert.id, state=AlertState.RESOLVED, value=0.93)
    assert resolved.state is AlertState.RESOLVED and resolved.value == 0.93
    assert resolved.resolved_at is not None and resolved.resolved_at >= alert.started_at
    assert (
        repo.update_alert(alert.id, state=AlertState.RESOLVED).resolved_at == resolved.resolved_at
    )
    dated = repo.update_alert(alert.id, resolved_at=T0)
    assert dated.resolved_at == T0 and repo.get_alert(alert.id) == dated
    refired = repo.update_alert(alert.id, state=AlertState.FIRING)
    assert refired.state is AlertState.FIRING and refired.resolved_at is None


def test_alerts_list_newest_first_and_filter(metadata_store: MetadataStore) -> None:
    project_id = _project(metadata_store)
    window = _saved(metadata_store, project_id, range(1))[0]
    [staging] = metadata_store.monitor.save_windows([_window(project_id, 0, env="staging")])
    repo = metadata_store.monitor
    opened = []
    for env, rule, window_id in [
        ("production", "drift", window.id),
        ("production", "latency", window.id),
        ("staging", "drift", staging.id),
    ]:
        opened.append(
            repo.open_alert(
                project_id, env, rule, severity="warning", value=1.0, window_id=window_id
            )
        )
    repo.update_alert(opened[0].id, state=AlertState.RESOLVED)
    ids = [a.id for a in reversed(opened)]
    assert [a.id for a in repo.alerts(project_id)] == ids
    assert [a.id for a in repo.alerts(project_id, limit=2)] == ids[:2]
    assert [a.id for a in repo.alerts(project_id, rule="drift")] == [ids[0], ids[2]]
    assert [a.id for a in repo.alerts(project_id, environment="staging")] == [ids[0]]
    assert [a.id for a in repo.alerts(project_id, state=AlertState.RESOLVED)] == [ids[2]]
    assert repo.alerts(_project(metadata_store, "quiet")) == []


def test_the_database_refuses_a_second_firing_alert(metadata_store: MetadataStore) -> None:
    project_id = _project(metadata_store)
    window = _saved(metadata_store, project_id, range(1))[0]
    repo = metadata_store.monitor
    alert = repo.open_alert(
        project_id, "production", "drift", severity="warning", value=1.0, window_id=window.id
    )
    with metadata_store.db.read() as conn:
        row = dict(conn.execute(sa.select(alerts).where(alerts.c.id == alert.id)).one()._mapping)
    with pytest.raises(sa.exc.IntegrityError), metadata_store.db.write() as conn:
        conn.execute(alerts.insert(), {**row, "id": "al-sneaked-past"})  # past the repository
    repo.update_alert(alert.id, state=AlertState.RESOLVED)
    with metadata_store.db.write() as conn:  # resolved alerts do not count
        conn.execute(alerts.insert(), {**row, "id": "al-fires-again"})
    assert [a.id for a in repo.alerts(project_id, state=AlertState.FIRING)] == ["al-fires-again"]


def _race(action: Callable[[int], object]) -> tuple[list[object], list[BaseException]]:
    start = threading.Barrier(THREADS)
    won: list[object] = []
    lost: list[BaseException] = []

    def attempt(i: int) -> None:
        start.wait()
        try:
            won.append(action(i))
        except BaseException as err:  # kept for the assertions
            lost.append(err)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, lost


def test_concurrent_openers_of_one_rule_one_wins(metadata_store: MetadataStore) -> None:
    project_id = _project(metadata_store)
    window = _saved(metadata_store, project_id, range(1))[0]
    repo = metadata_store.monitor
    won, lost = _race(
        lambda i: repo.open_alert(
            project_id, "production", "drift", severity="warning", value=i, window_id=window.id
        )
    )
    assert len(won) == 1 and len(lost) == THREADS - 1
    assert all(isinstance(err, ConflictError) for err in lost), lost
    assert len(repo.alerts(project_id, state=AlertState.FIRING)) == 1


def test_concurrent_saves_of_one_window_keep_one(metadata_store: MetadataStore) -> None:
    project_id = _project(metadata_store)
    repo = metadata_store.monitor
    won, lost = _race(lambda i: repo.save_windows([_window(project_id, 0, rows=i)])[0])
    assert lost == [] and len(won) == THREADS
    [stored] = repo.windows(project_id, "production")
    assert {w.id for w in won if isinstance(w, MonitorWindow)} == {stored.id}
    assert stored.rows in range(THREADS)


def test_unknown_windows_and_alerts_raise_not_found(metadata_store: MetadataStore) -> None:
    project_id = _project(metadata_store)
    window = _saved(metadata_store, project_id, range(1))[0]
    repo = metadata_store.monitor
    with pytest.raises(NotFoundError, match=r"'mw-nope'.*meguri monitor"):
        repo.get_window("mw-nope")
    with pytest.raises(NotFoundError, match=r"'al-nope'.*meguri monitor"):
        repo.get_alert("al-nope")
    with pytest.raises(NotFoundError, match="'al-nope'"):
        repo.update_alert("al-nope", value=1.0)
    with pytest.raises(NotFoundError, match=f"{window.id}.*'staging'"):  # a window of another env
        repo.open_alert(project_id, "staging", "drift", severity="x", value=1, window_id=window.id)
    alert = repo.open_alert(
        project_id, "production", "drift", severity="x", value=1, window_id=window.id
    )
    with pytest.raises(NotFoundError, match="'mw-nope'"):
        repo.update_alert(alert.id, last_window_id="mw-nope")
    with pytest.raises(DataError, match="rule"):
        repo.open_alert(project_id, "production", "", severity="x", value=1, window_id=window.id)
    assert repo.get_alert(alert.id) == alert
