"""The data catalog: datasets, their versions, schema, stored profile and quality report, and
the lineage graph of a version."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from meguri.data import DatasetProfile, QualityReport
from meguri.errors import NotFoundError
from meguri.store import Workspace
from meguri.store.metadata import DatasetVersion
from meguri.studio._access import VIEWER
from meguri.studio._figures import correlation_figure, profile_figures
from meguri.studio._lineage import lineage_graph
from meguri.studio._render import Renderer

__all__ = ["register"]


def register(router: APIRouter, renderer: Renderer) -> None:
    @router.get("/data", name="studio_data", openapi_extra=VIEWER, response_class=HTMLResponse)
    def catalog(request: Request) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        datasets = ws.metadata.datasets.list(ws.project.id)
        latest = ws.metadata.datasets.latest_versions(ws.project.id)
        context = {"title": "Data", "section": "data", "datasets": datasets, "latest": latest}
        return renderer.page(request, "data.html", context)

    @router.get(
        "/data/{name}", name="studio_dataset", openapi_extra=VIEWER, response_class=HTMLResponse
    )
    def dataset(request: Request, name: str, version: int | None = None) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        return renderer.page(request, "dataset.html", dataset_context(ws, name, version))


def dataset_context(ws: Workspace, name: str, number: int | None) -> dict[str, Any]:
    repo = ws.metadata.datasets
    found = repo.get(ws.project.id, name)
    versions = repo.versions(ws.project.id, name)
    if not versions:
        raise NotFoundError(f"Dataset {name!r} has no versions yet.")
    current = _pick(versions, number, name)
    profile = _profile(ws, current)
    graph = lineage_graph(current, repo.ancestors(current.id), repo.children(current.id))
    return {
        "title": f"Data · {current.ref}",
        "section": "data",
        "dataset": found,
        "versions": versions[::-1],
        "current": current,
        "profile": profile,
        "columns": {c.name: c for c in profile.columns} if profile else {},
        "figures": profile_figures(profile) if profile else [],
        "heatmap": correlation_figure(profile) if profile else None,
        "quality": _quality(ws, current),
        "graph": graph,
        "names": {n.version.id: n.version.ref for n in graph.nodes},
    }


def _pick(versions: list[DatasetVersion], number: int | None, name: str) -> DatasetVersion:
    if number is None:
        return versions[-1]
    for version in versions:
        if version.version == number:
            return version
    raise NotFoundError(
        f"Dataset {name!r} has no version {number}; its versions are 1 to {versions[-1].version}."
    )


def _profile(ws: Workspace, version: DatasetVersion) -> DatasetProfile | None:
    if version.profile_digest is None:
        return None
    return DatasetProfile.from_json(ws.artifacts.get_bytes(version.profile_digest))


def _quality(ws: Workspace, version: DatasetVersion) -> QualityReport | None:
    if version.quality_digest is None:
        return None
    return QualityReport.from_json(ws.artifacts.get_bytes(version.quality_digest))
