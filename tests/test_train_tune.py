"""Tuning: the optuna journal in the metadata store (SQLite, PostgreSQL) and tune() whose every
trial is a tracked run, in this process, in two local processes and in Ray (local mode)."""

from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing
import pickle
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.storages import BaseStorage
from optuna.testing.pytest_storages import StorageTestCase

import meguri
from meguri.errors import ConfigError
from meguri.store import Workspace, open_workspace
from meguri.store.metadata import MetadataStore, Run, RunStatus, open_metadata_store
from meguri.store.metadata._schema import optuna_journal
from meguri.store.remote import RemoteMetadataStore
from meguri.testing._metadata_backends import fresh_postgres_database
from meguri.train._optuna_journal import MetadataJournalBackend, journal_storage
from meguri.train._tune import TuneResult, tune
from meguri.train._zoo_space import Param

X_SPACE = [{"name": "x", "kind": "float", "low": -5.0, "high": 5.0}]


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- objectives: module-level, so that worker processes and Ray tasks can unpickle them ----------


def parabola(params: dict[str, Any], trial: optuna.Trial) -> float:
    """Maximum 0 at x = 2."""
    return -((params["x"] - 2.0) ** 2)


def fails_when_positive(params: dict[str, Any], trial: optuna.Trial) -> float:
    if params["x"] > 0:
        raise ValueError(f"x={params['x']} is positive")
    return params["x"]


def reports_badly_when_negative(params: dict[str, Any], trial: optuna.Trial) -> float:
    """A trial with x < 0 reports a very bad first value: the median pruner should stop it."""
    trial.report(-100.0 if params["x"] < 0 else 0.0, step=0)
    if trial.should_prune():
        raise optuna.TrialPruned()
    trial.report(params["x"], step=1)
    return params["x"]


def returns_nan(params: dict[str, Any], trial: optuna.Trial) -> float:
    return math.nan


def sleeps(params: dict[str, Any], trial: optuna.Trial, seconds: float) -> float:
    time.sleep(seconds)
    return params["x"]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = open_workspace(tmp_path, project="tuning")
    yield workspace
    workspace.close()


@pytest.fixture
def any_ws(tmp_path: Path, metadata_url: str) -> Iterator[Workspace]:
    """A workspace on each metadata backend (SQLite file, PostgreSQL)."""
    workspace = open_workspace(tmp_path, store_url=metadata_url, project="tuning")
    yield workspace
    workspace.close()


def _runs(ws: Workspace, experiment: str = "tuning") -> list[Run]:
    return meguri.search_runs(experiment=experiment, workspace=ws, max_results=10_000)


def _trial_runs(ws: Workspace, result: TuneResult) -> dict[int, Run]:
    """The runs of the result's trials, by trial number; each trial exactly once."""
    runs = [r for r in _runs(ws) if r.tags.get("optuna.study") == result.study_name]
    by_trial = {int(r.tags["optuna.trial"]): r for r in runs}
    assert len(by_trial) == len(runs), "a trial was recorded as two runs"
    return by_trial


def _check_trials_are_runs(ws: Workspace, result: TuneResult, n_trials: int) -> None:
    assert sorted(t.number for t in result.trials) == list(range(n_trials))
    runs = _trial_runs(ws, result)
    assert sorted(runs) == list(range(n_trials))
    for trial in result.trials:
        run = runs[trial.number]
        assert run.id == trial.run_id
        assert run.name == f"{result.study_name}/trial-{trial.number}"
        assert run.params == {k: str(v) for k, v in trial.params.items()}
        assert run.tags["optuna.state"] == trial.state
        if trial.state == "finished":
            assert run.status is RunStatus.FINISHED
            assert run.metrics["objective"].value == trial.value
        assert run.metrics["duration_s"].value == pytest.approx(trial.duration_s)


# -- the journal backend -------------------------------------------------------------------------


