"""Experiments and runs: search (filter, order, pages), one run, metric history, artifacts
(listed, downloaded and uploaded by logical name through the artifact store), and logging."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from meguri.server._access import Access, access
from meguri.server._deps import WS, Limit, Offset, ok
from meguri.server._runs_shared import (
    artifact_bytes,
    artifact_name,
    create_remote_run,
    log_to_run,
    project_run,
    store_artifact,
)
from meguri.server._upload import spool_body
from meguri.store import Workspace
from meguri.store.metadata import Run, RunStatus

router = APIRouter(prefix="/api/v1/projects/{project}", tags=["runs"])
VIEWER = access(Access.VIEWER)
EDITOR = access(Access.EDITOR)
_KEY = Field(min_length=1, max_length=250)


def run_json(run: Run, experiments: dict[str, str] | None = None) -> dict[str, Any]:
    """A run as the API shows it: latest value of each metric, params, tags, inputs."""
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "experiment_id": run.experiment_id,
        "experiment": (experiments or {}).get(run.experiment_id),
        "parent_run_id": run.parent_run_id,
        "created_at": run.created_at,
        "created_by": run.created_by,
        "ended_at": run.ended_at,
        "status_reason": run.status_reason,
        "spec_version_id": run.spec_version_id,
        "code_version": run.code_version,
        "wall_seconds": run.wall_seconds,
        "cpu_seconds": run.cpu_seconds,
        "peak_memory_bytes": run.peak_memory_bytes,
        "params": run.params,
        "tags": run.tags,
        "metrics": {k: p.value for k, p in run.metrics.items()},
        "metric_steps": {k: p.step for k, p in run.metrics.items()},
        "inputs": run.inputs,
    }


def _experiment_names(ws: Workspace) -> dict[str, str]:
    return {e.id: e.name for e in ws.metadata.runs.list_experiments(ws.project.id)}


@router.get("/experiments", openapi_extra=VIEWER)
def list_experiments(ws: WS) -> Response:
    """The project's experiments with their number of runs."""
    repo = ws.metadata.runs
    return ok(
        {
            "experiments": [
                {
                    "id": e.id,
                    "name": e.name,
                    "created_at": e.created_at,
                    "created_by": e.created_by,
                    "runs": repo.count([e.id]),
                }
                for e in repo.list_experiments(ws.project.id)
            ]
        }
    )


