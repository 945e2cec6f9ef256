"""The runs table with 100,000 runs: every page the Studio serves (the first, a deep one, the
last, sorted by a metric, filtered) answers over HTTP in under 300 ms, and shows the runs an
independent computation (numpy over the generated values) says it should.

The runs are written with SQL in the layout the run repository writes (``runs``,
``run_params``, ``run_tags`` and ``latest_metrics``, the last point of each metric, which is
what searching and ordering read; the full metric history, which no runs-table query reads,
is left out): creating 100,000 runs one call at a time would take minutes and measure nothing
the page reads. Timings are printed
(``pytest -s``): median of five requests after one warm-up, through a real HTTP server.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from meguri.store import Workspace, open_workspace
from meguri.testing._metadata_backends import fresh_postgres_database
from test_studio_support import parse, serving, studio_app

N_RUNS = 100_000
BUDGET_S = 0.300
T0 = 1_767_225_600.0


@dataclass
class Big:
    ws: Workspace
    experiment_id: str
    names: list[str]  # by creation, oldest first
    accuracy: np.ndarray  # per run, same order
    lr: list[str]


def _rows(experiment_id: str) -> tuple[dict[str, list[tuple[object, ...]]], np.ndarray, list[str]]:
    """The rows of each table, as tuples in column order; the accuracies and learning rates."""
    rng = np.random.default_rng(20260101)
    accuracy = np.round(rng.uniform(0.5, 1.0, N_RUNS), 6)
    loss = np.round(rng.uniform(0.0, 2.0, N_RUNS), 6)
    lrs = [("0.01", "0.1", "0.3")[i % 3] for i in range(N_RUNS)]
    ids = [f"run-scale-{i:06d}" for i in range(N_RUNS)]
    rows: dict[str, list[tuple[object, ...]]] = {
        "runs": [(ids[i], experiment_id, None, f"sweep-{i:06d}", "finished", T0 + i, "bench",
                  T0 + i + 30.0, T0 + i + 30.0, 30.0) for i in range(N_RUNS)],
        "run_params": [(ids[i], k, v) for i in range(N_RUNS)
                       for k, v in (("lr", lrs[i]), ("depth", str(2 + i % 7)))],
        "run_tags": [(ids[i], "team", "ab"[i % 2]) for i in range(N_RUNS)],
    }  # fmt: skip
    points = [(ids[i], k, 0, T0 + i, float(v)) for i in range(N_RUNS)
              for k, v in (("accuracy", accuracy[i]), ("loss", loss[i]))]  # fmt: skip
    rows["latest_metrics"] = points
    return rows, accuracy, lrs


_COLUMNS = {
    "runs": "id, experiment_id, parent_run_id, name, status, created_at, created_by, ended_at, "
    "heartbeat_at, wall_seconds",
    "run_params": "run_id, key, value",
    "run_tags": "run_id, key, value",
    "latest_metrics": "run_id, key, step, timestamp, value",
}


def _insert(ws: Workspace, experiment_id: str) -> Big:
    """One driver-level ``executemany`` per table, in one transaction (as the repository's
    metric writes do)."""
    rows, accuracy, lrs = _rows(experiment_id)
    mark = "?" if ws.metadata.db.is_sqlite else "%s"
    with ws.metadata.db.write() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for table, columns in _COLUMNS.items():
            marks = ", ".join([mark] * len(columns.split(",")))
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows[table])
        cursor.close()
    if not ws.metadata.db.is_sqlite:
        with ws.metadata.db.write() as conn:
            conn.execute(sa.text("ANALYZE"))
    names = [str(r[3]) for r in rows["runs"]]
    return Big(ws, experiment_id, names, accuracy, lrs)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def big(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Big]:
    root: Path = tmp_path_factory.mktemp("scale")
    if request.param == "sqlite":
        yield from _big(root, None)
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        yield from _big(root, url)


def _big(root: Path, store_url: str | None) -> Iterator[Big]:
    ws = open_workspace(root, store_url=store_url, project="scale", user="bench")
    experiment = ws.metadata.runs.ensure_experiment(ws.project.id, "sweep", "bench")
    started = time.perf_counter()
    built = _insert(ws, experiment.id)
    print(f"\ninserted {N_RUNS} runs in {time.perf_counter() - started:.1f} s")
    yield built
    ws.close()


@pytest.fixture(scope="module")
def client(big: Big) -> Iterator[httpx.Client]:
    with serving(studio_app(big.ws)) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


def _timed(
    client: httpx.Client, url: str, params: dict[str, object] | None = None
) -> tuple[float, str]:
    """The median of five timed requests (after one warm-up) and the page."""
    client.get(url, params=params)  # type: ignore[arg-type]
    times, text = [], ""
    for _ in range(5):
        started = time.perf_counter()
        response = client.get(url, params=params)  # type: ignore[arg-type]
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text[:500]
        text = response.text
    return statistics.median(times), text


def _names(page: str) -> list[str]:
    return [row[1] for row in parse(page).find_all("table", "runs")[0].rows()]


def _next_link(client: httpx.Client, url: str, params: dict[str, object]) -> str:
    """The page's "next" link (what a click on it requests)."""
    page = client.get(url, params=params)  # type: ignore[arg-type]
    found = [a for a in parse(page.text).find_all("a") if a.attrs.get("rel") == "next"]
    assert len(found) == 1 and "after=" in found[0].attrs["href"]
    return found[0].attrs["href"]


