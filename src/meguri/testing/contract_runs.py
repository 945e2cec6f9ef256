"""Contract of the run repository, run on every metadata backend (fixture ``metadata_store``)."""

from __future__ import annotations

import math
import time

import pytest

from meguri.errors import ConflictError, NotFoundError, QuerySyntaxError, TrackingError
from meguri.store.metadata import ArtifactRef, MetadataStore, RunStatus
from meguri.store.metadata._search import RunView
from meguri.store.metadata.repositories.runs import RunResources

__all__ = [
    "test_artifact_refs",
    "test_create_and_get_run",
    "test_deleted_runs_are_hidden_until_restored",
    "test_deleting_an_experiment_hides_it_and_its_runs",
    "test_end_run_records_status_and_resources",
    "test_experiment_rename_and_tags",
    "test_experiments_are_unique_per_project",
    "test_inputs_are_deduplicated",
    "test_latest_metric_is_highest_step",
    "test_metric_history_roundtrip",
    "test_nan_and_infinity_roundtrip",
    "test_params_are_immutable",
    "test_rename_run_and_delete_tag",
    "test_resolve_run_id",
    "test_search_filter_and_order",
    "test_search_order_puts_missing_and_nan_last_across_pages",
    "test_search_pages",
    "test_search_rejects_bad_filter",
    "test_stale_runs_fail",
    "test_tags_are_updated",
]


def _experiment(store: MetadataStore, name: str = "exp") -> str:
    project = store.projects.ensure("contract", "tester")
    return store.runs.ensure_experiment(project.id, name, "tester").id


def test_experiments_are_unique_per_project(metadata_store: MetadataStore) -> None:
    first = _experiment(metadata_store)
    assert _experiment(metadata_store) == first
    assert _experiment(metadata_store, "other") != first


def test_create_and_get_run(metadata_store: MetadataStore) -> None:
    exp = _experiment(metadata_store)
    run = metadata_store.runs.create_run(exp, created_by="ana", name="first", host="h", pid=7)
    got = metadata_store.runs.get_run(run.id)
    assert (got.name, got.status, got.created_by, got.host, got.pid) == (
        "first",
        RunStatus.RUNNING,
        "ana",
        "h",
        7,
    )
    assert got.id.startswith("run-")
    with pytest.raises(NotFoundError):
        metadata_store.runs.get_run("run-missing")


def test_params_are_immutable(metadata_store: MetadataStore) -> None:
    run = metadata_store.runs.create_run(_experiment(metadata_store), created_by="t")
    metadata_store.runs.log_batch(run.id, params={"lr": "0.1", "depth": "3"})
    metadata_store.runs.log_batch(run.id, params={"lr": "0.1"})  # same value: fine
    with pytest.raises(ConflictError, match="lr"):
        metadata_store.runs.log_batch(run.id, params={"lr": "0.2"})
    assert metadata_store.runs.get_run(run.id).params == {"lr": "0.1", "depth": "3"}


def test_tags_are_updated(metadata_store: MetadataStore) -> None:
    run = metadata_store.runs.create_run(_experiment(metadata_store), created_by="t")
    metadata_store.runs.log_batch(run.id, tags={"stage": "dev"})
    metadata_store.runs.log_batch(run.id, tags={"stage": "prod", "team": "a"})
    assert metadata_store.runs.get_run(run.id).tags == {"stage": "prod", "team": "a"}


def test_metric_history_roundtrip(metadata_store: MetadataStore) -> None:
    run = metadata_store.runs.create_run(_experiment(metadata_store), created_by="t")
    now = time.time()
    points = [("loss", 1.0 / (i + 1), i, now + i) for i in range(500)]
    metadata_store.runs.log_batch(run.id, points[:200])
    metadata_store.runs.log_batch(run.id, points[200:])
    hist = metadata_store.runs.metric_history(run.id, "loss")
    assert len(hist) == 500
    assert hist.steps.tolist() == list(range(500))
    assert hist.values.tolist() == [p[1] for p in points]
    assert len(metadata_store.runs.metric_history(run.id, "absent")) == 0


