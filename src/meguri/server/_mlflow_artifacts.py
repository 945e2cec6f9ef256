"""The ``mlflow-artifacts`` REST endpoints for the runs' ``artifact_uri``
(``mlflow-artifacts:/<experiment_id>/<run_id>/artifacts``), so that ``mlflow.log_artifact``,
``MlflowClient().list_artifacts`` and ``download_artifacts`` work against meguri:

===================================================  ====================================
``PUT  /api/2.0/mlflow-artifacts/artifacts/<path>``  upload one file (editor)
``GET  /api/2.0/mlflow-artifacts/artifacts/<path>``  download one file (viewer)
``GET  /api/2.0/mlflow-artifacts/artifacts?path=``   list one folder level (viewer)
===================================================  ====================================

``<path>`` is never a storage location: it names a run of the caller's project and a logical
artifact name inside it, checked like every artifact name (no ``..``, no absolute path, plain
characters); the bytes go to the content-addressed artifact store under their sha256. A
deleted run's artifacts stay readable; uploading to it is refused until it is restored.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from meguri.errors import NotFoundError
from meguri.server._access import Access, access
from meguri.server._deps import WS, ok
from meguri.server._mlflow_common import active_run
from meguri.server._runs_shared import artifact_bytes, artifact_name, project_run, store_artifact
from meguri.server._upload import spool_body
from meguri.store import Workspace
from meguri.store.metadata import Run

router = APIRouter(prefix="/api/2.0/mlflow-artifacts", tags=["mlflow"])


def _locate(ws: Workspace, path: str, *, writing: bool = False) -> tuple[Run, str]:
    """The run and the artifact name (possibly empty) that ``path`` names (``writing``: an
    active run; a deleted one is read only)."""
    parts = path.strip("/").split("/", 3)
    if len(parts) < 3 or parts[2] != "artifacts":
        raise NotFoundError(
            f"{path!r} is not an artifact path of this server: use the run's artifact_uri "
            "(<experiment_id>/<run_id>/artifacts/<name>)."
        )
    run = active_run(ws, parts[1]) if writing else project_run(ws, parts[1])
    if run.experiment_id != parts[0]:
        raise NotFoundError(f"Run {run.id} is not in experiment {parts[0]!r}.")
    return run, parts[3] if len(parts) == 4 else ""


@router.put("/artifacts/{path:path}", openapi_extra=access(Access.EDITOR))
async def upload(request: Request, ws: WS, path: str) -> Response:
    run, name = await run_in_threadpool(lambda: _locate(ws, path, writing=True))
    artifact_name(name)
    spooled = await spool_body(request)
    await run_in_threadpool(store_artifact, ws, run, name, spooled)
    return ok({})


@router.get("/artifacts/{path:path}", openapi_extra=access(Access.VIEWER))
def download(ws: WS, path: str) -> Response:
    run, name = _locate(ws, path)
    _ref, data = artifact_bytes(ws, run, name)
    return Response(
        data, media_type="application/octet-stream", headers={"X-Content-Type-Options": "nosniff"}
    )


@router.get("/artifacts", openapi_extra=access(Access.VIEWER))
def list_folder(ws: WS, path: Annotated[str, Query(max_length=1000)] = "") -> Response:
    """The files and folders directly inside ``path``, by base name (MLflow's listing)."""
    run, folder = _locate(ws, path)
    prefix = f"{folder.rstrip('/')}/" if folder else ""
    files: dict[str, dict[str, object]] = {}
    for ref in ws.metadata.runs.list_artifacts(run.id):
        if not ref.name.startswith(prefix):
            continue
        head, slash, _ = ref.name[len(prefix) :].partition("/")
        entry = (
            {"path": head, "is_dir": True}
            if slash
            else {"path": head, "is_dir": False, "file_size": ref.size}
        )
        files.setdefault(head, entry)
    return ok({"files": list(files.values())})