def test_runs_pages_of_100k_runs_under_300_ms(big: Big, client: httpx.Client) -> None:
    url = f"/experiments/{big.experiment_id}"
    newest = big.names[::-1]
    by_accuracy = np.lexsort((-np.arange(N_RUNS), -big.accuracy))  # ties: the newest run first
    top = [big.names[i] for i in by_accuracy]
    fast = [big.names[i] for i in by_accuracy if big.lr[i] == "0.1" and big.accuracy[i] >= 0.9]
    accuracy = {"sort": "metrics.accuracy desc"}
    filtered = {"q": "params.lr = '0.1' and metrics.accuracy >= 0.9", **accuracy,
                "cols": ["metrics.accuracy", "params.lr"]}  # fmt: skip
    cases: dict[str, tuple[str, dict[str, object] | None, list[str]]] = {
        "first page": (url, {}, newest[:50]),
        "200 per page, page 7": (url, {"size": 200, "page": 7}, newest[1200:1400]),
        "next after run 49,950": (
            _next_link(client, url, {"page": 999}), None, newest[49_950:50_000]),
        "next: the last page": (_next_link(client, url, {"page": 1999}), None, newest[99_950:]),
        "sorted by accuracy": (url, accuracy, top[:50]),
        "sorted, next after 24,950": (
            _next_link(client, url, {**accuracy, "page": 499}), None, top[24_950:25_000]),
        "filtered and sorted": (url, filtered, fast[:50]),
        "filtered, sorted, next": (
            _next_link(client, url, {**filtered, "page": 99}), None, fast[4_950:5_000]),
    }  # fmt: skip
    report = []
    for label, (target, params, expected) in cases.items():
        took, page = _timed(client, target, params)
        report.append(f"{label:28s} {took * 1000:7.1f} ms")
        assert _names(page) == expected, label
        assert took < BUDGET_S, f"{label}: {took * 1000:.0f} ms"
    by_number = {
        "page 1000 by its number": {"page": 1000},
        "sorted, page 500 by number": {**accuracy, "page": 500},
    }
    for label, params in by_number.items():
        took, _ = _timed(client, url, params)  # by offset: reported, not bounded
        report.append(f"{label:28s} {took * 1000:7.1f} ms (offset)")
    backend = "sqlite" if big.ws.metadata.db.is_sqlite else "postgresql"
    print(f"\nruns table, {N_RUNS} runs ({backend}), median of 5:\n" + "\n".join(report))
