"""Run tracking: ``meguri.start_run()`` and the run it returns.

Metric points are buffered in memory and written in batches by one background thread per
process (every ``flush_interval`` seconds, or at once when ``max_buffer`` points wait); the
buffer is also flushed at run end, at interpreter exit and on SIGTERM. ``durable=True`` writes
every call synchronously. The same thread beats each run's heartbeat; a run whose heartbeat stops
(SIGKILL, out of memory) is marked failed by :func:`fail_stale_runs` after the timeout.

Environment: ``MEGURI_HEARTBEAT_INTERVAL`` (seconds, default 10), ``MEGURI_HEARTBEAT_TIMEOUT``
(default 60), ``MEGURI_FLUSH_INTERVAL`` (default 1).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from meguri.errors import TrackingError
from meguri.store import Workspace, default_workspace
from meguri.store.metadata import ArtifactRef, MetadataStore, Run, RunStatus
from meguri.store.metadata.repositories.runs import MetricHistory, PointTuple
from meguri.train._artifacts import figure_bytes, safe_artifact_name
from meguri.train._lifecycle import TERMINATED, lifecycle
from meguri.train._resources import ResourceMeter

_KEY = re.compile(r"^[A-Za-z0-9_\-./ :]{1,250}$")
_KEY_HELP = "Use 1 to 250 letters, digits, spaces and _ - . / : (e.g. 'val/loss')."


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        raise TrackingError(f"{name}={raw!r} is not a number of seconds.") from None


def _check_key(kind: str, key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise TrackingError(f"Invalid {kind} name {key!r}. {_KEY_HELP}")
    return key


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not hasattr(value, "__float__"):
        raise TrackingError(
            f"Metric {key!r} must be a number, not {type(value).__name__} {value!r}."
        )
    return float(value)


def _code_version(root: Path) -> str | None:
    """The git commit of the project folder, read from .git without running git."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            ref_file = git / ref
            if ref_file.is_file():
                return ref_file.read_text().strip()
            for line in (git / "packed-refs").read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
            return None
        return head
    except OSError:
        return None


