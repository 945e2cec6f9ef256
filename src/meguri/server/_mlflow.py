"""The MLflow tracking subset, so that scripts using the real ``mlflow`` client log into meguri
unchanged (``mlflow.set_tracking_uri("http://host:port")``, ``MLFLOW_TRACKING_TOKEN`` as the
meguri API token):

=============================================  =============================================
``GET  experiments/get-by-name``, ``get``      an experiment of the project
``POST experiments/create``, ``search``        ``artifact_location`` is refused: meguri alone
                                               decides where bytes are stored
``POST runs/create``, ``update``, ``search``   runs (search: MLflow's filter syntax, paged)
``GET  runs/get``                              one run with its latest metrics, params, tags
``POST runs/log-metric``, ``log-parameter``,   written through the tracking SDK's checks
``log-batch``, ``set-tag``
``GET  metrics/get-history``                   every point of a metric, paged
=============================================  =============================================

All under ``/api/2.0/mlflow/`` for the server's default project, or under
``/projects/<name>/api/2.0/mlflow/`` (tracking URI ``http://host:port/projects/<name>``) for
another. The run's author is the signed-in user, whatever ``user_id`` the client sends.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from meguri.errors import ConflictError, NotFoundError, QuerySyntaxError
from meguri.server import _mlflow_convert as conv
from meguri.server._access import Access, access
from meguri.server._deps import WS, ok
from meguri.server._errors import ApiError
from meguri.server._runs_shared import create_remote_run, experiment_by_id, log_to_run, project_run
from meguri.store import Workspace
from meguri.store.metadata import Experiment

router = APIRouter(prefix="/api/2.0/mlflow", tags=["mlflow"])
VIEWER = access(Access.VIEWER)
EDITOR = access(Access.EDITOR)
_NAME = r"^[A-Za-z0-9_\-./ :]{1,250}$"
_RunId = Annotated[str, Query(min_length=1, max_length=100)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class KeyValue(_Body):
    key: str = Field(max_length=250)
    value: str = Field("", max_length=8000)


class MetricIn(_Body):
    key: str = Field(max_length=250)
    value: float
    timestamp: float | None = None
    step: int = 0


def _experiment(ws: Workspace, experiment_id: str) -> Experiment:
    if experiment_id == conv.DEFAULT_ID:
        return ws.metadata.runs.ensure_experiment(ws.project.id, conv.DEFAULT_EXPERIMENT, ws.user)
    return experiment_by_id(ws, experiment_id)


def _run_id(run_id: str | None, run_uuid: str | None) -> str:
    found = run_id or run_uuid
    if not found:
        raise ApiError(400, "bad_request", "run_id is required.")
    return found


def _point(m: MetricIn) -> tuple[str, float, int, float]:
    stamp = m.timestamp / 1000.0 if m.timestamp is not None else _now()
    return (m.key, m.value, m.step, stamp)


def _now() -> float:
    return time.time()


# -- experiments -----------------------------------------------------------------------------


@router.get("/experiments/get-by-name", openapi_extra=VIEWER)
def get_experiment_by_name(
    ws: WS, experiment_name: Annotated[str, Query(max_length=250)]
) -> Response:
    found = ws.metadata.runs.find_experiment(ws.project.id, experiment_name)
    if found is None:
        raise NotFoundError(f"Could not find experiment with name '{experiment_name}'")
    return ok({"experiment": conv.experiment_json(found)})


@router.get("/experiments/get", openapi_extra=VIEWER)
def get_experiment(ws: WS, experiment_id: Annotated[str, Query(max_length=100)]) -> Response:
    return ok({"experiment": conv.experiment_json(_experiment(ws, experiment_id))})


class NewExperiment(_Body):
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
    if ws.metadata.runs.find_experiment(ws.project.id, body.name) is not None:
        raise ConflictError(f"Experiment '{body.name}' already exists.")
    created = ws.metadata.runs.ensure_experiment(ws.project.id, body.name, ws.user)
    return ok({"experiment_id": created.id})


class ExperimentSearch(_Body):
    max_results: int = Field(1000, ge=1, le=50_000)
    filter: str | None = Field(None, max_length=1000)


@router.post("/experiments/search", openapi_extra=VIEWER)
def search_experiments(ws: WS, body: ExperimentSearch) -> Response:
    """Every experiment of the project (the filter is not supported and refused)."""
    if body.filter:
        raise QuerySyntaxError("Filtering experiments is not supported; list them all.")
    found = ws.metadata.runs.list_experiments(ws.project.id)[: body.max_results]
    return ok({"experiments": [conv.experiment_json(e) for e in found]})


# -- runs ------------------------------------------------------------------------------------


class NewRun(_Body):
    experiment_id: str = Field(conv.DEFAULT_ID, max_length=100)
    run_name: str | None = Field(None, max_length=250)
    tags: list[KeyValue] = Field(default_factory=list, max_length=1000)


@router.post("/runs/create", openapi_extra=EDITOR)
def create_run(ws: WS, body: NewRun) -> Response:
    experiment = _experiment(ws, body.experiment_id)
    tags = {t.key: t.value for t in body.tags}
    name = body.run_name or tags.get("mlflow.runName") or None
    run = create_remote_run(ws, experiment.id, name=name, tags=tags)
    return ok({"run": conv.run_json(run)})


@router.get("/runs/get", openapi_extra=VIEWER)
def get_run(ws: WS, run_id: _RunId | None = None, run_uuid: _RunId | None = None) -> Response:
    return ok({"run": conv.run_json(project_run(ws, _run_id(run_id, run_uuid)))})


class RunUpdate(_Body):
    run_id: str | None = Field(None, max_length=100)
    run_uuid: str | None = Field(None, max_length=100)
    status: str | None = Field(None, max_length=20)
    end_time: float | None = None
    run_name: str | None = Field(None, max_length=250)


@router.post("/runs/update", openapi_extra=EDITOR)
def update_run(ws: WS, body: RunUpdate) -> Response:
    """End a run (``status`` FINISHED, FAILED or KILLED); renaming is not supported."""
    run = project_run(ws, _run_id(body.run_id, body.run_uuid))
    if body.status is not None:
        status = conv.mlflow_status(body.status)
        if status.is_terminal:
            ws.metadata.runs.end_run(run.id, status)
        else:
            ws.metadata.runs.heartbeat([run.id])
    return ok({"run_info": conv.run_info(project_run(ws, run.id))})


class RunSearch(_Body):
    experiment_ids: list[str] = Field(default_factory=list, max_length=100)
    filter: str | None = Field(None, max_length=4000)
    max_results: int = Field(1000, ge=1, le=50_000)
    order_by: list[str] = Field(default_factory=list, max_length=20)
    page_token: str | None = Field(None, max_length=200)


@router.post("/runs/search", openapi_extra=VIEWER)
def search_runs(ws: WS, body: RunSearch) -> Response:
    ids = [_experiment(ws, e).id for e in body.experiment_ids]
    offset = conv.from_page_token(body.page_token)
    runs = (
        ws.metadata.runs.search(
            ids,
            conv.translate_filter(body.filter),
            conv.translate_order(body.order_by),
            body.max_results,
            offset,
        )
        if ids
        else []
    )
    answer: dict[str, Any] = {"runs": [conv.run_json(r) for r in runs]}
    if len(runs) == body.max_results:
        answer["next_page_token"] = conv.page_token(offset + len(runs))
    return ok(answer)


class LogMetric(MetricIn):
    run_id: str | None = Field(None, max_length=100)
    run_uuid: str | None = Field(None, max_length=100)


@router.post("/runs/log-metric", openapi_extra=EDITOR)
def log_metric(ws: WS, body: LogMetric) -> Response:
    run = project_run(ws, _run_id(body.run_id, body.run_uuid))
    log_to_run(ws, run, metrics=[_point(body)])
    return ok({})


class LogParam(KeyValue):
    run_id: str | None = Field(None, max_length=100)
    run_uuid: str | None = Field(None, max_length=100)


@router.post("/runs/log-parameter", openapi_extra=EDITOR)
def log_parameter(ws: WS, body: LogParam) -> Response:
    run = project_run(ws, _run_id(body.run_id, body.run_uuid))
    log_to_run(ws, run, params={body.key: body.value})
    return ok({})


@router.post("/runs/set-tag", openapi_extra=EDITOR)
def set_tag(ws: WS, body: LogParam) -> Response:
    run = project_run(ws, _run_id(body.run_id, body.run_uuid))
    log_to_run(ws, run, tags={body.key: body.value})
    return ok({})


class LogBatch(_Body):
    run_id: str = Field(max_length=100)
    metrics: list[MetricIn] = Field(default_factory=list, max_length=1000)
    params: list[KeyValue] = Field(default_factory=list, max_length=100)
    tags: list[KeyValue] = Field(default_factory=list, max_length=100)


@router.post("/runs/log-batch", openapi_extra=EDITOR)
def log_batch(ws: WS, body: LogBatch) -> Response:
    """At most 1000 metrics, 100 params and 100 tags per call, as MLflow's own limits."""
    run = project_run(ws, body.run_id)
    log_to_run(
        ws,
        run,
        params={p.key: p.value for p in body.params},
        tags={t.key: t.value for t in body.tags},
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
    run = project_run(ws, _run_id(run_id, run_uuid))
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


@router.post("/logged-models/search", openapi_extra=VIEWER)
def search_logged_models(ws: WS) -> Response:
    """MLflow 3 "logged models" have no counterpart here (meguri registers model packages
    through its registry), so none is found; the client asks while listing a run's
    artifacts."""
    return ok({"models": []})