def test_latest_metric_is_highest_step(metadata_store: MetadataStore) -> None:
    run = metadata_store.runs.create_run(_experiment(metadata_store), created_by="t")
    now = time.time()
    metadata_store.runs.log_batch(run.id, [("acc", 0.9, 5, now)])
    metadata_store.runs.log_batch(run.id, [("acc", 0.1, 2, now + 10)])  # older step, later
    assert metadata_store.runs.get_run(run.id).metrics["acc"].value == 0.9
    metadata_store.runs.log_batch(run.id, [("acc", 0.95, 5, now + 20)])  # same step, newer
    assert metadata_store.runs.get_run(run.id).metrics["acc"].value == 0.95


def test_nan_and_infinity_roundtrip(metadata_store: MetadataStore) -> None:
    run = metadata_store.runs.create_run(_experiment(metadata_store), created_by="t")
    now = time.time()
    metadata_store.runs.log_batch(
        run.id, [("m", math.nan, 0, now), ("m", math.inf, 1, now), ("m", -math.inf, 2, now)]
    )
    values = metadata_store.runs.metric_history(run.id, "m").values
    assert math.isnan(values[0])
    assert values[1:].tolist() == [math.inf, -math.inf]


def test_end_run_records_status_and_resources(metadata_store: MetadataStore) -> None:
    run = metadata_store.runs.create_run(_experiment(metadata_store), created_by="t")
    metadata_store.runs.end_run(
        run.id, RunStatus.FAILED, reason="boom", resources=RunResources(1.5, 0.5, 1 << 33)
    )
    got = metadata_store.runs.get_run(run.id)
    assert (got.status, got.status_reason) == (RunStatus.FAILED, "boom")
    assert (got.wall_seconds, got.cpu_seconds, got.peak_memory_bytes) == (1.5, 0.5, 1 << 33)
    assert got.ended_at is not None


def test_stale_runs_fail(metadata_store: MetadataStore) -> None:
    exp = _experiment(metadata_store)
    stale = metadata_store.runs.create_run(exp, created_by="t")
    time.sleep(0.3)
    alive = metadata_store.runs.create_run(exp, created_by="t")
    assert metadata_store.runs.fail_stale_runs(0.2) == 1
    assert metadata_store.runs.get_run(stale.id).status is RunStatus.FAILED
    assert "heartbeat" in (metadata_store.runs.get_run(stale.id).status_reason or "")
    assert metadata_store.runs.get_run(alive.id).status is RunStatus.RUNNING
    assert metadata_store.runs.fail_stale_runs(0.2) == 0


def test_resolve_run_id(metadata_store: MetadataStore) -> None:
    run = metadata_store.runs.create_run(_experiment(metadata_store), created_by="t", name="named")
    assert metadata_store.runs.resolve_run_id(run.id[:-2]) == run.id
    assert metadata_store.runs.resolve_run_id("named") == run.id
    with pytest.raises(NotFoundError):
        metadata_store.runs.resolve_run_id("nothing-like-it")


def _population(store: MetadataStore, n: int = 30) -> tuple[str, list[str]]:
    exp = _experiment(store)
    ids = []
    now = time.time()
    for i in range(n):
        run = store.runs.create_run(exp, created_by="t", name=f"r{i}")
        points = [("auc", i / n, 0, now)] if i % 3 else []
        store.runs.log_batch(
            run.id, points, params={"model": "lr" if i % 2 else "gbm"}, tags={"i": str(i)}
        )
        ids.append(run.id)
    return exp, ids