class ActiveRun:
    """A run in progress. Use as a context manager: an exception ends it as failed."""

    def __init__(
        self, workspace: Workspace, run: Run, *, experiment: str, durable: bool, max_buffer: int
    ) -> None:
        self.workspace = workspace
        self.experiment_name = experiment
        self.id = run.id
        self.name = run.name
        self.durable = durable
        self._repo = workspace.metadata.runs
        self._max_buffer = max_buffer
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._buffer: list[PointTuple] = []
        self._steps: dict[str, int] = {}
        self._keys: set[str] = set()
        self._meter = ResourceMeter()
        self._ended = False
        self._next_beat = 0.0

    # -- params and tags (written at once: they are few) ---------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record parameters; a param, once logged, cannot change value."""
        self._check_open()
        clean = {_check_key("param", k): str(v) for k, v in params.items()}
        self._repo.log_batch(self.id, params=clean)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._check_open()
        self._repo.log_batch(self.id, tags={_check_key("tag", k): str(v) for k, v in tags.items()})

    # -- metrics (buffered) ---------------------------------------------------------------------

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: float | None = None
    ) -> None:
        """Record one point. Without ``step``, each key counts its own steps 0, 1, 2, ..."""
        self.log_metrics({key: value}, step=step, timestamp=timestamp)

    def log_metrics(
        self, values: Mapping[str, float], step: int | None = None, timestamp: float | None = None
    ) -> None:
        self._check_open()
        now = time.time() if timestamp is None else timestamp
        points = [self._point(k, v, step, now) for k, v in values.items()]
        self._append(points)

    def log_batch(self, points: Iterable[tuple[str, float, int] | PointTuple]) -> None:
        """Record many ``(key, value, step)`` or ``(key, value, step, timestamp)`` points."""
        self._check_open()
        now = time.time()
        rows = [self._point(p[0], p[1], p[2], p[3] if len(p) > 3 else now) for p in points]
        self._append(rows)

    def _point(self, key: str, value: Any, step: int | None, now: float) -> PointTuple:
        if key not in self._keys:
            self._keys.add(_check_key("metric", key))
        if step is None:
            step = self._steps.get(key, -1) + 1
        elif isinstance(step, bool) or not isinstance(step, int):
            step = int(step)
        self._steps[key] = step
        return (key, _as_float(key, value), step, now)

    def _append(self, points: list[PointTuple]) -> None:
        with self._lock:
            self._buffer.extend(points)
            full = len(self._buffer) >= self._max_buffer
        if self.durable or full:
            self.flush()

    def flush(self) -> None:
        """Write every buffered point now (one transaction)."""
        with lifecycle.critical(), self._write_lock:
            with self._lock:
                points, self._buffer = self._buffer, []
            if not points:
                return
            try:
                self._repo.log_batch(self.id, points)
            except BaseException:
                with self._lock:  # keep the points for the next try
                    self._buffer[:0] = points
                raise

    # -- inputs and artifacts -------------------------------------------------------------------

    def log_input(self, kind: str, refs: str | Iterable[str]) -> None:
        """Link the run to what it used, e.g. ``log_input("dataset_version", "dsv-…")``."""
        self._check_open()
        self._repo.add_inputs(
            self.id, _check_key("input kind", kind), [refs] if isinstance(refs, str) else refs
        )

    def log_artifact(self, path: str | Path, name: str | None = None) -> ArtifactRef:
        """Copy a local file into the artifact store, under ``name`` (default: its file name)."""
        self._check_open()
        source = Path(path)
        if not source.is_file():
            raise TrackingError(f"Cannot log artifact {str(path)!r}: no such file.")
        stored = self.workspace.artifacts.put_file(source)
        return self._record(safe_artifact_name(name or source.name), stored.digest, stored.size)

    def log_bytes(
        self, data: bytes, name: str, media_type: str = "application/octet-stream"
    ) -> ArtifactRef:
        self._check_open()
        stored = self.workspace.artifacts.put_bytes(data)
        return self._record(safe_artifact_name(name), stored.digest, stored.size, media_type)

    def log_text(self, text: str, name: str) -> ArtifactRef:
        return self.log_bytes(text.encode("utf-8"), name, "text/plain; charset=utf-8")

    def log_dict(self, data: Mapping[str, Any], name: str) -> ArtifactRef:
        import orjson

        payload = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        return self.log_bytes(payload, name, "application/json")

    def log_figure(self, figure: Any, name: str) -> ArtifactRef:
        """Store a Plotly figure (as Plotly JSON) or a Matplotlib figure (as PNG)."""
        data, media_type, suffix = figure_bytes(figure)
        if not name.endswith(suffix):
            name += suffix
        return self.log_bytes(data, name, media_type)

    def _record(
        self, name: str, digest: str, size: int, media_type: str | None = None
    ) -> ArtifactRef:
        import mimetypes

        kind = media_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        ref = ArtifactRef(
            name=name, digest=digest, size=size, media_type=kind, created_at=time.time()
        )
        self._repo.add_artifact(self.id, ref)
        return ref

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def info(self) -> Run:
        """The run as stored now (params, tags, latest metrics), after a flush."""
        if not self._ended:
            self.flush()
        return self._repo.get_run(self.id)

    def _check_open(self) -> None:
        if self._ended:
            raise TrackingError(f"Run {self.id} has ended; start a new run to log more.")

    def heartbeat(self) -> None:
        self._repo.heartbeat([self.id], peak_memory_bytes=self._meter.sample())

    def tick(self, now: float, interval: float) -> None:
        """Called by the background thread: flush, and beat when due."""
        self.flush()
        if now >= self._next_beat:
            self.heartbeat()
            self._next_beat = now + interval

    def end(self, status: RunStatus | str = RunStatus.FINISHED, reason: str | None = None) -> None:
        """Flush, record resource use and the final status. Ending twice does nothing."""
        if self._ended:
            return
        with lifecycle.critical():
            self.flush()
            self._ended = True
            lifecycle.forget(self)
            resources = self._meter.read()
            self._repo.end_run(self.id, RunStatus(status), reason=reason, resources=resources)

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.end(RunStatus.FINISHED)
        elif lifecycle.terminating:
            self.end(RunStatus.KILLED, TERMINATED)
        elif isinstance(exc, KeyboardInterrupt):
            self.end(RunStatus.KILLED, "interrupted (KeyboardInterrupt)")
        else:
            self.end(RunStatus.FAILED, f"{type(exc).__name__}: {exc}"[:2000])

    def __repr__(self) -> str:
        return f"<ActiveRun {self.id} name={self.name!r}>"


