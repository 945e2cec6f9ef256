"""Hyperparameter search: Optuna studies kept in the metadata store, every trial a tracked run.

:func:`tune` samples ``space`` (data: :class:`~meguri.train._zoo_space.Param` or mappings with
the same fields) with ``trial.suggest_*`` and calls ``objective(params, trial) -> float``. The
objective may ``trial.report(value, step)`` and raise ``optuna.TrialPruned`` when
``trial.should_prune()``; ``MedianPruner`` judges by default. Inside the objective,
``meguri.active_run()`` is the trial's run (to log more metrics or artifacts).

Each trial is a run named ``<study>/trial-<n>`` (a child of ``parent_run`` when given) with the
params, the objective value as metric ``metric``, the intermediate values as ``intermediate``,
``duration_s`` and the tags ``optuna.study``, ``optuna.trial``, ``optuna.state``. Its status:
``finished``; ``killed`` with reason ``pruned at step …`` for a pruned trial; ``failed`` with
the exception for a failed one (a failure is recorded, never raised: the search goes on).

Parallel trials: ``parallelism`` workers (processes of a :class:`~meguri.compute.LocalExecutor`,
or tasks of the executor given, e.g. Ray) each open the same workspace and run
``study.optimize`` on a share of ``n_trials`` against the shared journal storage, so the study
ends with exactly ``n_trials`` trials. ``timeout`` is a deadline for starting trials: a trial
already running finishes, so the search may overrun by one trial's duration.

On a platform server's workspace (``MEGURI_SERVER``) the journal and the runs go through the
server like every other record, as the token's user. Workers reopen the workspace from the
server's URL and read the token from their environment, never from a pickle: the processes
this call starts get ``MEGURI_SERVER`` and ``MEGURI_TOKEN`` from it (even when the workspace
was opened with an explicit token); workers started elsewhere (a Ray cluster) need them in
their own environment (``runtime_env={"env_vars": ...}``). A worker whose token is another
user's refuses to start.

Reproducibility: with one worker, the same ``seed`` gives the same sequence of params (the TPE
sampler is seeded). With several workers, worker ``i`` is seeded ``seed + i`` and samples with
the ``constant_liar`` heuristic, but which trials each worker sees finished depends on timing,
so the params drawn are not reproducible run to run; only the trial budget is.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import optuna

from meguri.compute import Executor, LocalExecutor
from meguri.errors import ConfigError
from meguri.store import Workspace, default_workspace, open_workspace
from meguri.store.metadata import RunStatus
from meguri.store.metadata._engine import sqlite_path
from meguri.store.remote import RemoteMetadataStore
from meguri.train._optuna_journal import journal_storage
from meguri.train._tracking import ActiveRun, start_run
from meguri.train._zoo_space import Param

__all__ = ["Objective", "TrialSummary", "TuneResult", "tune"]

#: ``objective(params, trial) -> value``; module-level (picklable) for parallel searches.
Objective = Callable[[dict[str, Any], optuna.Trial], float]

_STATES = {
    optuna.trial.TrialState.COMPLETE: "finished",
    optuna.trial.TrialState.PRUNED: "pruned",
    optuna.trial.TrialState.FAIL: "failed",
    optuna.trial.TrialState.RUNNING: "running",
    optuna.trial.TrialState.WAITING: "waiting",
}
_RUN_ID_ATTR = "meguri_run_id"

Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class TrialSummary:
    """One trial of a search: its state (finished, pruned, failed), value, params and run."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    run_id: str | None
    duration_s: float | None


@dataclass(frozen=True)
class TuneResult:
    """The trials one :func:`tune` call ran, and the best finished one (None if none finished)."""

    study_name: str
    direction: str
    trials: tuple[TrialSummary, ...]
    best: TrialSummary | None

    @property
    def best_value(self) -> float | None:
        return None if self.best is None else self.best.value

    @property
    def best_params(self) -> dict[str, Any]:
        return {} if self.best is None else dict(self.best.params)

    def count(self, state: str) -> int:
        """How many trials ended in ``state`` (``finished``, ``pruned`` or ``failed``)."""
        return sum(t.state == state for t in self.trials)


