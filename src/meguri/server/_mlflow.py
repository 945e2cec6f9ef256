"""The MLflow tracking subset, so that scripts using the real ``mlflow`` client log into meguri
unchanged (``mlflow.set_tracking_uri("http://host:port")``, ``MLFLOW_TRACKING_TOKEN`` as the
meguri API token):

=============================================  =============================================
``GET  experiments/get-by-name``, ``get``      an experiment of the project
``POST experiments/create``, ``search``        ``artifact_location`` is refused: meguri alone
                                               decides where bytes are stored
``POST experiments/update``, ``delete``,       rename, delete, restore, tag an experiment
``restore``, ``set-experiment-tag``,           (see :mod:`._mlflow_lifecycle`)
``delete-experiment-tag``
``POST runs/create``, ``update``, ``search``   runs (search: MLflow's filter syntax, paged,
                                               ``run_view_type``); ``update`` also renames
``GET  runs/get``                              one run with its latest metrics, params, tags,
                                               dataset inputs
``POST runs/log-metric``, ``log-parameter``,   written through the tracking SDK's checks; the
``log-batch``, ``set-tag``                     tag ``mlflow.runName`` renames the run
``POST runs/delete``, ``restore``,             see :mod:`._mlflow_lifecycle`
``delete-tag``, ``log-inputs``, ``log-model``
``GET  metrics/get-history``                   every point of a metric, paged
``registered-models/…``, ``model-versions/…``  the registry, see :mod:`._mlflow_registry`
=============================================  =============================================

All under ``/api/2.0/mlflow/`` for the server's default project, or under
``/projects/<name>/api/2.0/mlflow/`` (tracking URI ``http://host:port/projects/<name>``) for
another. The run's author is the signed-in user, whatever ``user_id`` the client sends. Reads
need the viewer role, run and experiment writes editor, alias moves admin. The routes of
:mod:`._mlflow_lifecycle` and :mod:`._mlflow_registry` are included in this router, so that
the app registers one router for the whole subset.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field
from starlette.responses import Response

from meguri.errors import ConflictError, NotFoundError
from meguri.server import _mlflow_convert as conv
from meguri.server._deps import WS, ok
from meguri.server._errors import ApiError
from meguri.server._mlflow_common import (
    EDITOR,
    VIEWER,
    Body,
    KeyValue,
    RunRef,
    active_experiment,
    active_run,
    experiment_of,
)
from meguri.server._mlflow_lifecycle import dataset_inputs
from meguri.server._mlflow_lifecycle import router as lifecycle_router
from meguri.server._mlflow_registry import router as registry_router
from meguri.server._runs_shared import create_remote_run, log_to_run, project_run
from meguri.store import Workspace
from meguri.store.metadata import Experiment, Run

router = APIRouter(prefix="/api/2.0/mlflow", tags=["mlflow"])
_NAME = r"^[A-Za-z0-9_\-./ :]{1,200}$"
_RunId = Annotated[str, Query(min_length=1, max_length=100)]


class MetricIn(Body):
    key: str = Field(max_length=250)
    value: float
    timestamp: float | None = None
    step: int = 0


def _query_run_id(run_id: str | None, run_uuid: str | None) -> str:
    found = run_id or run_uuid
    if not found:
        raise ApiError(400, "bad_request", "run_id is required.")
    return found


def _point(m: MetricIn) -> tuple[str, float, int, float]:
    stamp = m.timestamp / 1000.0 if m.timestamp is not None else time.time()
    return (m.key, m.value, m.step, stamp)


def _experiment_answer(ws: Workspace, experiment: Experiment) -> Response:
    tags = ws.metadata.runs.experiment_tags([experiment.id]).get(experiment.id)
    return ok({"experiment": conv.experiment_json(experiment, tags)})


def _runs_json(ws: Workspace, runs: list[Run]) -> list[dict[str, Any]]:
    inputs = dataset_inputs(ws, runs)
    return [conv.run_json(r, inputs.get(r.id, ())) for r in runs]


# -- experiments -----------------------------------------------------------------------------


@router.get("/experiments/get-by-name", openapi_extra=VIEWER)
def get_experiment_by_name(
    ws: WS, experiment_name: Annotated[str, Query(max_length=250)]
) -> Response:
    found = ws.metadata.runs.find_experiment(ws.project.id, experiment_name)
    if found is None:
        raise NotFoundError(f"Could not find experiment with name '{experiment_name}'")
    return _experiment_answer(ws, found)


@router.get("/experiments/get", openapi_extra=VIEWER)
def get_experiment(ws: WS, experiment_id: Annotated[str, Query(max_length=100)]) -> Response:
    return _experiment_answer(ws, experiment_of(ws, experiment_id))


class NewExperiment(Body):
    name: str = Field(pattern=_NAME)
    artifact_location: str | None = Field(None, max_length=2000)
    tags: list[KeyValue] = Field(default_factory=list, max_length=100)


@router.post("/experiments/create", openapi_extra=EDITOR)
def create_experiment(ws: WS, body: NewExperiment) -> Response:
    if body.artifact_location:
        raise ApiError(
            400,
            "bad_request",
            "artifact_location is not accepted: the server decides where artifacts "
            "are stored. Leave it out.",
        )
    found = ws.metadata.runs.find_experiment(ws.project.id, body.name)
    if found is not None:
        state = " in deleted state (restore it, or choose another name)" if found.deleted else ""
        raise ConflictError(f"Experiment '{body.name}' already exists{state}.")
    created = ws.metadata.runs.ensure_experiment(ws.project.id, body.name, ws.user)
    tags = {t.key: t.value for t in body.tags}
    ws.metadata.runs.set_experiment_tags(created.id, tags, by=ws.user)
    return ok({"experiment_id": created.id})


class ExperimentSearch(Body):
    max_results: int = Field(1000, ge=1, le=50_000)
    filter: str | None = Field(None, max_length=1000)
    view_type: str | int | None = None
    order_by: list[str] = Field(default_factory=list, max_length=10)
    page_token: str | None = Field(None, max_length=200)


_EXPERIMENT_FIELDS = ("name", "experiment_id", "creation_time", "last_update_time")


@router.post("/experiments/search", openapi_extra=VIEWER)
def search_experiments(ws: WS, body: ExperimentSearch) -> Response:
    """The project's experiments (``view_type``), filtered by name or tags, ordered, paged."""
    found = ws.metadata.runs.list_experiments(ws.project.id, view=conv.view_type(body.view_type))
    tags = ws.metadata.runs.experiment_tags([e.id for e in found])
    records = [
        {
            "experiment": e,
            "name": e.name,
            "experiment_id": e.id,
            "creation_time": e.created_at,
            "last_update_time": e.deleted_at or e.created_at,
            "tags": tags.get(e.id, {}),
        }
        for e in found
    ]
    keep = conv.record_filter(body.filter, ("name", "experiment_id"))
    ordered = conv.sort_records([r for r in records if keep(r)], body.order_by, _EXPERIMENT_FIELDS)
    start = conv.from_page_token(body.page_token)
    page = ordered[start : start + body.max_results]
    answer: dict[str, Any] = {
        "experiments": [conv.experiment_json(r["experiment"], r["tags"]) for r in page]
    }
    if start + len(page) < len(ordered):
        answer["next_page_token"] = conv.page_token(start + len(page))
    return ok(answer)


