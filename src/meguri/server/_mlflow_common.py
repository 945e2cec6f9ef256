"""What the MLflow routes share: request bodies, access rules, and how a run or experiment ID
from the client is found within the caller's project.

MLflow's routes reach deleted runs and experiments too (a client reads, searches with
``DELETED_ONLY`` and restores them), but never write to them: a write to a deleted run is
refused as MLflow refuses it, naming the fix (restore it first).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from meguri.server._access import Access, access
from meguri.server._errors import ApiError
from meguri.server._mlflow_convert import DEFAULT_EXPERIMENT, DEFAULT_ID
from meguri.server._runs_shared import experiment_by_id, project_run
from meguri.store import Workspace
from meguri.store.metadata import Experiment, Run

__all__ = [
    "ADMIN",
    "EDITOR",
    "VIEWER",
    "Body",
    "KeyValue",
    "RunRef",
    "active_experiment",
    "active_run",
    "experiment_of",
]

VIEWER = access(Access.VIEWER)
EDITOR = access(Access.EDITOR)
ADMIN = access(Access.ADMIN)


class Body(BaseModel):
    """A request body: fields the subset does not use are ignored, as MLflow's server does."""

    model_config = ConfigDict(extra="ignore")


class KeyValue(Body):
    key: str = Field(max_length=250)
    value: str = Field("", max_length=8000)


class RunRef(Body):
    """A body naming a run, by ``run_id`` or (older clients) ``run_uuid``."""

    run_id: str | None = Field(None, max_length=100)
    run_uuid: str | None = Field(None, max_length=100)

    @property
    def id(self) -> str:
        found = self.run_id or self.run_uuid
        if not found:
            raise ApiError(400, "bad_request", "run_id is required.")
        return found


def experiment_of(ws: Workspace, experiment_id: str) -> Experiment:
    """The project's experiment ``experiment_id``, deleted or not (``"0"``: its ``Default``
    experiment, created on first use); 404 for an experiment of another project."""
    if experiment_id == DEFAULT_ID:
        return ws.metadata.runs.ensure_experiment(ws.project.id, DEFAULT_EXPERIMENT, ws.user)
    return experiment_by_id(ws, experiment_id)


def active_experiment(ws: Workspace, experiment_id: str) -> Experiment:
    """:func:`experiment_of`, refused while the experiment is deleted."""
    found = experiment_of(ws, experiment_id)
    if found.deleted:
        raise ApiError(
            400,
            "bad_request",
            f"The experiment {found.id} ({found.name!r}) must be in the 'active' state; it is "
            "deleted. Restore it first (MlflowClient().restore_experiment).",
        )
    return found


def active_run(ws: Workspace, run_id: str) -> Run:
    """:func:`~meguri.server._runs_shared.project_run` (deleted or not), refused while the run
    is deleted (MLflow writes only to active runs)."""
    run = project_run(ws, run_id)
    if run.deleted:
        raise ApiError(
            400,
            "bad_request",
            f"The run {run.id} must be in the 'active' state; it is deleted. Restore it "
            "first (MlflowClient().restore_run).",
        )
    return run
