"""The data catalog: datasets, versions, schema, profile and quality JSON, lineage, the data
itself, and new versions uploaded as Parquet or CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

import meguri.data as md
from meguri.errors import DataError
from meguri.server._access import Access, access
from meguri.server._deps import WS, ok
from meguri.server._errors import ApiError
from meguri.server._upload import spool_body
from meguri.store import Workspace
from meguri.store.metadata import DatasetVersion

router = APIRouter(prefix="/api/v1/projects/{project}/datasets", tags=["datasets"])
VIEWER = access(Access.VIEWER)


def _summary(v: DatasetVersion) -> dict[str, Any]:
    return {
        "id": v.id,
        "name": v.name,
        "version": v.version,
        "ref": v.ref,
        "rows": v.row_count,
        "columns": len(v.schema),
        "bytes": v.byte_size,
        "content_hash": v.content_hash,
        "operation": v.operation,
        "source_uri": v.source_uri,
        "parents": list(v.parents),
        "has_profile": v.profile_digest is not None,
        "has_quality": v.quality_digest is not None,
        "created_at": v.created_at,
        "created_by": v.created_by,
    }


def _version(ws: Workspace, name: str, version: str) -> DatasetVersion:
    ref = version if version.startswith("dsv-") else f"{name}@{version}"
    found = md.get_version(ref, workspace=ws)
    if found.name != name:
        raise ApiError(404, "not_found", f"Version {version!r} is not one of dataset {name!r}.")
    return found


@router.get("", openapi_extra=VIEWER)
def list_datasets(
    ws: WS,
    text: Annotated[str | None, Query(max_length=200)] = None,
    column: Annotated[str | None, Query(max_length=200)] = None,
    tag: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Each dataset with its latest version, narrowed by name/description text, a column name or
    a tag (``key`` or ``key=value``)."""
    latest = {v.name: v for v in md.search(text, column=column, tag=tag, workspace=ws)}
    found = [
        {
            "name": d.name,
            "description": d.description,
            "tags": d.tags,
            "created_at": d.created_at,
            "created_by": d.created_by,
            "latest": _summary(latest[d.name]),
        }
        for d in md.list_datasets(workspace=ws)
        if d.name in latest
    ]
    return ok({"datasets": found})


@router.get("/{name}", openapi_extra=VIEWER)
def show_dataset(ws: WS, name: str) -> Response:
    """A dataset and all of its versions, oldest first."""
    dataset = ws.metadata.datasets.get(ws.project.id, name)
    versions = md.history(name, workspace=ws)
    return ok(
        {
            "name": dataset.name,
            "description": dataset.description,
            "tags": dataset.tags,
            "versions": [_summary(v) for v in versions],
        }
    )


@router.get("/{name}/versions/{version}", openapi_extra=VIEWER)
def show_version(ws: WS, name: str, version: str) -> Response:
    """One version with its schema, read options and lineage record."""
    v = _version(ws, name, version)
    return ok(
        {
            **_summary(v),
            "schema": v.schema,
            "format": v.format,
            "read_options": v.read_options,
            "lineage": v.lineage,
        }
    )


@router.get("/{name}/versions/{version}/schema", openapi_extra=VIEWER)
def version_schema(ws: WS, name: str, version: str) -> Response:
    """Column name -> Polars type, in column order."""
    v = _version(ws, name, version)
    return ok({"ref": v.ref, "columns": [{"name": c, "type": t} for c, t in v.schema.items()]})


def _attachment(ws: Workspace, name: str, version: str, kind: str) -> Response:
    v = _version(ws, name, version)
    data = md.attachment(v, "profile" if kind == "profile" else "quality", workspace=ws)
    if data is None:
        raise ApiError(
            404,
            "not_found",
            f"No {kind} is stored for {v.ref}; compute it with `meguri data {kind}`.",
        )
    return Response(data, media_type="application/json")