# -- runs ------------------------------------------------------------------------------------


class NewRun(Body):
    experiment_id: str = Field(conv.DEFAULT_ID, max_length=100)
    run_name: str | None = Field(None, max_length=200)
    tags: list[KeyValue] = Field(default_factory=list, max_length=1000)


@router.post("/runs/create", openapi_extra=EDITOR)
def create_run(ws: WS, body: NewRun) -> Response:
    experiment = active_experiment(ws, body.experiment_id)
    tags = {t.key: t.value for t in body.tags}
    name = tags.pop(conv.RUN_NAME_TAG, None)  # kept as the run's name, not as a tag
    run = create_remote_run(ws, experiment.id, name=body.run_name or name or None, tags=tags)
    return ok({"run": conv.run_json(run)})


@router.get("/runs/get", openapi_extra=VIEWER)
def get_run(ws: WS, run_id: _RunId | None = None, run_uuid: _RunId | None = None) -> Response:
    run = project_run(ws, _query_run_id(run_id, run_uuid))
    return ok({"run": _runs_json(ws, [run])[0]})


class RunUpdate(RunRef):
    status: str | None = Field(None, max_length=20)
    end_time: float | None = None
    run_name: str | None = Field(None, max_length=200)


@router.post("/runs/update", openapi_extra=EDITOR)
def update_run(ws: WS, body: RunUpdate) -> Response:
    """End a run (``status`` FINISHED, FAILED or KILLED) and/or rename it (``run_name``)."""
    run = active_run(ws, body.id)
    if body.run_name:
        ws.metadata.runs.rename_run(run.id, body.run_name, by=ws.user)
    if body.status is not None:
        status = conv.mlflow_status(body.status)
        if status.is_terminal:
            ws.metadata.runs.end_run(run.id, status)
        else:
            ws.metadata.runs.heartbeat([run.id])
    return ok({"run_info": conv.run_info(project_run(ws, run.id))})