def start_run(
    name: str | None = None,
    *,
    experiment: str = "default",
    workspace: Workspace | None = None,
    durable: bool = False,
    parent: ActiveRun | str | None = None,
    spec_version: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str | Iterable[str]] | None = None,
    max_buffer: int = 100_000,
) -> ActiveRun:
    """Start a tracked run in ``experiment``; use it as a context manager."""
    ws = workspace or default_workspace()
    repo = ws.metadata.runs
    _check_key("experiment", experiment)
    exp = repo.ensure_experiment(ws.project.id, experiment, ws.user)
    parent_id = parent.id if isinstance(parent, ActiveRun) else parent
    run = repo.create_run(
        exp.id,
        created_by=ws.user,
        name=name,
        parent_run_id=parent_id,
        spec_version_id=spec_version,
        code_version=_code_version(ws.root),
        host=socket.gethostname(),
        pid=os.getpid(),
    )
    active = ActiveRun(ws, run, experiment=experiment, durable=durable, max_buffer=max_buffer)
    lifecycle.track(
        active,
        _env_float("MEGURI_HEARTBEAT_INTERVAL", 10.0),
        _env_float("MEGURI_FLUSH_INTERVAL", 1.0),
    )
    if params:
        active.log_params(params)
    if tags:
        active.set_tags(tags)
    for kind, refs in (inputs or {}).items():
        active.log_input(kind, refs)
    return active


def active_run() -> ActiveRun | None:
    """The most recently started run of this process that has not ended."""
    return lifecycle.latest()


def fail_stale_runs(workspace: Workspace | None = None, timeout: float | None = None) -> int:
    """Mark runs whose heartbeat stopped as failed; returns how many."""
    ws = workspace or default_workspace()
    limit = timeout if timeout is not None else _env_float("MEGURI_HEARTBEAT_TIMEOUT", 60.0)
    return ws.metadata.runs.fail_stale_runs(limit)


_last_reap: dict[int, float] = {}
_REAP_EVERY = 5.0


def reap_stale_runs(metadata: MetadataStore) -> None:
    """Mark runs whose heartbeat stopped as failed before a read, at most every few seconds
    per store (a heartbeat timeout is a minute: re-checking on every search would only add
    latency). A platform server's store is swept by the server, before the reads it serves."""
    from meguri.store.remote import RemoteMetadataStore

    if isinstance(metadata, RemoteMetadataStore):
        return
    now = time.monotonic()
    key = id(metadata)
    if now - _last_reap.get(key, -_REAP_EVERY) >= _REAP_EVERY:
        _last_reap[key] = now
        metadata.runs.fail_stale_runs(_env_float("MEGURI_HEARTBEAT_TIMEOUT", 60.0))


def _reap(ws: Workspace) -> None:
    reap_stale_runs(ws.metadata)


def _experiment_ids(ws: Workspace, experiment: str | Iterable[str] | None) -> list[str]:
    repo = ws.metadata.runs
    if experiment is None:
        return [e.id for e in repo.list_experiments(ws.project.id)]
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    found = [repo.find_experiment(ws.project.id, n) for n in names]
    return [e.id for e in found if e is not None]


def search_runs(
    filter: str | None = None,
    order_by: list[str] | None = None,
    *,
    experiment: str | Iterable[str] | None = None,
    max_results: int = 1000,
    offset: int = 0,
    workspace: Workspace | None = None,
) -> list[Run]:
    """Runs of the project (or of the named experiments) matching ``filter``, ordered, one page.

    ``filter``: ``"metrics.roc_auc >= 0.9 and params.model = 'lgbm'"``; ``order_by``:
    ``["metrics.roc_auc desc"]``. Newest first by default.
    """
    ws = workspace or default_workspace()
    _reap(ws)
    ids = _experiment_ids(ws, experiment)
    return ws.metadata.runs.search(ids, filter, order_by, max_results, offset)


def get_run(run_id: str, *, workspace: Workspace | None = None) -> Run:
    """A run by ID, unique ID prefix or name."""
    ws = workspace or default_workspace()
    _reap(ws)
    repo = ws.metadata.runs
    return repo.get_run(repo.resolve_run_id(run_id))


def get_metric_history(
    run_id: str, key: str, *, workspace: Workspace | None = None
) -> MetricHistory:
    """Every point of metric ``key`` of the run, as numpy arrays ordered by step."""
    ws = workspace or default_workspace()
    return ws.metadata.runs.metric_history(run_id, key)
