"""Experiments: the list, the runs table of one (see :mod:`meguri.studio._runs_table`), a
run with its metric charts and plots, and the comparison of several runs side by side."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from meguri.errors import ArtifactError, DataError, NotFoundError
from meguri.store import Workspace
from meguri.store.metadata import Experiment, Run
from meguri.studio._access import VIEWER
from meguri.studio._figures import bar_figure, lines_figure
from meguri.studio._render import Renderer
from meguri.studio._runs_table import PAGE_SIZES, RunsQuery, attribute_cells, runs_page

__all__ = ["register"]

#: Metric charts per run page, plots (stored Plotly figures) per run page, runs per comparison.
MAX_METRIC_CHARTS, MAX_PLOTS, MAX_COMPARED = 12, 8, 10
_FIXED = (("name", "name"), ("status", "status"), ("created", "created_at"),
          ("user", "created_by"), ("duration", None))  # fmt: skip


def register(router: APIRouter, renderer: Renderer) -> None:
    @router.get(
        "/experiments", name="studio_experiments", openapi_extra=VIEWER, response_class=HTMLResponse
    )
    def experiments(request: Request) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        found = ws.metadata.runs.list_experiments(ws.project.id)
        counts = {e.id: ws.metadata.runs.count([e.id]) for e in found}
        context = {"title": "Experiments", "section": "experiments"}
        return renderer.page(
            request, "experiments.html", {**context, "experiments": found, "counts": counts}
        )

    @router.get(
        "/experiments/{experiment_id}",
        name="studio_runs",
        openapi_extra=VIEWER,
        response_class=HTMLResponse,
    )
    def runs(
        request: Request,
        experiment_id: str,
        q: str | None = None,
        sort: str | None = None,
        cols: Annotated[list[str] | None, Query()] = None,
        page: Annotated[int, Query(ge=1, le=10_000_000)] = 1,
        size: int = 50,
        after: str | None = None,
    ) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        experiment = _experiment(ws, experiment_id)
        query = RunsQuery.of(q, sort, cols or [], page, size, after)
        context = {"title": f"Runs · {experiment.name}", "section": "experiments",
                   "sizes": PAGE_SIZES, "fixed": _FIXED, "cells": attribute_cells}  # fmt: skip
        table = runs_page(ws, experiment, query)
        status = 400 if table.error else 200
        return renderer.page(request, "runs.html", {**context, "table": table}, status_code=status)

    @router.get(
        "/runs/{run_id}", name="studio_run", openapi_extra=VIEWER, response_class=HTMLResponse
    )
    def run(request: Request, run_id: str) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        return renderer.page(request, "run.html", run_context(ws, run_id))

    @router.get(
        "/compare", name="studio_compare", openapi_extra=VIEWER, response_class=HTMLResponse
    )
    def compare(
        request: Request, runs: Annotated[list[str] | None, Query()] = None
    ) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        return renderer.page(request, "compare.html", compare_context(ws, runs or []))


def _experiment(ws: Workspace, experiment_id: str) -> Experiment:
    for experiment in ws.metadata.runs.list_experiments(ws.project.id):
        if experiment.id == experiment_id:
            return experiment
    raise NotFoundError(f"No experiment {experiment_id!r} in this project; see /experiments.")


def _run_of_project(ws: Workspace, run_id: str) -> Run:
    run = ws.metadata.runs.get_run(run_id)
    _experiment(ws, run.experiment_id)  # a run of another project is not shown here
    return run


# -- one run -----------------------------------------------------------------------------------


def run_context(ws: Workspace, run_id: str) -> dict[str, Any]:
    repo = ws.metadata.runs
    run = _run_of_project(ws, run_id)
    experiment = _experiment(ws, run.experiment_id)
    children = repo.search([run.experiment_id], filter=f"parent_run_id = '{run.id}'")
    artifacts = repo.list_artifacts(run.id)
    return {
        "title": f"Run · {run.name}",
        "section": "experiments",
        "run": run,
        "experiment": experiment,
        "cells": attribute_cells(run),
        "children": children,
        "artifacts": artifacts,
        "models": ws.metadata.models.versions_of_run(run.id),
        "inputs": _inputs(ws, run),
        "charts": _metric_charts(ws, run),
        "plots": _plots(ws, {a.name: a.digest for a in artifacts}),
    }


def _inputs(ws: Workspace, run: Run) -> list[tuple[str, str, Any]]:
    """``(kind, ref, dataset version or None)`` for each input of the run."""
    ids = [ref for refs in run.inputs.values() for ref in refs]
    versions = ws.metadata.datasets.get_versions(ids) if ids else {}
    return [(kind, ref, versions.get(ref)) for kind, refs in run.inputs.items() for ref in refs]


def _metric_charts(ws: Workspace, run: Run) -> list[dict[str, Any]]:
    """One line chart per metric logged at several steps."""
    charts = []
    for key in sorted(run.metrics):
        history = ws.metadata.runs.metric_history(run.id, key)
        if len(history) > 1:
            series = [(key, history.steps.tolist(), history.values.tolist())]
            charts.append(lines_figure(key, series, y_title=key))
        if len(charts) >= MAX_METRIC_CHARTS:
            break
    return charts


def _plots(ws: Workspace, digests: dict[str, str]) -> list[dict[str, Any]]:
    """The run's stored Plotly figures (``plots/*.plotly.json``), readable ones only."""
    figures = []
    for name in sorted(n for n in digests if n.startswith("plots/") and n.endswith(".json")):
        try:
            figure = orjson.loads(ws.artifacts.get_bytes(digests[name]))
        except (orjson.JSONDecodeError, ArtifactError):
            continue
        if isinstance(figure, dict) and isinstance(figure.get("data"), list):
            stored = figure.get("layout")
            layout: dict[str, Any] = stored if isinstance(stored, dict) else {}
            # Its own height (a tall importance chart), else the Studio's; the box follows.
            figures.append({"data": figure["data"], "layout": {"height": 360, **layout}})
        if len(figures) >= MAX_PLOTS:
            break
    return figures