@router.get("/{name}/versions/{version}/profile", openapi_extra=VIEWER)
def version_profile(ws: WS, name: str, version: str) -> Response:
    """The stored profile (JSON): per-column statistics and histograms."""
    return _attachment(ws, name, version, "profile")


@router.get("/{name}/versions/{version}/quality", openapi_extra=VIEWER)
def version_quality(ws: WS, name: str, version: str) -> Response:
    """The stored quality report (JSON): each check, its outcome and the rows it flagged."""
    return _attachment(ws, name, version, "quality")


@router.get("/{name}/versions/{version}/lineage", openapi_extra=VIEWER)
def version_lineage(ws: WS, name: str, version: str) -> Response:
    """The version and every version it derives from, as nodes and (parent, child) edges."""
    graph = md.lineage(_version(ws, name, version), workspace=ws)
    return ok(
        {
            "root": graph.root.id,
            "nodes": [_summary(v) for v in graph.nodes.values()],
            "edges": [{"parent": p, "child": c} for p, c in graph.edges],
        }
    )


@router.get("/{name}/versions/{version}/rows", openapi_extra=VIEWER)
def version_rows(
    ws: WS,
    name: str,
    version: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """A page of rows as JSON records (a preview; download the Parquet for all of them)."""
    v = _version(ws, name, version)
    frame = md.read(v, workspace=ws).slice(offset, limit).collect()
    return ok({"ref": v.ref, "total": v.row_count, "offset": offset, "rows": frame.to_dicts()})


@router.get("/{name}/versions/{version}/data", openapi_extra=VIEWER)
def version_data(ws: WS, name: str, version: str) -> Response:
    """The version's data as the stored Parquet file (sha256-verified on read)."""
    v = _version(ws, name, version)
    return Response(
        ws.artifacts.get_bytes(v.data_digest),
        media_type="application/vnd.apache.parquet",
        headers={"Content-Disposition": f'attachment; filename="{v.id}.parquet"'},
    )


@router.get("/{name}/schema-diff", openapi_extra=VIEWER)
def diff_schemas(
    ws: WS,
    name: str,
    a: Annotated[str, Query(max_length=50)],
    b: Annotated[str, Query(max_length=50)],
) -> Response:
    """Columns added, removed and retyped from version ``a`` to version ``b``."""
    diff = md.schema_diff(_version(ws, name, a), _version(ws, name, b), workspace=ws)
    return ok(
        {
            "a": diff.old,
            "b": diff.new,
            "added": diff.added,
            "removed": diff.removed,
            "changed": {c: {"from": o, "to": n} for c, (o, n) in diff.changed.items()},
            "summary": diff.summary(),
        }
    )


@router.post("/{name}/versions", openapi_extra=access(Access.EDITOR), status_code=201)
async def upload_version(request: Request, ws: WS, name: str) -> Response:
    """Store the request body (``Content-Type: application/vnd.apache.parquet`` or
    ``text/csv``) as a new version of ``name`` (the same rows as the latest: that version)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/vnd.apache.parquet", "application/x-parquet", "text/csv"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send the table as application/vnd.apache.parquet or text/csv.",
        )
    path = await spool_body(request)
    version = await run_in_threadpool(_store_upload, ws, name, path, kind == "text/csv")
    return ok(_summary(version), 201)


def _store_upload(ws: Workspace, name: str, path: Path, csv: bool) -> DatasetVersion:
    """Read the spooled upload (then delete it) and store it as a version of ``name``."""
    import polars as pl

    try:
        frame = pl.read_csv(path) if csv else pl.read_parquet(path)
        size = path.stat().st_size
    except Exception as exc:  # polars and arrow raise many kinds for a bad file
        kind = "CSV" if csv else "Parquet"
        raise DataError(f"Cannot read the uploaded {kind}: {str(exc)[:200]}") from None
    finally:
        path.unlink(missing_ok=True)
    lineage = {"uploaded_bytes": size, "format": "csv" if csv else "parquet"}
    return md.save_version(name, frame, operation="upload", lineage=lineage, workspace=ws)