@dataclass(frozen=True)
class _WorkspaceRef:
    """What a worker process needs to open the same workspace (a Workspace is not picklable):
    a local one's store URLs, or a platform server's URL (the token is never in here: the
    worker reads ``MEGURI_TOKEN`` from its environment)."""

    root: str
    project: str
    user: str
    store_url: str | None = None
    artifacts_url: str | None = None
    encryption_key_file: str | None = None
    """The key file the workspace was opened with (workers must seal what they write too)."""
    server: str | None = None
    """The platform server of a remote workspace (then the store URLs are None)."""

    @classmethod
    def of(cls, ws: Workspace) -> _WorkspaceRef:
        if isinstance(ws.metadata, RemoteMetadataStore):
            return cls(str(ws.root), ws.project.name, ws.user, server=ws.metadata.url)
        url = ws.metadata.db.engine.url.render_as_string(hide_password=False)
        keys = getattr(ws.artifacts, "keys", None)
        path = getattr(keys, "path", None)
        key_file = str(path) if path is not None else None
        return cls(str(ws.root), ws.project.name, ws.user, url, ws.artifacts.url, key_file)

    def open(self) -> Workspace:
        if self.server is not None:
            return self._open_remote(self.server)
        return open_workspace(
            self.root,
            store_url=self.store_url,
            artifacts_url=self.artifacts_url,
            project=self.project,
            user=self.user,
            encryption_key_file=self.encryption_key_file,
        )

    def _open_remote(self, server: str) -> Workspace:
        if not os.environ.get("MEGURI_TOKEN"):
            raise ConfigError(
                f"A tuning worker reopens the workspace of the meguri server at {server}, but "
                "MEGURI_TOKEN is not in its environment: tune() gives it to the workers it "
                "starts; workers started elsewhere (a Ray cluster) need it in theirs, e.g. "
                "runtime_env={'env_vars': {'MEGURI_TOKEN': ...}}."
            )
        ws = open_workspace(self.root, server=server, project=self.project)
        if ws.user != self.user:  # a worker started earlier, under another token
            ws.close()
            raise ConfigError(
                f"A tuning worker's MEGURI_TOKEN belongs to {ws.user!r}, but the search runs "
                f"as {self.user!r}: give the workers the searching user's token (or let tune() "
                "start its own workers)."
            )
        return ws


@dataclass(frozen=True)
class _Job:
    """One worker's share of a search."""

    workspace: _WorkspaceRef
    study_name: str
    objective: Objective
    space: tuple[Param, ...]
    experiment: str
    metric: str
    n_trials: int | None
    deadline: float | None
    seed: int | None
    pruner: optuna.pruners.BasePruner | None
    parent_run_id: str | None
    parallel: bool = field(default=False)


# -- the trials as runs --------------------------------------------------------------------------


class _TrialRecorder:
    """Wraps the objective (a run per trial) and, as a study callback, ends each trial's run."""

    def __init__(self, job: _Job, ws: Workspace) -> None:
        self._job = job
        self._ws = ws
        self._runs: dict[int, ActiveRun] = {}
        self._failures: dict[int, str] = {}

    def objective(self, trial: optuna.Trial) -> float:
        job = self._job
        params = {p.name: p.suggest(trial) for p in job.space}
        run = start_run(
            f"{job.study_name}/trial-{trial.number}",
            experiment=job.experiment,
            workspace=self._ws,
            parent=job.parent_run_id,
            params=params,
            tags={"optuna.study": job.study_name, "optuna.trial": trial.number},
        )
        trial.set_user_attr(_RUN_ID_ATTR, run.id)
        self._runs[trial.number] = run
        try:
            value = job.objective(params, trial)
        except optuna.TrialPruned:
            raise  # optuna records the trial as pruned; the callback ends the run
        except Exception as exc:  # optuna records it as failed (catch=Exception)
            self._failures[trial.number] = f"{type(exc).__name__}: {exc}"
            raise
        except BaseException as exc:  # interrupted: no callback will come
            self._runs.pop(trial.number, None)
            run.end(RunStatus.KILLED, f"interrupted ({type(exc).__name__})")
            raise
        if _not_a_number(value):  # optuna fails the trial; say why in the run
            self._failures[trial.number] = f"the objective returned {value!r}, not a number"
        return value

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run = self._runs.pop(trial.number, None)
        if run is None:
            return
        state = _STATES.get(trial.state, trial.state.name.lower())
        steps = sorted(trial.intermediate_values.items())
        points = [("intermediate", float(v), int(s)) for s, v in steps]
        if trial.duration is not None:
            points.append(("duration_s", trial.duration.total_seconds(), 0))
        if trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None:
            points.append((self._job.metric, float(trial.value), 0))
        run.log_batch(points)
        run.set_tag("optuna.state", state)
        failure = self._failures.pop(trial.number, None)
        run.end(*_run_status(trial, steps, failure))