class RunSearch(Body):
    experiment_ids: list[str] = Field(default_factory=list, max_length=100)
    filter: str | None = Field(None, max_length=4000)
    run_view_type: str | int | None = None
    max_results: int = Field(1000, ge=1, le=50_000)
    order_by: list[str] = Field(default_factory=list, max_length=20)
    page_token: str | None = Field(None, max_length=200)


@router.post("/runs/search", openapi_extra=VIEWER)
def search_runs(ws: WS, body: RunSearch) -> Response:
    ids = [experiment_of(ws, e).id for e in body.experiment_ids]
    offset = conv.from_page_token(body.page_token)
    view = conv.view_type(body.run_view_type)
    runs = (
        ws.metadata.runs.search(
            ids,
            conv.translate_filter(body.filter),
            conv.translate_order(body.order_by),
            body.max_results,
            offset,
            view=view,
        )
        if ids
        else []
    )
    answer: dict[str, Any] = {"runs": _runs_json(ws, runs)}
    if len(runs) == body.max_results:
        answer["next_page_token"] = conv.page_token(offset + len(runs))
    return ok(answer)


class LogMetric(MetricIn, RunRef):
    pass


@router.post("/runs/log-metric", openapi_extra=EDITOR)
def log_metric(ws: WS, body: LogMetric) -> Response:
    log_to_run(ws, active_run(ws, body.id), metrics=[_point(body)])
    return ok({})


class LogParam(KeyValue, RunRef):
    pass


@router.post("/runs/log-parameter", openapi_extra=EDITOR)
def log_parameter(ws: WS, body: LogParam) -> Response:
    log_to_run(ws, active_run(ws, body.id), params={body.key: body.value})
    return ok({})


def _log_tags(ws: Workspace, run: Run, tags: dict[str, str], **logged: Any) -> None:
    """Tags (with ``logged`` params and metrics), where ``mlflow.runName`` renames the run
    instead of being stored: once the rest is written, which is refused as a whole."""
    name = tags.pop(conv.RUN_NAME_TAG, None)
    if tags or any(logged.values()):
        log_to_run(ws, run, tags=tags, **logged)
    if name:
        ws.metadata.runs.rename_run(run.id, name, by=ws.user)


@router.post("/runs/set-tag", openapi_extra=EDITOR)
def set_tag(ws: WS, body: LogParam) -> Response:
    _log_tags(ws, active_run(ws, body.id), {body.key: body.value})
    return ok({})


class LogBatch(Body):
    run_id: str = Field(max_length=100)
    metrics: list[MetricIn] = Field(default_factory=list, max_length=1000)
    params: list[KeyValue] = Field(default_factory=list, max_length=100)
    tags: list[KeyValue] = Field(default_factory=list, max_length=100)


@router.post("/runs/log-batch", openapi_extra=EDITOR)
def log_batch(ws: WS, body: LogBatch) -> Response:
    """At most 1000 metrics, 100 params and 100 tags per call, as MLflow's own limits."""
    _log_tags(
        ws,
        active_run(ws, body.run_id),
        {t.key: t.value for t in body.tags},
        params={p.key: p.value for p in body.params},
        metrics=[_point(m) for m in body.metrics],
    )
    return ok({})


@router.get("/metrics/get-history", openapi_extra=VIEWER)
def get_metric_history(
    ws: WS,
    metric_key: Annotated[str, Query(max_length=250)],
    run_id: _RunId | None = None,
    run_uuid: _RunId | None = None,
    max_results: Annotated[int, Query(ge=1, le=100_000)] = 25_000,
    page_token: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    run = project_run(ws, _query_run_id(run_id, run_uuid))
    history = ws.metadata.runs.metric_history(run.id, metric_key)
    start = conv.from_page_token(page_token)
    end = min(start + max_results, len(history))
    metrics = [
        {
            "key": metric_key,
            "value": conv.metric_value(history.values[i]),
            "timestamp": int(history.timestamps[i] * 1000),
            "step": int(history.steps[i]),
        }
        for i in range(start, end)
    ]
    answer: dict[str, Any] = {"metrics": metrics}
    if end < len(history):
        answer["next_page_token"] = conv.page_token(end)
    return ok(answer)


router.include_router(lifecycle_router)
router.include_router(registry_router)