def test_search_filter_and_order(metadata_store: MetadataStore) -> None:
    exp, _ = _population(metadata_store)
    found = metadata_store.runs.search(
        [exp], "metrics.auc >= 0.5 and params.model = 'lr'", ["metrics.auc desc"]
    )
    expected = [f"r{i}" for i in range(29, 14, -1) if i % 3 and i % 2]
    assert [r.name for r in found] == expected
    ascending = metadata_store.runs.search([exp], 'params.model != "lr"', ["metrics.auc"])
    names = [r.name for r in ascending]
    assert names[: len([i for i in range(30) if i % 3 and not i % 2])][0] == "r2"
    assert names[-1] in {"r0", "r6", "r12", "r18", "r24"}  # runs without the metric come last
    like = metadata_store.runs.search([exp], "name like 'r1%' and tags.i != '1'")
    assert sorted(r.name for r in like) == sorted(f"r{i}" for i in range(10, 20))


def test_search_pages(metadata_store: MetadataStore) -> None:
    exp, ids = _population(metadata_store)
    pages = [
        metadata_store.runs.search([exp], None, ["name asc"], 7, off) for off in range(0, 30, 7)
    ]
    seen = [r.id for page in pages for r in page]
    assert sorted(seen) == sorted(ids)
    assert metadata_store.runs.count([exp]) == 30


def test_search_rejects_bad_filter(metadata_store: MetadataStore) -> None:
    exp = _experiment(metadata_store)
    with pytest.raises(QuerySyntaxError, match=r"metrics\.roc_auc"):
        metadata_store.runs.search([exp], "auc >>> 3")
    with pytest.raises(QuerySyntaxError, match="Unknown run attribute"):
        metadata_store.runs.search([exp], "colour = 'red'")


def test_inputs_are_deduplicated(metadata_store: MetadataStore) -> None:
    run = metadata_store.runs.create_run(_experiment(metadata_store), created_by="t")
    metadata_store.runs.add_inputs(run.id, "dataset_version", ["dsv-b", "dsv-a", "dsv-b"])
    metadata_store.runs.add_inputs(run.id, "dataset_version", ["dsv-a"])
    assert metadata_store.runs.get_run(run.id).inputs == {"dataset_version": ["dsv-a", "dsv-b"]}


def test_artifact_refs(metadata_store: MetadataStore) -> None:
    run = metadata_store.runs.create_run(_experiment(metadata_store), created_by="t")
    ref = ArtifactRef("plots/roc.png", "ab" * 32, 10, "image/png", time.time())
    metadata_store.runs.add_artifact(run.id, ref)
    metadata_store.runs.add_artifact(run.id, ref)
    assert metadata_store.runs.list_artifacts(run.id) == [ref]


def test_search_order_puts_missing_and_nan_last_across_pages(metadata_store: MetadataStore) -> None:
    exp = _experiment(metadata_store)
    now = time.time()
    values = {"a": 0.3, "b": math.nan, "c": 0.9, "d": None, "e": 0.1, "f": None}
    for name, value in values.items():
        run = metadata_store.runs.create_run(exp, created_by="t", name=name)
        if value is not None:
            metadata_store.runs.log_batch(run.id, [("auc", value, 0, now)])
        time.sleep(0.002)  # distinct creation times: newest first among the unordered
    for order, head in (
        ("metrics.auc desc", ["c", "a", "e"]),
        ("metrics.auc asc", ["e", "a", "c"]),
    ):
        whole = [r.name for r in metadata_store.runs.search([exp], None, [order])]
        assert whole == [*head, "f", "d", "b"]  # no value or NaN: last, newest first
        paged = [
            r.name
            for offset in range(0, 6, 2)
            for r in metadata_store.runs.search([exp], None, [order], 2, offset)
        ]
        assert paged == whole
    assert [r.name for r in metadata_store.runs.search([exp], None, ["metrics.auc"], 5, 4)] == [
        "d",
        "b",
    ]


def _events(store: MetadataStore, after: int) -> list[tuple[str, str, str]]:
    return [(e.action, e.actor, e.subject_id) for e in store.audit.events(after_seq=after)]