# -- comparison --------------------------------------------------------------------------------


def compare_context(ws: Workspace, run_ids: list[str]) -> dict[str, Any]:
    ids = list(dict.fromkeys(i.strip() for i in run_ids if i.strip()))
    if len(ids) < 2 or len(ids) > MAX_COMPARED:
        raise DataError(
            f"Choose 2 to {MAX_COMPARED} runs to compare (got {len(ids)}): tick them in the "
            "runs table and press Compare."
        )
    runs = [_run_of_project(ws, i) for i in ids]
    metrics = sorted({k for r in runs for k in r.metrics})
    return {
        "title": "Compare runs",
        "section": "experiments",
        "runs": runs,
        "params": _rows(runs, "params"),
        "metrics": [(k, [r.metrics[k].value if k in r.metrics else None for r in runs])
                    for k in metrics],
        "tags": _rows(runs, "tags"),
        "cells": [attribute_cells(r) for r in runs],
        "figures": _compare_figures(ws, runs, metrics),
    }  # fmt: skip


def _rows(runs: list[Run], kind: str) -> list[tuple[str, list[str], bool]]:
    """``(key, value per run, whether they differ)`` for each param or tag key."""
    maps: list[dict[str, str]] = [getattr(r, kind) for r in runs]
    keys = sorted({k for m in maps for k in m})
    rows = [(k, [m.get(k, "") for m in maps]) for k in keys]
    return [(k, values, len(set(values)) > 1) for k, values in rows]


def _compare_figures(ws: Workspace, runs: list[Run], metrics: list[str]) -> list[dict[str, Any]]:
    shared = [k for k in metrics if all(k in r.metrics for r in runs)][:20]
    if not shared:
        return []
    labels = _labels(runs)
    values = {
        label: [r.metrics[k].value for k in shared] for label, r in zip(labels, runs, strict=True)
    }
    figures = [bar_figure("Latest metric values", shared, values)]
    for key in shared:
        histories = [ws.metadata.runs.metric_history(r.id, key) for r in runs]
        if any(len(h) > 1 for h in histories):
            series = [
                (label, h.steps.tolist(), h.values.tolist())
                for label, h in zip(labels, histories, strict=True)
            ]
            figures.append(lines_figure(key, series, y_title=key))
        if len(figures) > MAX_METRIC_CHARTS:
            break
    return figures


def _labels(runs: list[Run]) -> list[str]:
    """Each run's name, with its id where names repeat."""
    names = [r.name for r in runs]
    return [n if names.count(n) == 1 else f"{n} ({r.id})" for n, r in zip(names, runs, strict=True)]
