"""Contract of the audit log, run on every metadata backend (fixture ``metadata_store``).

Every change made through a repository appends one event in the same transaction; the chain
(``seq`` without gaps, each ``prev_hash`` the previous ``hash``, each hash sha256 of the
previous hash plus the canonical JSON of the event) is recomputed here independently, and
``verify`` must name the first event edited, deleted or inserted with raw SQL.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from meguri.errors import ConflictError, DataError, MetadataStoreError
from meguri.store.metadata import (
    AlertState,
    ArtifactRef,
    AuditEvent,
    CheckResult,
    DeploymentState,
    DeploymentTarget,
    MetadataStore,
    NewAuditEvent,
    RevisionState,
    RunStatus,
)
from meguri.store.metadata.repositories.datasets import NewDatasetVersion
from meguri.store.metadata.repositories.deployments import NewRevision
from meguri.store.metadata.repositories.models import NewModelVersion
from meguri.store.metadata.repositories.monitor import NewWindow

__all__ = [
    "test_a_change_and_its_event_commit_together",
    "test_concurrent_appends_keep_one_unbroken_chain",
    "test_events_filter_page_and_stream",
    "test_metric_points_append_no_event",
    "test_phase_changes_are_recorded",
    "test_registry_deploy_and_monitor_changes_are_recorded",
    "test_the_chain_recomputes_independently",
    "test_verify_names_a_deleted_event",
    "test_verify_names_an_edited_event",
    "test_verify_names_an_inserted_or_replaced_event",
]

THREADS = 8
PER_THREAD = 12
GENESIS = "0" * 64


def _project(store: MetadataStore, name: str = "audited") -> str:
    return store.projects.ensure(name, "ann").id


def _since(store: MetadataStore, seq: int) -> list[AuditEvent]:
    return store.audit.events(after_seq=seq)


def _actions(events: list[AuditEvent]) -> list[tuple[str, str]]:
    return [(e.action, e.actor) for e in events]


def _run(store: MetadataStore, project_id: str) -> str:
    experiment = store.runs.ensure_experiment(project_id, "exp", "ann")
    return store.runs.create_run(experiment.id, created_by="ann").id


def _sql(store: MetadataStore, statement: str, **params: Any) -> None:
    with store.db.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def _check(project_id: str, subject: str) -> CheckResult:
    return CheckResult(
        "", project_id, None, "auc", "test", "roc_auc", ">=", 0.9, 0.95, True, "run", subject,
        0.0, "ann",
    )  # fmt: skip


def test_phase_changes_are_recorded(metadata_store: MetadataStore) -> None:
    store = metadata_store
    project_id = _project(store)
    [created] = store.audit.events()
    assert (created.seq, created.action, created.actor) == (1, "project.created", "ann")
    assert (created.project_id, created.detail) == (project_id, {"name": "audited"})
    store.specs.add(project_id, content="a: 1", hash="h1", created_by="ann", message="first")
    store.specs.add(project_id, content="a: 1", hash="h1", created_by="bob")  # known: no change
    store.documents.add_version(project_id, "design", content="# plan", created_by="bob")
    store.documents.add_version(project_id, "design", content="# plan", created_by="bob")
    run_id = _run(store, project_id)
    store.runs.log_batch(run_id, params={"lr": "0.1"}, tags={"stage": "dev"})
    store.runs.log_batch(run_id, params={"lr": "0.1"})  # the same value again: no change
    store.runs.add_inputs(run_id, "dataset_version", ["dsv-a", "dsv-a"])
    store.runs.add_inputs(run_id, "dataset_version", ["dsv-a"])
    store.runs.add_artifact(run_id, ArtifactRef("model.onnx", "d" * 64, 10, "x", time.time()))
    store.runs.end_run(run_id, RunStatus.FINISHED)
    store.checks.record([_check(project_id, run_id), _check(project_id, run_id)])
    new = NewDatasetVersion("c" * 64, {"a": "Int64"}, 3, 10, "e" * 64, "ingest", "cy")
    version, _ = store.datasets.add_version(project_id, "adult", new)
    store.datasets.set_tag(version.dataset_id, "pii", "no", by="cy")
    assert store.datasets.delete_tag(version.dataset_id, "pii", by="cy")
    assert not store.datasets.delete_tag(version.dataset_id, "pii", by="cy")
    store.datasets.set_digest(version.id, "profile", "f" * 64)
    events = _since(store, 1)
    assert _actions(events) == [
        ("spec.saved", "ann"),
        ("document.version_added", "bob"),
        ("experiment.created", "ann"),
        ("run.created", "ann"),
        ("run.logged", "ann"),
        ("run.inputs_added", "ann"),
        ("run.artifact_logged", "ann"),
        ("run.ended", "ann"),
        ("checks.recorded", "ann"),
        ("dataset.version_added", "cy"),
        ("dataset.tag_set", "cy"),
        ("dataset.tag_deleted", "cy"),
        ("dataset.report_set", "system"),
    ]
    assert all(e.project_id == project_id for e in events)
    by_action = {e.action: e for e in events}
    assert by_action["run.logged"].detail == {"params": {"lr": "0.1"}, "tags": {"stage": "dev"}}
    assert by_action["run.inputs_added"].detail["refs"] == ["dsv-a"]
    assert by_action["run.ended"].detail["status"] == "finished"
    assert len(by_action["checks.recorded"].detail["checks"]) == 2
    assert by_action["dataset.version_added"].detail["version"] == 1
    assert store.audit.verify().ok


def _model_version(store: MetadataStore, project_id: str) -> tuple[str, str]:
    run_id = _run(store, project_id)
    new = NewModelVersion(run_id, "a" * 64, {}, "binary_classification", {}, {}, "onnx", "dan")
    version, _ = store.models.add_version(project_id, "churn", new)
    return version.id, version.model_id


def test_registry_deploy_and_monitor_changes_are_recorded(metadata_store: MetadataStore) -> None:
    store = metadata_store
    project_id = _project(store)
    version_id, model_id = _model_version(store, project_id)
    start = store.audit.head()[0]
    store.models.set_alias(version_id, "production", by="dan")
    assert store.models.remove_alias(model_id, "production", by="dan")
    store.models.update_model(model_id, description="who leaves", by="dan")
    store.models.update_version(version_id, tags={"data": "2024"}, by="dan")
    store.models.set_card(version_id, markdown_digest="1" * 64, html_digest="2" * 64, by="dan")
    store.models.set_alias(version_id, "staging", by="dan")
    store.models.archive_version(version_id, by="dan")
    deployment = store.deployments.ensure(project_id, "production", "churn", by="eve")
    target = DeploymentTarget(version_id, "churn@1", "a" * 64, 100.0, "primary")
    revision = store.deployments.add_revision(
        deployment.id, NewRevision([target], "direct", "eve"), expected=0
    )
    store.deployments.set_revision_state(revision.id, RevisionState.LIVE, by="eve")
    store.deployments.update(deployment.id, state=DeploymentState.SERVING, port=8080)
    windows = [NewWindow(project_id, "production", h * 60.0, h * 60.0 + 60, 5) for h in range(3)]
    [window, *_] = store.monitor.save_windows(windows)
    alert = store.monitor.open_alert(
        project_id, "production", "drift", severity="warning", value=0.4, window_id=window.id
    )
    store.monitor.update_alert(alert.id, state=AlertState.RESOLVED, by="fay")
    events = _since(store, start)
    assert _actions(events) == [
        ("model.alias_set", "dan"),
        ("model.alias_removed", "dan"),
        ("model.updated", "dan"),
        ("model.version_updated", "dan"),
        ("model.card_set", "dan"),
        ("model.alias_set", "dan"),
        ("model.alias_removed", "dan"),
        ("model.archived", "dan"),
        ("deployment.created", "eve"),
        ("deployment.revision_added", "eve"),
        ("deployment.revision_state_set", "eve"),
        ("deployment.updated", "system"),
        ("monitor.windows_saved", "system"),
        ("alert.opened", "system"),
        ("alert.resolved", "fay"),
    ]
    assert all(e.project_id == project_id for e in events)
    assert events[0].detail == {
        "model": "churn",
        "alias": "production",
        "previous_version_id": None,
    }
    assert events[0].subject_id == version_id
    saved = events[-3]
    assert (saved.subject_id, saved.detail) == (
        "production",
        {"windows": 3, "start": 0.0, "end": 180.0},
    )
    assert store.audit.verify().ok


def test_metric_points_append_no_event(metadata_store: MetadataStore) -> None:
    run_id = _run(metadata_store, _project(metadata_store))
    head = metadata_store.audit.head()
    now = time.time()
    points = [("loss", 1.0 / (i + 1), i, now + i) for i in range(2000)]
    metadata_store.runs.log_batch(run_id, points[:1000])
    metadata_store.runs.log_batch(run_id, points[1000:])
    metadata_store.runs.heartbeat([run_id])
    assert metadata_store.audit.head() == head
    assert len(metadata_store.runs.metric_history(run_id, "loss")) == 2000


def _independent_hash(event: AuditEvent) -> str:
    fields = {
        "seq": event.seq,
        "id": event.id,
        "time": event.time,
        "actor": event.actor,
        "action": event.action,
        "project_id": event.project_id,
        "subject_kind": event.subject_kind,
        "subject_id": event.subject_id,
        "detail": event.detail,
    }
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((event.prev_hash + text).encode("utf-8")).hexdigest()


def test_the_chain_recomputes_independently(metadata_store: MetadataStore) -> None:
    project_id = _project(metadata_store, "気温 'quoted'")
    detail = {"nan": float("nan"), "tuple": (1, 2), "float": 0.1 + 0.2, "text": "ü"}
    metadata_store.audit.append(NewAuditEvent("ann", "test.odd", "thing", "x", project_id, detail))
    metadata_store.specs.add(project_id, content="a", hash="h", created_by="bob")
    events = metadata_store.audit.events()
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[1].detail == {"nan": None, "tuple": [1, 2], "float": 0.1 + 0.2, "text": "ü"}
    previous = GENESIS
    for event in events:
        assert event.prev_hash == previous
        assert event.hash == _independent_hash(event)
        previous = event.hash
    verdict = metadata_store.audit.verify()
    assert (verdict.ok, verdict.checked, verdict.first_bad_seq, verdict.reason) == (
        True, 3, None, None,
    )  # fmt: skip
    assert (verdict.head_seq, verdict.head_hash) == (3, previous)
    assert metadata_store.audit.head() == (3, previous)


def _five_events(store: MetadataStore) -> None:
    project_id = _project(store)
    for i in range(4):
        store.specs.add(project_id, content=f"v{i}", hash=f"h{i}", created_by="ann")


def test_verify_names_an_edited_event(metadata_store: MetadataStore) -> None:
    _five_events(metadata_store)
    original = metadata_store.audit.events()[2]
    _sql(metadata_store, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")
    verdict = metadata_store.audit.verify()
    assert (verdict.ok, verdict.first_bad_seq, verdict.checked) == (False, 3, 2)
    assert verdict.reason is not None and "event 3" in verdict.reason and "edited" in verdict.reason
    _sql(metadata_store, "UPDATE audit_events SET actor = :a WHERE seq = 3", a=original.actor)
    assert metadata_store.audit.verify().ok
    _sql(metadata_store, "UPDATE audit_events SET detail_json = '{}' WHERE seq = 5")
    assert metadata_store.audit.verify().first_bad_seq == 5


def test_verify_names_a_deleted_event(metadata_store: MetadataStore) -> None:
    _five_events(metadata_store)
    _sql(metadata_store, "DELETE FROM audit_events WHERE seq = 5")  # the newest
    tail = metadata_store.audit.verify()
    assert (tail.ok, tail.first_bad_seq, tail.checked) == (False, 5, 4)
    assert tail.reason is not None and "missing" in tail.reason
    _sql(metadata_store, "DELETE FROM audit_events WHERE seq = 2")
    verdict = metadata_store.audit.verify()
    assert (verdict.ok, verdict.first_bad_seq, verdict.checked) == (False, 2, 1)
    assert verdict.reason is not None and "event 2 is missing" in verdict.reason


def test_verify_names_an_inserted_or_replaced_event(metadata_store: MetadataStore) -> None:
    _five_events(metadata_store)
    last = metadata_store.audit.events()[-1]
    forged = AuditEvent(6, "aud-forged", time.time(), "mallory", "user.created", None, "user",
                        "mallory", {}, last.hash, "")  # fmt: skip
    row = {f: getattr(forged, f) for f in AuditEvent.__slots__ if f != "detail"}
    row.update(detail_json="{}", hash=_independent_hash(forged))
    columns = ", ".join(row)
    _sql(metadata_store, f"INSERT INTO audit_events ({columns}) VALUES (:{', :'.join(row)})", **row)
    verdict = metadata_store.audit.verify()  # well chained, but past the recorded head
    assert (verdict.ok, verdict.first_bad_seq) == (False, 6)
    assert verdict.reason is not None and "inserted" in verdict.reason
    _sql(metadata_store, "DELETE FROM audit_events WHERE seq = 6")
    assert metadata_store.audit.verify().ok
    # Event 3 replaced and re-hashed so that it checks out by itself: event 4 no longer follows.
    third = metadata_store.audit.events()[2]
    swapped = AuditEvent(**{**{f: getattr(third, f) for f in AuditEvent.__slots__},
                            "actor": "mallory"})  # fmt: skip
    fresh = _independent_hash(swapped)
    _sql(
        metadata_store,
        "UPDATE audit_events SET actor = 'mallory', hash = :h WHERE seq = 3",
        h=fresh,
    )
    verdict = metadata_store.audit.verify()
    assert (verdict.ok, verdict.first_bad_seq) == (False, 4)
    assert verdict.reason is not None and "does not follow event 3" in verdict.reason


def test_a_change_and_its_event_commit_together(metadata_store: MetadataStore) -> None:
    store = metadata_store
    run_id = _run(store, _project(store))
    store.runs.log_batch(run_id, params={"lr": "0.1"})
    head = store.audit.head()
    with pytest.raises(ConflictError):  # a refused change records nothing
        store.runs.log_batch(run_id, params={"lr": "0.2", "depth": "3"})
    assert store.audit.head() == head
    assert "depth" not in store.runs.get_run(run_id).params
    _sql(store, "DELETE FROM audit_head")  # an event that cannot be recorded...
    with pytest.raises(MetadataStoreError, match="head row"):
        store.runs.log_batch(run_id, params={"depth": "3"}, tags={"t": "1"})
    run = store.runs.get_run(run_id)  # ...undoes its change
    assert "depth" not in run.params and "t" not in run.tags
    _sql(store, "INSERT INTO audit_head (id, seq, hash) VALUES (1, :s, :h)", s=head[0], h=head[1])
    store.runs.log_batch(run_id, params={"depth": "3"})
    assert store.audit.verify().ok


def _race(work: Callable[[int], None]) -> list[BaseException]:
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return errors


def test_concurrent_appends_keep_one_unbroken_chain(metadata_store: MetadataStore) -> None:
    store = metadata_store
    project_id = _project(store)
    experiment = store.runs.ensure_experiment(project_id, "exp", "ann")
    start = store.audit.head()[0]

    def work(i: int) -> None:
        for j in range(PER_THREAD):
            if j % 2:
                store.runs.create_run(experiment.id, created_by=f"user{i}")
            else:
                store.audit.append(NewAuditEvent(f"user{i}", "test.ping", "thread", str(i)))

    assert _race(work) == []
    events = _since(store, start)
    assert [e.seq for e in events] == list(range(start + 1, start + 1 + THREADS * PER_THREAD))
    assert len({e.id for e in events}) == len(events)
    for before, after in zip([store.audit.events()[start - 1], *events], events, strict=False):
        assert after.prev_hash == before.hash
    verdict = store.audit.verify()
    assert verdict.ok and verdict.checked == start + THREADS * PER_THREAD


def test_events_filter_page_and_stream(
    metadata_store: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meguri.store.metadata.repositories import audit

    first, second = _project(metadata_store, "one"), _project(metadata_store, "two")
    for i in range(5):
        metadata_store.specs.add(first, content=str(i), hash=f"a{i}", created_by="ann")
        metadata_store.specs.add(second, content=str(i), hash=f"b{i}", created_by="bob")
    repo = metadata_store.audit
    everything = repo.events()
    assert [e.seq for e in everything] == list(range(1, 13))
    mine = repo.events(project_id=first)
    assert [e.seq for e in mine] == [1, 3, 5, 7, 9, 11]
    assert repo.events(project_id=first, after_seq=5, limit=2) == mine[3:5]
    assert repo.events(limit=3, newest_first=True) == everything[::-1][:3]
    assert repo.events(since=everything[6].time)[0].time >= everything[6].time
    assert repo.events(limit=0) == []
    with pytest.raises(DataError, match="limit"):
        repo.events(limit=-1)
    monkeypatch.setattr(audit, "_PAGE", 5)  # stream across several pages
    assert list(repo.iter_events()) == everything
    assert list(repo.iter_events(project_id=second)) == repo.events(project_id=second)
    assert repo.verify().ok and repo.verify().checked == 12
