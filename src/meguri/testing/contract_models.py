"""Contract of the model repository (the registry's aggregate), run on every metadata backend."""

from __future__ import annotations

import hashlib
import threading

import pytest

from meguri.errors import ConflictError, NotFoundError
from meguri.store.metadata import MetadataStore, ModelStatus
from meguri.store.metadata.repositories.models import NewModelEvent, NewModelVersion

__all__ = [
    "test_aliases_move_and_their_history_is_kept",
    "test_an_alias_moves_only_from_the_version_it_is_expected_on",
    "test_archiving_removes_aliases_and_refuses_new_ones",
    "test_concurrent_registrations_get_distinct_numbers",
    "test_descriptions_tags_and_cards",
    "test_register_numbers_versions_and_reuses_a_known_package",
    "test_unknown_names_raise_not_found",
]

THREADS = 8


def _new(run_id: str, seed: str) -> NewModelVersion:
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return NewModelVersion(
        run_id=run_id,
        package_digest=digest,
        files={"model.json": {"sha256": digest, "size": 10}},
        task="binary_classification",
        signature={"inputs": [{"name": "x", "type": "float64"}]},
        metrics={"test/roc_auc": 0.97},
        runtime="onnx",
        created_by="tester",
    )


def _run(store: MetadataStore, project: str = "models") -> tuple[str, str]:
    project_id = store.projects.ensure(project, "tester").id
    experiment = store.runs.ensure_experiment(project_id, "train", "tester")
    return project_id, store.runs.create_run(experiment.id, created_by="tester").id


def test_register_numbers_versions_and_reuses_a_known_package(
    metadata_store: MetadataStore,
) -> None:
    project_id, run_id = _run(metadata_store)
    repo = metadata_store.models
    first, created = repo.add_version(project_id, "churn", _new(run_id, "a"))
    assert created and first.version == 1 and first.id.startswith("mv-")
    assert first.ref == "churn@1" and first.status is ModelStatus.READY
    assert first.metrics == {"test/roc_auc": 0.97}
    assert first.files["model.json"]["size"] == 10
    second, _ = repo.add_version(project_id, "churn", _new(run_id, "b"))
    again, created = repo.add_version(project_id, "churn", _new(run_id, "a"))
    assert (second.version, again.id, created) == (2, first.id, False)
    model = repo.get_model(project_id, "churn")
    assert model.id.startswith("mdl-") and not model.archived
    assert [v.version for v in repo.versions(model.id)] == [1, 2]
    assert repo.latest(model.id) == second
    assert [e.kind for e in repo.events(model.id)] == ["registered", "registered"]
    assert repo.events(model.id, version_id=first.id)[0].detail["run_id"] == run_id
    assert repo.versions_of_run(run_id) == [first, second]
    assert repo.match(project_id, first.id[:-2]) == [first]


def test_concurrent_registrations_get_distinct_numbers(metadata_store: MetadataStore) -> None:
    project_id, run_id = _run(metadata_store)
    start = threading.Barrier(THREADS)
    numbers: list[int] = []
    errors: list[BaseException] = []

    def register(i: int) -> None:
        try:
            start.wait()
            found, _ = metadata_store.models.add_version(project_id, "race", _new(run_id, str(i)))
            numbers.append(found.version)
        except BaseException as err:  # reported below, not lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(numbers) == list(range(1, THREADS + 1))
    assert len(metadata_store.models.list_models(project_id)) == 1


def test_aliases_move_and_their_history_is_kept(metadata_store: MetadataStore) -> None:
    project_id, run_id = _run(metadata_store)
    repo = metadata_store.models
    one, _ = repo.add_version(project_id, "churn", _new(run_id, "a"))
    two, _ = repo.add_version(project_id, "churn", _new(run_id, "b"))
    repo.set_alias(one.id, "production", by="ann")
    moved = repo.set_alias(
        two.id,
        "production",
        by="bob",
        kind="promoted",
        detail={"checks": []},
        extra=[NewModelEvent("gate_override", {"reason": "hotfix"})],
    )
    assert (moved.version, moved.updated_by) == (2, "bob")
    assert repo.find_alias(one.model_id, "production") == repo.get_version(two.id)
    assert repo.get_version(two.id).aliases == ("production",)
    repo.set_alias(one.id, "staging", by="ann")
    assert [(a.alias, a.version) for a in repo.aliases(one.model_id)] == [
        ("production", 2),
        ("staging", 1),
    ]
    assert repo.remove_alias(one.model_id, "staging", by="ann") is True
    assert repo.remove_alias(one.model_id, "staging", by="ann") is False
    assert repo.find_alias(one.model_id, "staging") is None
    events = repo.events(one.model_id)
    kinds = [e.kind for e in events]
    assert kinds[2:] == ["alias_set", "promoted", "gate_override", "alias_set", "alias_removed"]
    assert events[3].detail == {
        "alias": "production",
        "previous_version_id": one.id,
        "checks": [],
    }
    assert (events[4].detail, events[4].created_by) == ({"reason": "hotfix"}, "bob")


