"""Keyset paging of the runs table gives exactly the pages of the store's own order.

Runs built to make every tie and gap happen: four runs per timestamp, names repeating every
seven runs (one with a quote, which keyset paging cannot state and pages by offset), a metric
with eleven values, missing on every fifth run, and a param missing on every fourth. Walking
the table page by page through its "next" cursors must give the runs, in order, that one
search of the whole experiment gives, for every order and filter; so must paging by offset.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meguri.store import Workspace, open_workspace
from meguri.store.metadata import Experiment, RunStatus
from meguri.studio._keyset import after_plan, parse_sort
from meguri.studio._runs_table import RunsQuery, runs_page
from meguri.testing._metadata_backends import fresh_postgres_database

T0 = 1_767_225_600.0
RUNS = 137
SORTS = ["", "created_at asc", "name asc", "name desc", "status asc", "metrics.m desc",
         "metrics.m asc", "params.p asc", "params.p desc"]  # fmt: skip
FILTERS = ["", "metrics.m >= 0.3", "params.p != '1'"]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def table(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Workspace, Experiment]]:
    root = tmp_path_factory.mktemp("keyset")
    if request.param == "sqlite":
        yield from _table(open_workspace(root, project="keyset", user="ann"))
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        yield from _table(open_workspace(root, store_url=url, project="keyset", user="ann"))


def _table(ws: Workspace) -> Iterator[tuple[Workspace, Experiment]]:
    experiment = ws.metadata.runs.ensure_experiment(ws.project.id, "ties", "ann")
    rows = []
    for i in range(RUNS):
        ident = f"run-{(i * 7919) % 1000:03d}-{i:03d}"  # ids not in creation order
        name = "o'brien" if i % 7 == 6 else f"n{i % 7}"
        rows.append((ident, experiment.id, name, T0 + i // 4))
    mark = "?" if ws.metadata.db.is_sqlite else "%s"
    with ws.metadata.db.write() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.executemany(
            "INSERT INTO runs (id, experiment_id, name, status, created_at, created_by) "
            f"VALUES ({mark}, {mark}, {mark}, 'finished', {mark}, 'ann')",
            rows,
        )
        cursor.close()
    for i, (ident, *_) in enumerate(rows):
        points = [] if i % 5 == 0 else [("m", round((i * 37 % 11) / 10, 1), 0, T0)]
        params = {} if i % 4 == 0 else {"p": str(i % 3)}
        ws.metadata.runs.log_batch(ident, points, params=params)
    ws.metadata.runs.end_run(rows[0][0], RunStatus.FAILED)
    yield ws, experiment
    ws.close()


def _walk(ws: Workspace, experiment: Experiment, q: str, sort: str, keyset: bool) -> list[str]:
    """Every page in turn; with ``keyset``, each after the previous page's last run (at least
    one of them read by keyset, not by the offset fallback)."""
    seen, page, after, planned = [], 1, None, []
    while True:
        found = runs_page(ws, experiment, RunsQuery.of(q, sort, [], page, 25, after))
        assert found.error is None
        seen += [r.id for r in found.runs]
        if not found.has_next:
            assert any(planned) or not keyset
            return seen
        page, after = page + 1, (found.runs[-1].id if keyset else None)
        planned.append(after_plan(sort, found.runs[-1]) is not None)


@pytest.mark.parametrize("q", FILTERS)
@pytest.mark.parametrize("sort", SORTS)
def test_pages_are_the_stores_order(table: tuple[Workspace, Experiment], sort: str, q: str) -> None:
    ws, experiment = table
    whole = ws.metadata.runs.search(
        [experiment.id], q or None, [sort] if sort else None, max_results=10_000
    )
    expected = [r.id for r in whole]
    assert len(expected) == len(set(expected)) > 25
    assert _walk(ws, experiment, q, sort, keyset=True) == expected
    assert _walk(ws, experiment, q, sort, keyset=False) == expected


def test_plans_for_what_the_language_can_state(table: tuple[Workspace, Experiment]) -> None:
    ws, experiment = table
    runs = {r.name: r for r in ws.metadata.runs.search([experiment.id], max_results=1000)}
    plan = after_plan("metrics.m desc", runs["n1"])
    assert plan is not None and plan.beyond.startswith("metrics.m < ") and plan.then_unvalued
    assert after_plan("name asc", runs["o'brien"]) is None  # a quote: paged by offset
    assert after_plan("heartbeat_at desc", runs["n1"]) is None
    assert parse_sort("metrics.`val/loss` desc") == parse_sort("metrics.val/loss desc")
    assert parse_sort("").key == "created_at"  # type: ignore[union-attr]
