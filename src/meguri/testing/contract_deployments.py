"""Contract of the deployments repository, run on every metadata backend."""

from __future__ import annotations

import threading

import pytest

from meguri.errors import ConflictError, NotFoundError
from meguri.store.metadata import (
    DeploymentState,
    DeploymentTarget,
    MetadataStore,
    RevisionState,
)
from meguri.store.metadata.repositories.deployments import NewRevision

__all__ = [
    "test_concurrent_revisions_one_wins_the_others_conflict",
    "test_deployments_are_one_per_environment",
    "test_revisions_number_move_and_keep_their_reason",
    "test_unknown_deployments_raise_not_found",
]

THREADS = 6


def _target(version: int, weight: float = 100.0, role: str = "primary") -> DeploymentTarget:
    return DeploymentTarget(f"mv-{version}", f"churn@{version}", f"{version:064d}", weight, role)


def _project(store: MetadataStore) -> str:
    return store.projects.ensure("deployments", "tester").id


def test_deployments_are_one_per_environment(metadata_store: MetadataStore) -> None:
    project_id = _project(metadata_store)
    repo = metadata_store.deployments
    staging = repo.ensure(project_id, "staging", "churn", by="ann")
    assert staging.id.startswith("dep-") and staging.state is DeploymentState.STARTING
    assert (staging.current_number, staging.current_revision_id, staging.port) == (0, None, None)
    assert repo.ensure(project_id, "staging", "other", by="bob").id == staging.id
    production = repo.ensure(project_id, "production", "churn", by="ann")
    assert [d.environment for d in repo.list(project_id)] == ["production", "staging"]
    moved = repo.update(staging.id, state=DeploymentState.SERVING, port=8123, pid=42)
    assert (moved.state, moved.port, moved.pid) == (DeploymentState.SERVING, 8123, 42)
    cleared = repo.update(staging.id, state=DeploymentState.STOPPED, clear_pid=True)
    assert (cleared.pid, cleared.port) == (None, 8123)
    assert repo.get(project_id, "production") == production
    assert repo.get_by_id(staging.id) == cleared


def test_revisions_number_move_and_keep_their_reason(metadata_store: MetadataStore) -> None:
    repo = metadata_store.deployments
    dep = repo.ensure(_project(metadata_store), "staging", "churn", by="ann")
    first = repo.add_revision(dep.id, NewRevision([_target(1)], "all_at_once", "ann"), expected=0)
    assert first.id.startswith("drev-") and first.number == 1
    assert first.state is RevisionState.PENDING and first.reason == "deploy"
    canary = NewRevision(
        [_target(1, 90), _target(2, 10, "canary")],
        "canary",
        "bob",
        settings={"steps": [10, 100], "bake_seconds": 30},
    )
    second = repo.add_revision(dep.id, canary, expected=1)
    assert second.number == 2 and second.target("canary") == _target(2, 10, "canary")
    assert second.settings == {"steps": [10, 100], "bake_seconds": 30}
    now = repo.get_by_id(dep.id)
    assert (now.current_number, now.current_revision_id) == (2, second.id)
    baked = repo.set_revision_state(second.id, RevisionState.BAKING, step=1, detail={"a": 1})
    rolled = repo.set_revision_state(
        second.id, RevisionState.ROLLED_BACK, detail={"b": 2}, reason="rollback: errors"
    )
    assert baked.step == 1 and rolled.step == 1 and rolled.detail == {"a": 1, "b": 2}
    assert rolled.reason == "rollback: errors" and rolled.state.is_active is False
    assert [r.number for r in repo.revisions(dep.id)] == [1, 2]
    assert repo.find_revision(dep.id, 1) == first and repo.find_revision(dep.id, 9) is None
    assert repo.get_revision(second.id) == rolled


def test_concurrent_revisions_one_wins_the_others_conflict(
    metadata_store: MetadataStore,
) -> None:
    repo = metadata_store.deployments
    dep = repo.ensure(_project(metadata_store), "staging", "churn", by="ann")
    start = threading.Barrier(THREADS)
    won: list[int] = []
    lost: list[BaseException] = []

    def deploy(i: int) -> None:
        start.wait()
        try:
            new = NewRevision([_target(i)], "all_at_once", f"user{i}")
            won.append(repo.add_revision(dep.id, new, expected=0).number)
        except BaseException as err:  # kept for the assertion below
            lost.append(err)

    threads = [threading.Thread(target=deploy, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert won == [1]
    assert len(lost) == THREADS - 1 and all(isinstance(e, ConflictError) for e in lost)
    assert "expected at revision 0" in str(lost[0])
    assert [r.number for r in repo.revisions(dep.id)] == [1]


def test_unknown_deployments_raise_not_found(metadata_store: MetadataStore) -> None:
    repo = metadata_store.deployments
    project_id = _project(metadata_store)
    assert repo.find(project_id, "staging") is None
    with pytest.raises(NotFoundError, match="meguri deploy"):
        repo.get(project_id, "staging")
    with pytest.raises(NotFoundError):
        repo.get_by_id("dep-nope")
    with pytest.raises(NotFoundError):
        repo.get_revision("drev-nope")
    with pytest.raises(NotFoundError):
        repo.add_revision("dep-nope", NewRevision([_target(1)], "all_at_once", "x"), expected=0)