def _head(store: MetadataStore) -> int:
    return store.audit.head()[0]


def test_rename_run_and_delete_tag(metadata_store: MetadataStore) -> None:
    store = metadata_store
    run = store.runs.create_run(_experiment(store), created_by="ana", name="first")
    store.runs.log_batch(run.id, tags={"team": "risk", "stage": "dev"})
    seq = _head(store)
    store.runs.rename_run(run.id, "baseline", by="bob")
    store.runs.rename_run(run.id, "baseline", by="bob")  # the same name: no change
    assert store.runs.delete_tag(run.id, "stage", by="bob") is True
    assert store.runs.delete_tag(run.id, "stage", by="bob") is False
    got = store.runs.get_run(run.id)
    assert (got.name, got.tags) == ("baseline", {"team": "risk"})
    assert store.runs.resolve_run_id("baseline") == run.id
    assert _events(store, seq) == [
        ("run.renamed", "bob", run.id),
        ("run.tag_deleted", "bob", run.id),
    ]
    [renamed] = store.audit.events(after_seq=seq, limit=1)
    assert renamed.detail == {"from": "first", "to": "baseline"}
    for bad in ("", "   ", "x" * 201):
        with pytest.raises(TrackingError, match="name"):
            store.runs.rename_run(run.id, bad, by="bob")
    with pytest.raises(NotFoundError):
        store.runs.rename_run("run-missing", "x", by="bob")
    with pytest.raises(NotFoundError):
        store.runs.delete_tag("run-missing", "team", by="bob")
    assert store.audit.verify().ok


def test_deleted_runs_are_hidden_until_restored(metadata_store: MetadataStore) -> None:
    store = metadata_store
    exp = _experiment(store)
    now = time.time()
    runs = [store.runs.create_run(exp, created_by="t", name=f"r{i}") for i in range(4)]
    for i, run in enumerate(runs):
        store.runs.log_batch(run.id, [("auc", i / 4, 0, now)], params={"i": str(i)})
    seq = _head(store)
    assert store.runs.delete_run(runs[1].id, by="ana") is True
    assert store.runs.delete_run(runs[1].id, by="ana") is False  # already deleted
    views: tuple[RunView, ...] = ("active", "deleted", "all")
    names = {v: [r.name for r in store.runs.search([exp], None, ["name"], view=v)] for v in views}
    assert names == {
        "active": ["r0", "r2", "r3"],
        "deleted": ["r1"],
        "all": ["r0", "r1", "r2", "r3"],
    }
    # Every search path leaves it out: a filter, ordering by a metric, pages.
    assert [r.name for r in store.runs.search([exp], "metrics.auc >= 0.25")] == ["r3", "r2"]
    by_metric = store.runs.search([exp], None, ["metrics.auc desc"], 2, 0)
    by_metric += store.runs.search([exp], None, ["metrics.auc desc"], 2, 2)
    assert [r.name for r in by_metric] == ["r3", "r2", "r0"]
    assert store.runs.count([exp]) == 3
    assert (store.runs.count([exp], view="deleted"), store.runs.count([exp], view="all")) == (1, 4)
    deleted = store.runs.get_run(runs[1].id)  # still readable by id, marked deleted
    assert deleted.deleted and deleted.deleted_at is not None and deleted.params == {"i": "1"}
    assert store.runs.restore_run(runs[1].id, by="bob") is True
    assert store.runs.restore_run(runs[1].id, by="bob") is False
    restored = store.runs.get_run(runs[1].id)
    assert not restored.deleted and restored.metrics["auc"].value == 0.25
    assert store.runs.count([exp]) == 4
    assert _events(store, seq) == [
        ("run.deleted", "ana", runs[1].id),
        ("run.restored", "bob", runs[1].id),
    ]
    with pytest.raises(NotFoundError):
        store.runs.delete_run("run-missing", by="ana")
    with pytest.raises(QuerySyntaxError, match="view"):
        store.runs.search([exp], view="gone")  # type: ignore[arg-type]