def _not_a_number(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def _run_status(
    trial: optuna.trial.FrozenTrial, steps: list[tuple[int, float]], failure: str | None
) -> tuple[RunStatus, str | None]:
    if trial.state == optuna.trial.TrialState.COMPLETE:
        return RunStatus.FINISHED, None
    if trial.state == optuna.trial.TrialState.PRUNED:
        where = f"at step {steps[-1][0]}" if steps else "before its first report"
        return RunStatus.KILLED, f"pruned {where}"
    return RunStatus.FAILED, (failure or f"trial ended {trial.state.name.lower()}")[:2000]


# -- one worker ----------------------------------------------------------------------------------


def _sampler(job: _Job) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=job.seed, constant_liar=job.parallel)


def _optimize(job: _Job, ws: Workspace) -> None:
    # Every trial is a run (browse them with `meguri runs list`): Optuna's per-trial INFO
    # lines would only repeat that on the console.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    remaining = None if job.deadline is None else job.deadline - time.time()
    if remaining is not None and remaining <= 0:
        return
    study = optuna.load_study(
        study_name=job.study_name,
        storage=journal_storage(ws.metadata, ws.project.id),
        sampler=_sampler(job),
        pruner=job.pruner if job.pruner is not None else optuna.pruners.MedianPruner(),
    )
    recorder = _TrialRecorder(job, ws)
    study.optimize(
        recorder.objective,
        n_trials=job.n_trials,
        timeout=remaining,
        catch=(Exception,),
        callbacks=[recorder],
    )


def _work(job: _Job) -> None:
    """A worker: open the workspace, run its share of trials, close (module-level: picklable)."""
    ws = job.workspace.open()
    try:
        _optimize(job, ws)
    finally:
        ws.close()


# -- the search ----------------------------------------------------------------------------------


