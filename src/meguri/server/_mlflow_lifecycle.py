"""MLflow routes that change a run or experiment beyond logging: rename, untag, delete,
restore; and what a run used (dataset inputs) or produced (logged-model metadata).

=============================================  =============================================
``POST runs/delete``, ``runs/restore``         hide a run from searches / bring it back
``POST runs/delete-tag``                       remove one tag (404 when it has none)
``POST runs/log-inputs``                       dataset inputs, shown in ``runs/get``
``POST runs/log-model``                        MLflow model metadata, as MLflow keeps it
``POST experiments/update``                    rename
``POST experiments/delete``, ``restore``       an experiment with its runs
``POST experiments/set-experiment-tag``,       experiment tags
``delete-experiment-tag``
``POST logged-models``, ``logged-models/search``  MLflow 3 logged models: none here
=============================================  =============================================

**Dataset inputs.** An MLflow dataset (name, digest, source, schema, profile and the input's
tags such as ``mlflow.data.context``) is kept as canonical JSON in the artifact store, under
its sha256, and recorded on the run as an input of kind ``mlflow_dataset`` (beside the
``dataset_version`` inputs meguri's own training records), with the reference
``<name>@<digest>#<sha256>``: readable where meguri lists a run's inputs, and naming the JSON.
Reading a page of runs fetches each distinct JSON once.

**Models.** meguri registers model packages in safe formats (ONNX, skops with an allowlist,
native booster text), never pickles. ``runs/log-model`` only records the metadata a client
sends (the ``MLmodel`` fields as JSON, parsed as JSON and nothing else) in the run's tag
``mlflow.log-model.history``, as MLflow's server does; MLflow 3's ``log_model`` first creates
a "logged model", which is refused here with the way to package and register a model instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson
from fastapi import APIRouter
from pydantic import Field
from starlette.responses import Response

from meguri.errors import NotFoundError, RegistryError
from meguri.server._deps import WS, ok
from meguri.server._errors import ApiError
from meguri.server._mlflow_common import (
    EDITOR,
    VIEWER,
    Body,
    RunRef,
    active_experiment,
    active_run,
    experiment_of,
)
from meguri.server._mlflow_convert import DEFAULT_EXPERIMENT, DEFAULT_ID, RUN_NAME_TAG
from meguri.server._runs_shared import log_to_run, project_run
from meguri.store import Workspace
from meguri.store.metadata import Run

__all__ = ["INPUT_KIND", "MODEL_HISTORY_TAG", "dataset_inputs", "router"]

router = APIRouter(tags=["mlflow"])

#: The kind of run input an MLflow dataset is recorded as.
INPUT_KIND = "mlflow_dataset"
#: The run tag MLflow keeps logged models' metadata in (a JSON list).
MODEL_HISTORY_TAG = "mlflow.log-model.history"
_MAX_HISTORY = 1 << 20
_LABEL = 200 - 65  # the reference column holds 200 characters: label, '#', sha256
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TAG_KEY = r"^[A-Za-z0-9_\-./ :]{1,250}$"
_NO_LOGGED_MODELS = (
    "MLflow logged models are not supported: meguri keeps models as packages in safe formats "
    "(ONNX, skops, native booster text), never pickles. Train with `meguri train` (or log the "
    "package files as run artifacts) and register the run with `meguri models register RUN "
    "--name NAME`; mlflow.log_artifact works for any other file."
)


# -- runs ------------------------------------------------------------------------------------


@router.post("/runs/delete", openapi_extra=EDITOR)
def delete_run(ws: WS, body: RunRef) -> Response:
    """Hide the run from searches (``run_view_type`` DELETED_ONLY or ALL still finds it)."""
    ws.metadata.runs.delete_run(project_run(ws, body.id).id, by=ws.user)
    return ok({})


@router.post("/runs/restore", openapi_extra=EDITOR)
def restore_run(ws: WS, body: RunRef) -> Response:
    ws.metadata.runs.restore_run(project_run(ws, body.id).id, by=ws.user)
    return ok({})


class TagKey(RunRef):
    key: str = Field(max_length=250)


@router.post("/runs/delete-tag", openapi_extra=EDITOR)
def delete_tag(ws: WS, body: TagKey) -> Response:
    run = active_run(ws, body.id)
    if body.key == RUN_NAME_TAG:
        raise ApiError(
            400,
            "bad_request",
            f"{RUN_NAME_TAG} is the run's name, which cannot be removed; rename the run.",
        )
    if not ws.metadata.runs.delete_tag(run.id, body.key, by=ws.user):
        raise NotFoundError(f"No tag with name: {body.key} in run with id {run.id}")
    return ok({})


class InputTag(Body):
    key: str = Field(min_length=1, max_length=255)
    value: str = Field(max_length=500)


class DatasetIn(Body):
    name: str = Field(min_length=1, max_length=500)
    digest: str = Field(min_length=1, max_length=64)
    source_type: str = Field("", max_length=100)
    source: str = Field("", max_length=65_535)
    schema_: str | None = Field(None, alias="schema", max_length=1 << 20)
    profile: str | None = Field(None, max_length=1 << 20)


class DatasetInputIn(Body):
    tags: list[InputTag] = Field(default_factory=list, max_length=100)
    dataset: DatasetIn


class LogInputs(RunRef):
    datasets: list[DatasetInputIn] = Field(default_factory=list, max_length=100)
    models: list[dict[str, Any]] = Field(default_factory=list, max_length=100)


@router.post("/runs/log-inputs", openapi_extra=EDITOR)
def log_inputs(ws: WS, body: LogInputs) -> Response:
    """Record the datasets a run used (see the module docstring)."""
    run = active_run(ws, body.id)
    if body.models:
        raise RegistryError(_NO_LOGGED_MODELS)
    refs = [_store_dataset(ws, d) for d in body.datasets]
    ws.metadata.runs.add_inputs(run.id, INPUT_KIND, refs)
    return ok({})


def _store_dataset(ws: Workspace, given: DatasetInputIn) -> str:
    record = {
        "dataset": given.dataset.model_dump(by_alias=True, exclude_none=True),
        "tags": [t.model_dump() for t in given.tags],
    }
    stored = ws.artifacts.put_bytes(orjson.dumps(record, option=orjson.OPT_SORT_KEYS))
    label = f"{given.dataset.name}@{given.dataset.digest}"[:_LABEL]
    return f"{label}#{stored.digest}"


def dataset_inputs(ws: Workspace, runs: Iterable[Run]) -> dict[str, list[dict[str, Any]]]:
    """The dataset inputs of each run (that has some) in MLflow's shape, each stored JSON
    read once however many runs share it."""
    refs = {r.id: r.inputs.get(INPUT_KIND, []) for r in runs}
    digests = {ref.rpartition("#")[2] for found in refs.values() for ref in found}
    records = {d: orjson.loads(ws.artifacts.get_bytes(d)) for d in digests if _SHA256.match(d)}
    return {
        run_id: [records[d] for d in (ref.rpartition("#")[2] for ref in found) if d in records]
        for run_id, found in refs.items()
        if found
    }


class LogModel(RunRef):
    model_json: str = Field(min_length=2, max_length=_MAX_HISTORY)


@router.post("/runs/log-model", openapi_extra=EDITOR)
def log_model(ws: WS, body: LogModel) -> Response:
    """Append the model's metadata (JSON only) to the run's ``mlflow.log-model.history``."""
    run = active_run(ws, body.id)
    model = _json_object(body.model_json, "model_json")
    history = _json_list(run.tags.get(MODEL_HISTORY_TAG))
    text = orjson.dumps([*history, model]).decode()
    if len(text) > _MAX_HISTORY:
        raise ApiError(400, "bad_request", f"{MODEL_HISTORY_TAG} would exceed 1 MiB.")
    log_to_run(ws, run, tags={MODEL_HISTORY_TAG: text})
    return ok({})


def _json_object(text: str, field: str) -> dict[str, Any]:
    try:
        found = orjson.loads(text)
    except orjson.JSONDecodeError:
        found = None
    if not isinstance(found, dict):
        raise ApiError(400, "bad_request", f"{field} must be a JSON object.")
    return found


def _json_list(text: str | None) -> list[Any]:
    try:
        found = orjson.loads(text) if text else []
    except orjson.JSONDecodeError:
        found = []
    return found if isinstance(found, list) else []


@router.post("/logged-models", openapi_extra=EDITOR)
def create_logged_model(ws: WS) -> Response:
    raise RegistryError(_NO_LOGGED_MODELS)


@router.post("/logged-models/search", openapi_extra=VIEWER)
def search_logged_models(ws: WS) -> Response:
    """No MLflow 3 "logged model" exists here (see the module docstring), so none is found;
    the client asks while listing a run's artifacts."""
    return ok({"models": []})