def test_journal_round_trips_logs_with_their_numbers(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("p", "tester")
    other = metadata_store.projects.ensure("q", "tester")
    backend = MetadataJournalBackend(metadata_store, project.id)
    logs = [
        {"op_code": 0, "worker_id": "w-1", "study_name": "s", "directions": [1]},
        {"op_code": 5, "values": [math.inf], "intermediate_value": -math.inf, "note": "é✓"},
        {"op_code": 6, "nested": {"a": [1, 2, {"b": None}]}, "flag": True},
    ]
    backend.append_logs(logs[:1])
    backend.append_logs([])
    backend.append_logs(logs[1:])
    MetadataJournalBackend(metadata_store, other.id).append_logs([{"op_code": 9}])
    assert list(backend.read_logs(0)) == logs
    assert list(backend.read_logs(2)) == logs[2:]
    assert list(backend.read_logs(3)) == []
    nan_log = {"op_code": 7, "value": math.nan}
    backend.append_logs([nan_log])
    assert math.isnan(next(iter(backend.read_logs(3)))["value"])
    assert list(MetadataJournalBackend(metadata_store, other.id).read_logs(0)) == [{"op_code": 9}]


def test_the_backend_pickles_as_where_its_store_is_never_its_token(
    metadata_store: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JournalStorage may be pickled to other processes: the copy reopens the same store (a
    local one by URL, a remote one by server URL, its token read from MEGURI_TOKEN)."""
    project = metadata_store.projects.ensure("p", "tester")
    backend = MetadataJournalBackend(metadata_store, project.id)
    backend.append_logs([{"op_code": 0, "value": math.inf}])
    data = pickle.dumps(backend)
    if isinstance(metadata_store, RemoteMetadataStore):
        token = metadata_store.worker_environment()["MEGURI_TOKEN"]
        assert token.encode() not in data
        monkeypatch.delenv("MEGURI_TOKEN", raising=False)
        with pytest.raises(ConfigError, match="MEGURI_TOKEN is not set here"):
            pickle.loads(data)
        monkeypatch.setenv("MEGURI_TOKEN", token)
    copy = pickle.loads(data)
    assert repr(copy) == repr(backend)
    copy.append_logs([{"op_code": 1}])
    assert list(backend.read_logs(0)) == [{"op_code": 0, "value": math.inf}, {"op_code": 1}]


def _append_many(url: str, project_id: str, worker: int, batches: int, start: Any) -> None:
    store = open_metadata_store(url)
    try:
        backend = MetadataJournalBackend(store, project_id)
        start.wait(timeout=60)  # all appenders begin together
        for i in range(batches):
            size = 1 + i % 3
            backend.append_logs([{"worker": worker, "batch": i, "item": j} for j in range(size)])
    finally:
        store.close()


def test_journal_numbers_logs_without_gaps_under_concurrent_appenders(metadata_url: str) -> None:
    metadata_store = open_metadata_store(metadata_url)  # the database the appenders open too
    project = metadata_store.projects.ensure("p", "tester")
    workers, batches = 4, 30
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(workers)
    processes = [
        context.Process(target=_append_many, args=(metadata_url, project.id, w, batches, start))
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    with metadata_store.db.read() as conn:
        seqs = conn.execute(sa.select(optuna_journal.c.seq).order_by("seq")).scalars().all()
    per_worker = sum(1 + i % 3 for i in range(batches))
    assert seqs == list(range(workers * per_worker))
    logs = list(MetadataJournalBackend(metadata_store, project.id).read_logs(0))
    for w in range(workers):  # each batch stays whole and in order
        mine = [(log["batch"], log["item"]) for log in logs if log["worker"] == w]
        assert mine == [(i, j) for i in range(batches) for j in range(1 + i % 3)]
    metadata_store.close()


def test_an_optuna_study_on_our_store_finds_the_optimum(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("p", "tester")

    def objective(trial: optuna.Trial) -> float:
        return parabola({"x": trial.suggest_float("x", -5.0, 5.0)}, trial)

    storage = journal_storage(metadata_store, project.id)
    sampler = optuna.samplers.TPESampler(seed=3)
    study = optuna.create_study(
        storage=storage, study_name="s", direction="maximize", sampler=sampler
    )
    study.optimize(objective, n_trials=40)
    assert study.best_params["x"] == pytest.approx(2.0, abs=0.2)
    # The same seed in memory draws the same params: the journal changes nothing optuna sees.
    memory = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=3))
    memory.optimize(objective, n_trials=40)
    assert [t.params for t in memory.trials] == [t.params for t in study.trials]
    # A fresh storage (another process would do the same) replays the study from the store.
    again = optuna.load_study(study_name="s", storage=journal_storage(metadata_store, project.id))
    assert [t.value for t in again.trials] == [t.value for t in study.trials]
    assert again.best_trial.number == study.best_trial.number


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def shared_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MetadataStore]:
    """One store per backend for the module: the journal is per project, so a fresh project
    isolates a test as well as a fresh database, for a fraction of the cost."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('journal') / 'meguri.db'}"
        else:
            server = request.getfixturevalue("postgres_url")
            url = stack.enter_context(fresh_postgres_database(server))
        store = open_metadata_store(url)
        stack.callback(store.close)
        yield store


class TestOptunaStorageContract(StorageTestCase):
    """Optuna's own storage test suite, run on JournalStorage over our store."""

    @pytest.fixture
    def storage(self, shared_store: MetadataStore) -> BaseStorage:
        project = shared_store.projects.ensure(f"contract-{uuid.uuid4().hex}", "tester")
        return journal_storage(shared_store, project.id)


# -- tune() --------------------------------------------------------------------------------------


def test_tune_records_every_trial_as_a_child_run(ws: Workspace) -> None:
    with meguri.start_run("search", experiment="tuning", workspace=ws) as parent:
        result = tune(
            parabola, X_SPACE, study_name="sq", workspace=ws, n_trials=25, parent_run=parent
        )
    _check_trials_are_runs(ws, result, 25)
    assert all(r.parent_run_id == parent.id for r in _trial_runs(ws, result).values())
    assert result.count("finished") == 25
    assert result.best_params["x"] == pytest.approx(2.0, abs=0.3)
    assert result.best_value == max(t.value for t in result.trials if t.value is not None)


def test_tune_takes_zoo_params_and_minimises(ws: Workspace) -> None:
    space = [
        Param("x", "float", -5.0, 5.0),
        {"name": "k", "kind": "categorical", "choices": [1, 2]},
    ]
    result = tune(parabola, space, study_name="min", workspace=ws, direction="minimize", n_trials=8)
    assert result.direction == "minimize"
    assert result.best_value == min(t.value for t in result.trials if t.value is not None)
    assert {t.params["k"] for t in result.trials} <= {1, 2}


def test_the_same_seed_draws_the_same_params(ws: Workspace) -> None:
    first = tune(parabola, X_SPACE, study_name="a", workspace=ws, n_trials=15, seed=7)
    second = tune(parabola, X_SPACE, study_name="b", workspace=ws, n_trials=15, seed=7)
    assert [t.params for t in first.trials] == [t.params for t in second.trials]


def test_a_second_call_continues_the_study(ws: Workspace) -> None:
    tune(parabola, X_SPACE, study_name="s", workspace=ws, n_trials=3)
    more = tune(parabola, X_SPACE, study_name="s", workspace=ws, n_trials=2)
    assert [t.number for t in more.trials] == [3, 4]
    with pytest.raises(ConfigError, match="already exists and is to maximize"):
        tune(parabola, X_SPACE, study_name="s", workspace=ws, n_trials=1, direction="minimize")


def test_parallel_trials_in_two_processes_are_recorded_once(any_ws: Workspace) -> None:
    result = tune(parabola, X_SPACE, study_name="par", workspace=any_ws, n_trials=12, parallelism=2)
    _check_trials_are_runs(any_ws, result, 12)
    pids = {r.pid for r in _trial_runs(any_ws, result).values()}
    assert len(pids) == 2 and None not in pids  # two worker processes shared the work


def test_parallel_trials_on_ray_are_recorded_once(ws: Workspace) -> None:
    ray = pytest.importorskip("ray")
    from meguri.compute import executor

    # Ray workers do not see tests/ on their path: ship this module's objectives by value (a
    # project's own objectives would come with Ray's runtime_env working_dir or py_modules).
    module = sys.modules[__name__]
    ray.cloudpickle.register_pickle_by_value(module)
    try:
        with executor("ray", num_cpus=2) as engine:
            result = tune(
                parabola,
                X_SPACE,
                study_name="ray",
                workspace=ws,
                n_trials=10,
                executor=engine,
                parallelism=2,
            )
    finally:
        ray.cloudpickle.unregister_pickle_by_value(module)
    _check_trials_are_runs(ws, result, 10)


def test_a_bad_intermediate_value_prunes_the_trial(ws: Workspace) -> None:
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    result = tune(
        reports_badly_when_negative,
        X_SPACE,
        study_name="prune",
        workspace=ws,
        n_trials=20,
        pruner=pruner,
    )
    _check_trials_are_runs(ws, result, 20)
    pruned = [t for t in result.trials if t.state == "pruned"]
    assert pruned, "no trial was pruned"
    assert all(t.params["x"] < 0 for t in pruned)
    runs = _trial_runs(ws, result)
    for trial in pruned:
        run = runs[trial.number]
        assert run.status is RunStatus.KILLED
        assert run.status_reason == "pruned at step 0"
        assert run.metrics["intermediate"].value == -100.0
        assert "objective" not in run.metrics
    finished_steps = [
        runs[t.number].metrics["intermediate"].step for t in result.trials if t.state == "finished"
    ]
    assert set(finished_steps) == {1}


def test_a_failing_objective_is_recorded_not_raised(ws: Workspace) -> None:
    result = tune(fails_when_positive, X_SPACE, study_name="fail", workspace=ws, n_trials=10)
    _check_trials_are_runs(ws, result, 10)
    runs = _trial_runs(ws, result)
    failed = [t for t in result.trials if t.state == "failed"]
    assert failed and result.count("finished") == 10 - len(failed)
    for trial in failed:
        assert trial.params["x"] > 0 and trial.value is None
        assert runs[trial.number].status is RunStatus.FAILED
        assert "ValueError" in (runs[trial.number].status_reason or "")
    assert result.best is not None and result.best.state == "finished"


def test_a_non_number_from_the_objective_fails_the_trial(ws: Workspace) -> None:
    result = tune(returns_nan, X_SPACE, study_name="nan", workspace=ws, n_trials=2)
    assert result.count("failed") == 2
    for run in _trial_runs(ws, result).values():
        assert run.status is RunStatus.FAILED
        assert run.status_reason == "the objective returned nan, not a number"


def test_a_search_where_every_trial_fails_has_no_best(ws: Workspace) -> None:
    space = [{"name": "x", "kind": "float", "low": 1.0, "high": 2.0}]
    result = tune(fails_when_positive, space, study_name="all-fail", workspace=ws, n_trials=3)
    assert result.count("failed") == 3
    assert result.best is None and result.best_value is None and result.best_params == {}


def test_the_timeout_ends_the_search(ws: Workspace) -> None:
    objective = functools.partial(sleeps, seconds=0.05)
    start = time.perf_counter()
    result = tune(objective, X_SPACE, study_name="t", workspace=ws, timeout=0.6)
    elapsed = time.perf_counter() - start
    assert 2 <= len(result.trials) <= 12
    assert elapsed < 0.6 + 1.5  # the deadline, one trial's overrun and bookkeeping


def test_the_timeout_is_shared_by_parallel_workers(ws: Workspace) -> None:
    objective = functools.partial(sleeps, seconds=0.05)
    result = tune(
        objective, X_SPACE, study_name="tp", workspace=ws, timeout=3.0, n_trials=1000, parallelism=2
    )
    assert 2 <= len(result.trials) < 1000
    _check_trials_are_runs(ws, result, len(result.trials))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs a budget"),
        ({"n_trials": 0}, "must be at least 1"),
        ({"timeout": -1.0}, "positive number of seconds"),
        ({"n_trials": 1, "parallelism": 0}, "parallelism=0"),
        ({"n_trials": 1, "direction": "up"}, "'maximize' or 'minimize'"),
    ],
)
def test_bad_settings_name_the_fix(ws: Workspace, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tune(parabola, X_SPACE, study_name="bad", workspace=ws, **kwargs)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ([], "empty search space"),
        ([{"name": "x", "kind": "float", "low": 2.0, "high": 1.0}], "needs low < high"),
        ([{"name": "x", "kind": "int"}], "needs low < high"),
        ([{"name": "x", "kind": "float", "low": 0, "high": 1, "step": 2}], "unexpected keyword"),
        (X_SPACE * 2, "names repeat"),
    ],
)
def test_bad_spaces_name_the_fix(ws: Workspace, space: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tune(parabola, space, study_name="bad", workspace=ws, n_trials=1)


def test_parallel_tuning_needs_a_shared_store(tmp_path: Path) -> None:
    workspace = open_workspace(tmp_path, store_url="sqlite://", project="mem")
    try:
        with pytest.raises(ConfigError, match="in-memory SQLite store cannot be shared"):
            tune(parabola, X_SPACE, study_name="m", workspace=workspace, n_trials=2, parallelism=2)
    finally:
        workspace.close()
