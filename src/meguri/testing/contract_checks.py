"""Contract of the check-result repository, run on every metadata backend."""

from __future__ import annotations

import math

from meguri.store.metadata import CheckResult, MetadataStore

__all__ = ["test_history_is_newest_first", "test_record_and_read_back"]


def _result(project_id: str, criterion: str, value: float | None, subject: str) -> CheckResult:
    return CheckResult(
        id="",
        project_id=project_id,
        spec_version_id=None,
        criterion_id=criterion,
        stage="test",
        metric="roc_auc",
        comparison=">=",
        threshold=0.9,
        value=value,
        passed=value is not None and value >= 0.9,
        subject_kind="run",
        subject_id=subject,
        created_at=0.0,
        created_by="tester",
        evidence={"ci": [0.88, 0.95], "dataset": "dsv-1"},
    )


def test_record_and_read_back(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("checks", "tester")
    stored = metadata_store.checks.record(
        [_result(project.id, "auc", 0.93, "run-a"), _result(project.id, "auc", math.nan, "run-a")]
    )
    assert all(r.id.startswith("chk-") and r.created_at > 0 for r in stored)
    found = metadata_store.checks.for_subject("run", "run-a")
    assert [r.id for r in found] == [r.id for r in stored]
    assert found[0].passed and found[0].value == 0.93
    assert found[0].evidence == {"ci": [0.88, 0.95], "dataset": "dsv-1"}
    assert found[1].value is None and not found[1].passed  # NaN is stored as "no value"
    assert metadata_store.checks.for_subject("run", "run-b") == []


def test_history_is_newest_first(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("checks", "tester")
    first = metadata_store.checks.record([_result(project.id, "auc", 0.8, "run-a")])
    second = metadata_store.checks.record([_result(project.id, "auc", 0.95, "run-b")])
    metadata_store.checks.record([_result(project.id, "recall", 0.99, "run-b")])
    history = metadata_store.checks.history(project.id, "auc")
    assert [r.id for r in history] == [second[0].id, first[0].id]
    assert len(metadata_store.checks.history(project.id)) == 3
