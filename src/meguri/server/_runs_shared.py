"""Runs as both the meguri API and the MLflow subset reach them: always within the caller's
project, written through the tracking SDK's own checks, artifacts by logical name only.

A run created over HTTP has no process beating its heartbeat; every write through the server
beats it instead, so that :func:`meguri.fail_stale_runs` leaves a run alone while its client
keeps logging.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meguri.errors import NotFoundError
from meguri.store import Workspace
from meguri.store.metadata import ArtifactRef, Experiment, Run
from meguri.train import ActiveRun
from meguri.train._artifacts import safe_artifact_name

__all__ = [
    "artifact_bytes",
    "artifact_name",
    "create_remote_run",
    "experiment_by_id",
    "log_to_run",
    "project_run",
    "store_artifact",
]


def _no_run(run_id: str, ws: Workspace) -> NotFoundError:
    return NotFoundError(f"No run {run_id!r} in project {ws.project.name!r}.")


def experiment_by_id(ws: Workspace, experiment_id: str) -> Experiment:
    """The experiment ``experiment_id`` of the workspace's project, deleted ones included
    (their runs stay readable by id); another project's is not found."""
    try:
        experiment = ws.metadata.runs.get_experiment(experiment_id)
    except NotFoundError:
        experiment = None
    if experiment is None or experiment.project_id != ws.project.id:
        raise NotFoundError(f"No experiment {experiment_id!r} in project {ws.project.name!r}.")
    return experiment


def project_run(ws: Workspace, run_id: str) -> Run:
    """The run ``run_id`` if it belongs to the workspace's project; else 404 (a run of another
    project is not shown to someone who holds a role only on this one)."""
    if len(run_id) > 100:
        raise _no_run(run_id[:100], ws)
    try:
        run = ws.metadata.runs.get_run(run_id)
    except NotFoundError:
        raise _no_run(run_id, ws) from None
    try:
        experiment_by_id(ws, run.experiment_id)
    except NotFoundError:
        raise _no_run(run_id, ws) from None
    return run


def create_remote_run(
    ws: Workspace,
    experiment_id: str,
    *,
    name: str | None = None,
    parent_run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Run:
    """A run started by a client over HTTP: created as the caller, with no host or pid of
    this server (the client's process, not ours, runs it), its params and tags checked."""
    run = ws.metadata.runs.create_run(
        experiment_id, created_by=ws.user, name=name, parent_run_id=parent_run_id
    )
    if params or tags:
        log_to_run(ws, run, params=params, tags=tags)
    return ws.metadata.runs.get_run(run.id)


def _writer(ws: Workspace, run: Run) -> ActiveRun:
    return ActiveRun(ws, run, experiment=run.experiment_id, durable=True, max_buffer=1 << 20)


def log_to_run(
    ws: Workspace,
    run: Run,
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    metrics: Sequence[tuple[str, float, int, float]] = (),
) -> None:
    """Params, tags and metric points ``(key, value, step, timestamp)`` with the SDK's checks
    (key names, numbers, params immutable)."""
    writer = _writer(ws, run)
    if params:
        writer.log_params(params)
    if tags:
        writer.set_tags(tags)
    if metrics:
        writer.log_batch(metrics)
    ws.metadata.runs.heartbeat([run.id])


def artifact_name(name: str) -> str:
    """``name`` as the SDK accepts artifact names (relative plain segments, no ``..``, no
    leading ``/``), else :class:`~meguri.errors.TrackingError`: checked before any byte is
    stored, so that a refused name leaves nothing behind."""
    return safe_artifact_name(name)


def store_artifact(ws: Workspace, run: Run, name: str, path: Path) -> ArtifactRef:
    """Keep the file ``path`` (spooled by the server) as artifact ``name`` of the run; the
    name is a label checked by the SDK, the storage location is the content's digest."""
    try:
        ref = _writer(ws, run).log_artifact(path, artifact_name(name))
    finally:
        os.unlink(path)
    ws.metadata.runs.heartbeat([run.id])
    return ref


def artifact_bytes(ws: Workspace, run: Run, name: str) -> tuple[ArtifactRef, bytes]:
    """The artifact named exactly ``name`` of the run, its content verified."""
    for ref in ws.metadata.runs.list_artifacts(run.id):
        if ref.name == name:
            return ref, ws.artifacts.get_bytes(ref.digest)
    raise NotFoundError(f"Run {run.id} has no artifact named {name!r}.")