@router.get("/runs", openapi_extra=VIEWER)
def search_runs(
    ws: WS,
    filter: Annotated[
        str | None,
        Query(
            max_length=4000,
            description=(
                "e.g. metrics.roc_auc >= 0.9 and params.model = 'lgbm' and status = 'finished'"
            ),
        ),
    ] = None,
    order_by: Annotated[
        list[str] | None,
        Query(max_length=20, description=("e.g. metrics.roc_auc desc; repeat for ties")),
    ] = None,
    experiment: Annotated[list[str] | None, Query(max_length=100)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    """One page of the runs matching ``filter`` (MLflow's search syntax), in ``order_by``
    order (newest first by default); ``next_offset`` is set while more may follow."""
    names = _experiment_names(ws)
    ids = list(names) if not experiment else [i for i, n in names.items() if n in experiment]
    runs = ws.metadata.runs.search(ids, filter, order_by, limit, offset) if ids else []
    more = len(runs) == limit
    return ok(
        {
            "runs": [run_json(r, names) for r in runs],
            "next_offset": offset + limit if more else None,
        }
    )


class NewRun(BaseModel):
    experiment: str = Field("default", pattern=r"^[A-Za-z0-9_\-./ :]{1,250}$")
    name: str | None = Field(None, max_length=250)
    parent_run_id: str | None = Field(None, max_length=100)
    params: dict[str, str] = Field(default_factory=dict, max_length=1000)
    tags: dict[str, str] = Field(default_factory=dict, max_length=1000)


@router.post("/runs", openapi_extra=EDITOR, status_code=201)
def create_run(ws: WS, body: NewRun) -> Response:
    """Start a run in ``experiment`` (created if new), as the caller."""
    parent = project_run(ws, body.parent_run_id).id if body.parent_run_id else None
    experiment = ws.metadata.runs.ensure_experiment(ws.project.id, body.experiment, ws.user)
    run = create_remote_run(
        ws, experiment.id, name=body.name, parent_run_id=parent, params=body.params, tags=body.tags
    )
    return ok(run_json(project_run(ws, run.id), _experiment_names(ws)), 201)


@router.get("/runs/{run_id}", openapi_extra=VIEWER)
def get_run(ws: WS, run_id: str) -> Response:
    """One run with its params, tags, latest metrics and inputs."""
    return ok(run_json(project_run(ws, run_id), _experiment_names(ws)))


@router.get("/runs/{run_id}/metrics", openapi_extra=VIEWER)
def metric_history(
    ws: WS, run_id: str, key: Annotated[str, Query(min_length=1, max_length=250)]
) -> Response:
    """Every point of metric ``key``, ordered by step: parallel arrays."""
    run = project_run(ws, run_id)
    history = ws.metadata.runs.metric_history(run.id, key)
    return ok(
        {
            "run_id": run.id,
            "key": key,
            "steps": history.steps.tolist(),
            "values": history.values.tolist(),
            "timestamps": history.timestamps.tolist(),
        }
    )


class Point(BaseModel):
    key: str = _KEY
    value: float
    step: int = 0
    timestamp: float | None = None


class LogBatch(BaseModel):
    params: dict[str, str] = Field(default_factory=dict, max_length=1000)
    tags: dict[str, str] = Field(default_factory=dict, max_length=1000)
    metrics: list[Point] = Field(default_factory=list, max_length=100_000)


@router.post("/runs/{run_id}/log", openapi_extra=EDITOR)
def log_batch(ws: WS, run_id: str, body: LogBatch) -> Response:
    """Params (immutable once logged), tags and metric points, in one transaction each."""
    run = project_run(ws, run_id)
    now = time.time()
    points = [(p.key, p.value, p.step, p.timestamp or now) for p in body.metrics]
    log_to_run(ws, run, params=body.params, tags=body.tags, metrics=points)
    return ok(
        {
            "run_id": run.id,
            "params": len(body.params),
            "tags": len(body.tags),
            "metrics": len(points),
        }
    )


class EndRun(BaseModel):
    status: Literal["finished", "failed", "killed"] = "finished"
    reason: str | None = Field(None, max_length=2000)


@router.post("/runs/{run_id}/end", openapi_extra=EDITOR)
def end_run(ws: WS, run_id: str, body: EndRun) -> Response:
    """End the run with ``status``."""
    run = project_run(ws, run_id)
    ws.metadata.runs.end_run(run.id, RunStatus(body.status), reason=body.reason)
    return ok(run_json(project_run(ws, run.id), _experiment_names(ws)))


@router.get("/runs/{run_id}/artifacts", openapi_extra=VIEWER)
def list_artifacts(ws: WS, run_id: str) -> Response:
    """The run's artifacts: logical name, size, media type, sha256."""
    run = project_run(ws, run_id)
    return ok({"run_id": run.id, "artifacts": ws.metadata.runs.list_artifacts(run.id)})


@router.get("/runs/{run_id}/artifacts/{name:path}", openapi_extra=VIEWER)
def download_artifact(ws: WS, run_id: str, name: str) -> Response:
    """The artifact's bytes, found by its exact logical name and verified against its sha256."""
    ref, data = artifact_bytes(ws, project_run(ws, run_id), name)
    filename = ref.name.rsplit("/", 1)[-1].replace('"', "")
    return Response(
        data,
        media_type=ref.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        },
    )


@router.put("/runs/{run_id}/artifacts/{name:path}", openapi_extra=EDITOR, status_code=201)
async def upload_artifact(request: Request, ws: WS, run_id: str, name: str) -> Response:
    """Store the body as artifact ``name`` of the run (a label: the store decides where the
    bytes go, by their sha256)."""
    run = await run_in_threadpool(project_run, ws, run_id)
    artifact_name(name)
    path = await spool_body(request)
    ref = await run_in_threadpool(store_artifact, ws, run, name, path)
    return ok(ref, 201)
