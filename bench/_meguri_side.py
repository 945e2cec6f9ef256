"""The meguri half of the tracking benchmark: each function returns what it measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import meguri
from _common import (
    SEARCH_FILTER,
    SEARCH_ORDER,
    Point,
    SearchRun,
    timed,
)
from meguri.store.metadata import RunStatus

Workspace = Any  # meguri.Workspace, loaded lazily by the package


def open_workspace(root: Path) -> Workspace:
    return meguri.open_workspace(root, project="bench")


def stored_points(ws: Workspace, run_id: str) -> int:
    """How many metric points of ``run_id`` the store holds (a plain SQL count)."""
    with ws.metadata.db.read() as conn:
        query = sa.text("SELECT count(*) FROM metrics WHERE run_id = :run_id")
        return int(conn.execute(query, {"run_id": run_id}).scalar_one())


def _check_stored(ws: Workspace, run_id: str, expected: int) -> None:
    found = stored_points(ws, run_id)
    if found != expected:
        raise AssertionError(f"meguri run {run_id} stored {found} points, expected {expected}")


def log_metric_loop(ws: Workspace, n: int, *, durable: bool, experiment: str) -> dict[str, Any]:
    """``n`` calls of ``run.log_metric``; the timing includes ``run.end()`` (the final flush)."""
    run = meguri.start_run(experiment=experiment, workspace=ws, durable=durable)

    def loop() -> None:
        log = run.log_metric
        for i in range(n):
            log("loss", i * 1e-3, step=i)
        run.end()

    elapsed, _ = timed(loop)
    _check_stored(ws, run.id, n)
    return {"calls": n, "seconds": elapsed, "rate": n / elapsed, "run_id": run.id}


def log_batch_chunks(
    ws: Workspace, chunks: list[list[Point]], *, durable: bool, experiment: str
) -> dict[str, Any]:
    """``run.log_batch(chunk)`` for every chunk; the timing includes ``run.end()``."""
    run = meguri.start_run(experiment=experiment, workspace=ws, durable=durable)

    def loop() -> None:
        for chunk in chunks:
            run.log_batch(chunk)
        run.end()

    elapsed, _ = timed(loop)
    total = sum(len(c) for c in chunks)
    _check_stored(ws, run.id, total)
    return {"points": total, "seconds": elapsed, "rate": total / elapsed, "calls": len(chunks)}


# -- search -------------------------------------------------------------------------------------


def populate_search_sdk(ws: Workspace, population: list[SearchRun], experiment: str) -> float:
    """One SDK run per entry (params and two metrics), as a user's code would log them."""

    def fill() -> None:
        for item in population:
            with meguri.start_run(experiment=experiment, workspace=ws) as run:
                run.log_params({"lr": item.lr})
                run.log_metrics({"acc": item.acc, "loss": item.loss}, step=0)

    elapsed, _ = timed(fill)
    return elapsed


def populate_search_bulk(ws: Workspace, population: list[SearchRun], experiment: str) -> float:
    """Bulk set-up for large populations: the same rows the SDK writes (runs, params, metric
    history and latest metrics, finished), inserted with one ``executemany`` per table in one
    transaction through meguri's own schema. Only the set-up takes this path."""
    from meguri.store._ids import new_id
    from meguri.store.metadata._schema import latest_metrics, metrics, run_params, runs

    repo = ws.metadata.runs
    exp = repo.ensure_experiment(ws.project.id, experiment, ws.user)
    start = time.time()
    ids = [f"{new_id('run')}{i:06d}" for i in range(len(population))]
    run_rows = [_run_row(run_id, exp.id, ws.user, start + i * 1e-3) for i, run_id in enumerate(ids)]
    point_rows = [
        {"run_id": run_id, "key": key, "value": value, "step": 0, "timestamp": start}
        for run_id, item in zip(ids, population, strict=True)
        for key, value in (("acc", item.acc), ("loss", item.loss))
    ]
    param_rows = [
        {"run_id": run_id, "key": "lr", "value": item.lr}
        for run_id, item in zip(ids, population, strict=True)
    ]

    def insert() -> None:
        with ws.metadata.db.write() as conn:
            conn.execute(runs.insert(), run_rows)
            conn.execute(run_params.insert(), param_rows)
            conn.execute(metrics.insert(), point_rows)
            conn.execute(latest_metrics.insert(), point_rows)

    elapsed, _ = timed(insert)
    return elapsed


def _run_row(run_id: str, experiment_id: str, user: str, created: float) -> dict[str, Any]:
    return {
        "id": run_id,
        "experiment_id": experiment_id,
        "name": run_id,
        "status": RunStatus.FINISHED.value,
        "created_at": created,
        "created_by": user,
        "heartbeat_at": created,
        "ended_at": created + 1.0,
    }


def search_query(ws: Workspace, experiment: str, max_results: int) -> Callable[[], Any]:
    """The public ``meguri.search_runs`` with a metric filter and order."""
    return lambda: meguri.search_runs(
        filter=SEARCH_FILTER,
        order_by=[SEARCH_ORDER],
        experiment=experiment,
        max_results=max_results,
        workspace=ws,
    )


def check_search(found: list[Any]) -> dict[str, Any]:
    """What the search returned (count, first values), after checking order and filter."""
    accs = [r.metrics["acc"].value for r in found]
    if accs != sorted(accs, reverse=True) or any(a <= 0.5 for a in accs):
        raise AssertionError("meguri.search_runs returned runs out of order or off the filter")
    return {"returned": len(found), "accs": accs[:20]}


# -- history ------------------------------------------------------------------------------------


def history_reader(ws: Workspace, points: list[Point]) -> Callable[[], Any]:
    """Log ``points`` of one key in one run; return the ``meguri.get_metric_history`` call."""
    with meguri.start_run(experiment="history", workspace=ws) as run:
        run.log_batch(points)
    key = points[0][0]
    return lambda: meguri.get_metric_history(run.id, key, workspace=ws)


def check_history(hist: Any, points: list[Point]) -> None:
    if len(hist) != len(points) or int(hist.steps[-1]) != points[-1][2]:
        raise AssertionError(f"meguri history has {len(hist)} points, expected {len(points)}")