def test_an_alias_moves_only_from_the_version_it_is_expected_on(
    metadata_store: MetadataStore,
) -> None:
    """``only_from``: a compare-and-set (a rollback takes an alias back only if nobody moved
    it since); refused, nothing changes and no event is written."""
    project_id, run_id = _run(metadata_store)
    repo = metadata_store.models
    one, _ = repo.add_version(project_id, "churn", _new(run_id, "a"))
    two, _ = repo.add_version(project_id, "churn", _new(run_id, "b"))
    with pytest.raises(ConflictError, match="points at no version"):
        repo.set_alias(one.id, "champion", by="ann", only_from=two.id)
    repo.set_alias(two.id, "champion", by="ann")
    with pytest.raises(ConflictError, match=f"points at {two.id}, not {one.id}"):
        repo.set_alias(two.id, "champion", by="ann", only_from=one.id)
    before = len(repo.events(one.model_id))
    back = repo.set_alias(one.id, "champion", by="sup", kind="alias_rolled_back", only_from=two.id)
    assert (back.version, back.updated_by) == (1, "sup")
    events = repo.events(one.model_id)
    assert len(events) == before + 1 and events[-1].kind == "alias_rolled_back"
    assert events[-1].detail["previous_version_id"] == two.id


def test_archiving_removes_aliases_and_refuses_new_ones(metadata_store: MetadataStore) -> None:
    project_id, run_id = _run(metadata_store)
    repo = metadata_store.models
    one, _ = repo.add_version(project_id, "churn", _new(run_id, "a"))
    repo.set_alias(one.id, "production", by="ann")
    archived = repo.archive_version(one.id, by="ann")
    assert archived.status is ModelStatus.ARCHIVED and archived.aliases == ()
    assert repo.aliases(one.model_id) == []
    assert repo.latest(one.model_id) is None
    assert repo.get_model(project_id, "churn").archived
    assert repo.list_models(project_id, include_archived=False) == []
    with pytest.raises(ConflictError, match="archived"):
        repo.set_alias(one.id, "staging", by="ann")
    kinds = [e.kind for e in repo.events(one.model_id)]
    assert kinds == ["registered", "alias_set", "alias_removed", "archived"]
    again, created = repo.add_version(project_id, "churn", _new(run_id, "a"))
    assert created and again.version == 2  # archived packages are registered anew
    assert not repo.get_model(project_id, "churn").archived


def test_descriptions_tags_and_cards(metadata_store: MetadataStore) -> None:
    project_id, run_id = _run(metadata_store)
    repo = metadata_store.models
    one, _ = repo.add_version(project_id, "churn", _new(run_id, "a"))
    model = repo.update_model(one.model_id, description="Who leaves", tags={"team": "crm"})
    model = repo.update_model(model.id, tags={"tier": "1", "team": None})
    assert (model.description, model.tags) == ("Who leaves", {"tier": "1"})
    version = repo.update_version(one.id, description="first", tags={"data": "2024"})
    assert (version.description, version.tags) == ("first", {"data": "2024"})
    carded = repo.set_card(one.id, markdown_digest="a" * 64, html_digest="b" * 64)
    assert (carded.card_markdown_digest, carded.card_html_digest) == ("a" * 64, "b" * 64)
    event = repo.add_event(one.model_id, one.id, NewModelEvent("card", {"n": 1}), by="c")
    assert repo.events(one.model_id)[-1] == event


def test_unknown_names_raise_not_found(metadata_store: MetadataStore) -> None:
    project_id, _ = _run(metadata_store)
    repo = metadata_store.models
    with pytest.raises(NotFoundError, match="meguri models list"):
        repo.get_model(project_id, "nope")
    with pytest.raises(NotFoundError, match="mv-x"):
        repo.get_version("mv-x")
    with pytest.raises(NotFoundError, match="project"):
        repo.add_version("proj-missing", "m", _new("run-x", "a"))