def test_deleting_an_experiment_hides_it_and_its_runs(metadata_store: MetadataStore) -> None:
    store = metadata_store
    project = store.projects.ensure("contract", "tester")
    exp = store.runs.ensure_experiment(project.id, "doomed", "ana")
    keep = _experiment(store, "kept")
    early, later = (store.runs.create_run(exp.id, created_by="t", name=n) for n in "ab")
    store.runs.delete_run(early.id, by="ana")
    seq = _head(store)
    assert store.runs.delete_experiment(exp.id, by="ana") is True
    assert store.runs.delete_experiment(exp.id, by="ana") is False
    assert [e.name for e in store.runs.list_experiments(project.id)] == ["kept"]
    assert [e.name for e in store.runs.list_experiments(project.id, view="deleted")] == ["doomed"]
    assert len(store.runs.list_experiments(project.id, view="all")) == 2
    assert store.runs.get_experiment(exp.id).deleted
    found = store.runs.find_experiment(project.id, "doomed")  # the name stays taken
    assert found is not None and found.deleted
    with pytest.raises(ConflictError, match="deleted"):
        store.runs.ensure_experiment(project.id, "doomed", "ana")
    assert store.runs.count([exp.id]) == 0 and store.runs.count([exp.id], view="deleted") == 2
    assert store.runs.count([keep]) == 0
    assert store.runs.restore_experiment(exp.id, by="bob") is True
    assert store.runs.ensure_experiment(project.id, "doomed", "ana").id == exp.id
    # Only the run deleted with the experiment comes back; the one deleted before stays deleted.
    assert [r.name for r in store.runs.search([exp.id])] == ["b"]
    assert store.runs.get_run(early.id).deleted and not store.runs.get_run(later.id).deleted
    events = store.audit.events(after_seq=seq)
    assert [(e.action, e.actor, e.detail) for e in events] == [
        ("experiment.deleted", "ana", {"name": "doomed", "runs": 1}),
        ("experiment.restored", "bob", {"name": "doomed", "runs": 1}),
    ]
    with pytest.raises(NotFoundError):
        store.runs.delete_experiment("exp-missing", by="ana")
    with pytest.raises(QuerySyntaxError, match="view"):
        store.runs.list_experiments(project.id, view="gone")  # type: ignore[arg-type]


def test_experiment_rename_and_tags(metadata_store: MetadataStore) -> None:
    store = metadata_store
    first, second = _experiment(store, "first"), _experiment(store, "second")
    seq = _head(store)
    renamed = store.runs.rename_experiment(first, "renamed", by="ana")
    assert (renamed.id, renamed.name) == (first, "renamed")
    with pytest.raises(ConflictError, match="second"):
        store.runs.rename_experiment(first, "second", by="ana")
    with pytest.raises(TrackingError):
        store.runs.rename_experiment(first, "", by="ana")
    store.runs.set_experiment_tags(first, {"team": "risk", "goal": "auc"}, by="ana")
    store.runs.set_experiment_tags(first, {"goal": "recall"}, by="bob")
    assert store.runs.delete_experiment_tag(first, "team", by="bob") is True
    assert store.runs.delete_experiment_tag(first, "team", by="bob") is False
    assert store.runs.experiment_tags([first, second]) == {first: {"goal": "recall"}}
    assert [(e.action, e.actor) for e in store.audit.events(after_seq=seq)] == [
        ("experiment.renamed", "ana"),
        ("experiment.tags_set", "ana"),
        ("experiment.tags_set", "bob"),
        ("experiment.tag_deleted", "bob"),
    ]
    with pytest.raises(NotFoundError):
        store.runs.set_experiment_tags("exp-missing", {"a": "b"}, by="ana")
