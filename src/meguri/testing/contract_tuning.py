"""Contract of the tuning-journal repository (``store.tuning``), run on every metadata backend.

The journal is what Optuna's ``JournalStorage`` replays to rebuild a project's studies, so
these tests hold it to the contract that storage relies on: logs come back exactly as given
(NaN and infinities included), numbered from 0 without gaps per project, each append whole
and in order even when appenders race, and a reader sees the numbers it asks for and after.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from meguri.errors import DataError, NotFoundError
from meguri.store.metadata import MetadataStore

__all__ = [
    "test_an_append_that_cannot_be_stored_stores_nothing",
    "test_appends_racing_from_threads_stay_whole_and_gapless",
    "test_logs_come_back_as_given_numbered_per_project",
    "test_nan_and_infinities_are_kept",
    "test_the_journal_of_an_unknown_project_is_refused_and_empty",
]

LOGS: list[dict[str, Any]] = [
    {"op_code": 0, "worker_id": "w-1", "study_name": "s", "directions": [1]},
    {"op_code": 4, "trial_id": 0, "param_name": "x", "param_value_internal": 0.30000000000000004},
    {"op_code": 6, "nested": {"a": [1, 2, {"b": None}]}, "flag": True, "note": "é✓"},
    {"op_code": 5, "big": 2**62, "negative_zero": -0.0, "tiny": 5e-324},
]


def test_logs_come_back_as_given_numbered_per_project(metadata_store: MetadataStore) -> None:
    journal = metadata_store.tuning
    project = metadata_store.projects.ensure("tuned", "tester").id
    other = metadata_store.projects.ensure("other", "tester").id
    assert journal.read_logs(project, 0) == []
    journal.append_logs(project, LOGS[:1])
    journal.append_logs(project, [])  # nothing: no number is taken
    journal.append_logs(other, [{"op_code": 9}])
    journal.append_logs(project, LOGS[1:])
    assert journal.read_logs(project, 0) == LOGS
    assert journal.read_logs(project) == LOGS  # from the start by default
    for start in range(len(LOGS) + 2):
        assert journal.read_logs(project, start) == LOGS[start:]
    assert journal.read_logs(other, 0) == [{"op_code": 9}]
    signs = [math.copysign(1.0, log["negative_zero"]) for log in journal.read_logs(project, 3)]
    assert signs == [-1.0]


def test_nan_and_infinities_are_kept(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("tuned", "tester").id
    values = {"inf": math.inf, "minus_inf": -math.inf, "nan": math.nan}
    metadata_store.tuning.append_logs(project, [{"op_code": 7, **values, "list": [math.inf]}])
    [log] = metadata_store.tuning.read_logs(project, 0)
    assert log["inf"] == math.inf and log["minus_inf"] == -math.inf and log["list"] == [math.inf]
    assert isinstance(log["nan"], float) and math.isnan(log["nan"])


def test_the_journal_of_an_unknown_project_is_refused_and_empty(
    metadata_store: MetadataStore,
) -> None:
    with pytest.raises(NotFoundError, match="prj-missing"):
        metadata_store.tuning.append_logs("prj-missing", [{"op_code": 0}])
    assert metadata_store.tuning.read_logs("prj-missing", 0) == []


def test_an_append_that_cannot_be_stored_stores_nothing(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("tuned", "tester").id
    metadata_store.tuning.append_logs(project, LOGS[:1])
    with pytest.raises(DataError, match=r"logs\[1\]"):
        metadata_store.tuning.append_logs(project, [{"op_code": 1}, {"x": object()}])
    metadata_store.tuning.append_logs(project, LOGS[1:2])
    assert metadata_store.tuning.read_logs(project, 0) == LOGS[:2]  # numbers 0, 1: no gap


def test_appends_racing_from_threads_stay_whole_and_gapless(
    metadata_store: MetadataStore,
) -> None:
    """Threads sharing one store append batches of 1 to 3 logs at once: every log is stored
    once, numbered without gaps, and each batch is stored whole, in order (processes racing
    on one database are tested in tests/test_train_tune.py)."""
    project = metadata_store.projects.ensure("tuned", "tester").id
    workers, batches = 4, 8
    start = threading.Barrier(workers)
    errors: list[BaseException] = []

    def append(worker: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(batches):
                batch = [{"w": worker, "b": i, "j": j} for j in range(1 + i % 3)]
                metadata_store.tuning.append_logs(project, batch)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    logs = metadata_store.tuning.read_logs(project, 0)
    per_worker = sum(1 + i % 3 for i in range(batches))
    assert len(logs) == workers * per_worker
    assert metadata_store.tuning.read_logs(project, len(logs)) == []
    position = 0
    while position < len(logs):  # batches are contiguous runs of j = 0, 1, ...
        first = logs[position]
        size = 1 + first["b"] % 3
        assert logs[position : position + size] == [{**first, "j": j} for j in range(size)]
        position += size
    for w in range(workers):
        mine = [(log["b"], log["j"]) for log in logs if log["w"] == w]
        assert mine == [(i, j) for i in range(batches) for j in range(1 + i % 3)]