# -- experiments -----------------------------------------------------------------------------


class ExperimentRef(Body):
    experiment_id: str = Field(max_length=100)


class ExperimentRename(ExperimentRef):
    new_name: str = Field(pattern=r"^[A-Za-z0-9_\-./ :]{1,200}$")


@router.post("/experiments/update", openapi_extra=EDITOR)
def rename_experiment(ws: WS, body: ExperimentRename) -> Response:
    experiment = active_experiment(ws, body.experiment_id)
    ws.metadata.runs.rename_experiment(experiment.id, body.new_name, by=ws.user)
    return ok({})


@router.post("/experiments/delete", openapi_extra=EDITOR)
def delete_experiment(ws: WS, body: ExperimentRef) -> Response:
    """Delete the experiment and its runs (restorable); the default experiment stays."""
    experiment = experiment_of(ws, body.experiment_id)
    if body.experiment_id == DEFAULT_ID or experiment.name == DEFAULT_EXPERIMENT:
        raise ApiError(400, "bad_request", "The default experiment cannot be deleted.")
    ws.metadata.runs.delete_experiment(experiment.id, by=ws.user)
    return ok({})


@router.post("/experiments/restore", openapi_extra=EDITOR)
def restore_experiment(ws: WS, body: ExperimentRef) -> Response:
    """Restore the experiment and the runs deleted with it."""
    ws.metadata.runs.restore_experiment(experiment_of(ws, body.experiment_id).id, by=ws.user)
    return ok({})


class ExperimentTag(ExperimentRef):
    key: str = Field(pattern=_TAG_KEY)
    value: str = Field("", max_length=8000)


@router.post("/experiments/set-experiment-tag", openapi_extra=EDITOR)
def set_experiment_tag(ws: WS, body: ExperimentTag) -> Response:
    experiment = active_experiment(ws, body.experiment_id)
    ws.metadata.runs.set_experiment_tags(experiment.id, {body.key: body.value}, by=ws.user)
    return ok({})


class ExperimentTagKey(ExperimentRef):
    key: str = Field(max_length=250)


@router.post("/experiments/delete-experiment-tag", openapi_extra=EDITOR)
def delete_experiment_tag(ws: WS, body: ExperimentTagKey) -> Response:
    experiment = active_experiment(ws, body.experiment_id)
    if not ws.metadata.runs.delete_experiment_tag(experiment.id, body.key, by=ws.user):
        raise NotFoundError(f"No tag with name: {body.key} in experiment {experiment.id}")
    return ok({})