def tune(
    objective: Objective,
    space: Sequence[Param | Mapping[str, Any]],
    *,
    study_name: str,
    workspace: Workspace | None = None,
    direction: Direction = "maximize",
    n_trials: int | None = None,
    timeout: float | None = None,
    executor: Executor | None = None,
    parallelism: int = 1,
    seed: int | None = 0,
    pruner: optuna.pruners.BasePruner | None = None,
    parent_run: ActiveRun | str | None = None,
    experiment: str | None = None,
    metric: str = "objective",
) -> TuneResult:
    """Search ``space`` for the params that optimise ``objective``; see the module docstring.

    The study ``study_name`` lives in the workspace's metadata store (a second call with the
    same name continues it). ``n_trials`` and/or ``timeout`` (seconds) bound the search.
    Runs go to ``experiment`` (default: the parent run's experiment, else ``"tuning"``).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are runs: see _optimize
    ws = workspace or default_workspace()
    _check_budget(n_trials, timeout, parallelism)
    parent_id = parent_run.id if isinstance(parent_run, ActiveRun) else parent_run
    storage = journal_storage(ws.metadata, ws.project.id)
    first = _open_study(storage, study_name, direction)
    base = _Job(
        workspace=_WorkspaceRef.of(ws),
        study_name=study_name,
        objective=objective,
        space=_space(space),
        experiment=experiment or _experiment_of(ws, parent_id),
        metric=metric,
        n_trials=n_trials,
        deadline=None if timeout is None else time.time() + timeout,
        seed=seed,
        pruner=pruner,
        parent_run_id=parent_id,
    )
    _run_jobs(_split(base, parallelism), ws, executor, parallelism)
    return _result(optuna.load_study(study_name=study_name, storage=storage), first)


def _check_budget(n_trials: int | None, timeout: float | None, parallelism: int) -> None:
    if n_trials is None and timeout is None:
        raise ConfigError(
            "tune() needs a budget: pass n_trials, timeout (seconds), or both, e.g. from the "
            "spec's model.training_time_budget_minutes."
        )
    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"tune(n_trials={n_trials}) must be at least 1 (or None: no limit).")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"tune(timeout={timeout}) must be a positive number of seconds.")
    if parallelism < 1:
        raise ConfigError(f"tune(parallelism={parallelism}) must be at least 1.")


def _space(space: Sequence[Param | Mapping[str, Any]]) -> tuple[Param, ...]:
    params = tuple(_param(p) for p in space)
    if not params:
        raise ConfigError("tune() got an empty search space: give at least one parameter.")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise ConfigError(f"tune(): parameter names repeat in the search space: {names}.")
    return params


def _param(item: Param | Mapping[str, Any]) -> Param:
    if isinstance(item, Param):
        return item
    fields = dict(item)
    if "choices" in fields:
        fields["choices"] = tuple(fields["choices"])
    try:
        return Param(**fields)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"Search space entry {fields!r} is invalid: {err}. Give name, kind (float, int or "
            "categorical) and low/high (optionally log) or choices."
        ) from None


def _open_study(storage: optuna.storages.BaseStorage, name: str, direction: Direction) -> int:
    """Create the study (or find it); the number of trials it already has."""
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"tune(direction={direction!r}) must be 'maximize' or 'minimize'.")
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, load_if_exists=True
    )
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"Study {name!r} already exists and is to {study.direction.name.lower()}, not to "
            f"{direction}: choose another study_name."
        )
    return len(study.get_trials(deepcopy=False))


def _experiment_of(ws: Workspace, parent_id: str | None) -> str:
    if parent_id is None:
        return "tuning"
    repo = ws.metadata.runs
    experiment_id = repo.get_run(parent_id).experiment_id
    for exp in repo.list_experiments(ws.project.id):
        if exp.id == experiment_id:
            return exp.name
    return "tuning"


def _split(base: _Job, parallelism: int) -> list[_Job]:
    """``parallelism`` jobs sharing the trial budget exactly, seeded ``seed + i``."""
    if base.n_trials is not None:
        parallelism = min(parallelism, base.n_trials)
    if parallelism == 1:
        return [base]
    jobs = []
    for i in range(parallelism):
        share = None
        if base.n_trials is not None:
            share = base.n_trials // parallelism + (i < base.n_trials % parallelism)
        seed = None if base.seed is None else base.seed + i
        jobs.append(replace(base, n_trials=share, seed=seed, parallel=True))
    return jobs


def _run_jobs(jobs: list[_Job], ws: Workspace, executor: Executor | None, parallelism: int) -> None:
    if executor is None and len(jobs) == 1:
        _optimize(jobs[0], ws)  # in this process, on the caller's workspace
        return
    _check_shareable(ws)
    owned = executor is None
    runner = executor or LocalExecutor(workers=parallelism)
    try:
        with _worker_environment(ws):
            runner.map(_work, jobs)
    finally:
        if owned:
            runner.close()


def _check_shareable(ws: Workspace) -> None:
    if isinstance(ws.metadata, RemoteMetadataStore):
        return  # any process may reach the server
    if sqlite_path(ws.metadata.db.engine.url) is None and ws.metadata.db.is_sqlite:
        raise ConfigError(
            "Parallel tuning needs a metadata store that other processes can open: an in-memory "
            "SQLite store cannot be shared. Use a file (sqlite:///path/meguri.db) or PostgreSQL."
        )


@contextmanager
def _worker_environment(ws: Workspace) -> Iterator[None]:
    """While workers start: a remote workspace's server and token in this process's
    environment, which the worker processes inherit (restored afterwards). The token so
    reaches them without being pickled, even when the workspace was opened with ``token=``."""
    if not isinstance(ws.metadata, RemoteMetadataStore):
        yield
        return
    wanted = ws.metadata.worker_environment()
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _result(study: optuna.Study, first: int) -> TuneResult:
    trials = tuple(_summary(t) for t in study.get_trials(deepcopy=False) if t.number >= first)
    finished = [t for t in trials if t.state == "finished" and t.value is not None]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    best = None
    if finished:
        pick = max if maximize else min
        best = pick(finished, key=lambda t: t.value if t.value is not None else 0.0)
    return TuneResult(study.study_name, study.direction.name.lower(), trials, best)


def _summary(trial: optuna.trial.FrozenTrial) -> TrialSummary:
    run_id = trial.user_attrs.get(_RUN_ID_ATTR)
    return TrialSummary(
        number=trial.number,
        state=_STATES.get(trial.state, trial.state.name.lower()),
        value=trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None,
        params=dict(trial.params),
        run_id=str(run_id) if run_id is not None else None,
        duration_s=None if trial.duration is None else trial.duration.total_seconds(),
    )
