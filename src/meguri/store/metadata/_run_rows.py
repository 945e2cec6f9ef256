"""Loading full runs (row, params, tags, latest metrics, inputs) for one page of run IDs.

The read path of every search: five driver-level queries with ``fetchall``, whatever the page
size. The ID list travels as one parameter (JSON for SQLite's ``json_each``, an array for
PostgreSQL's ``ANY``), so a page of 1,000 runs costs no bind-list expansion.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from meguri.store.metadata._entities import MetricPoint, Run, RunStatus
from meguri.store.metadata._schema import runs

_RUN_COLUMNS = [c.name for c in runs.c]


class RunLoader:
    def __init__(self, is_sqlite: bool) -> None:
        self._is_sqlite = is_sqlite
        member = "IN (SELECT value FROM json_each(?))" if is_sqlite else "= ANY(%s)"
        self._sql = {
            "runs": f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE id {member}",
            "params": f"SELECT run_id, key, value FROM run_params WHERE run_id {member}",
            "tags": f"SELECT run_id, key, value FROM run_tags WHERE run_id {member}",
            "metrics": "SELECT run_id, key, value, step, timestamp FROM latest_metrics "
            f"WHERE run_id {member}",
            "inputs": f"SELECT run_id, kind, ref FROM run_inputs WHERE run_id {member} "
            "ORDER BY ref",
        }

    def load(self, conn: sa.Connection, ids: list[str]) -> list[Run]:
        """The runs of ``ids``, in that order (IDs that do not exist are left out)."""
        if not ids:
            return []
        by_id = {row[0]: row for row in self._fetch(conn, ["runs"], ids)["runs"]}
        return self.complete(conn, [by_id[i] for i in ids if i in by_id])

    def complete(self, conn: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> list[Run]:
        """Runs from rows of the ``runs`` table (all columns, in order), in that order."""
        if not rows:
            return []
        found = self._fetch(conn, ["params", "tags", "metrics", "inputs"], [r[0] for r in rows])
        params, tags = _pairs(found["params"]), _pairs(found["tags"])
        metrics, inputs = _metrics(found["metrics"]), _inputs(found["inputs"])
        return [
            _run(
                row,
                params.get(row[0], {}),
                tags.get(row[0], {}),
                metrics.get(row[0], {}),
                inputs.get(row[0], {}),
            )
            for row in rows
        ]

    def _fetch(self, conn: sa.Connection, names: list[str], ids: list[str]) -> dict[str, list[Any]]:
        arg: Any = json.dumps(ids) if self._is_sqlite else list(ids)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            out = {}
            for name in names:
                cursor.execute(self._sql[name], (arg,))
                out[name] = cursor.fetchall()
            return out
        finally:
            cursor.close()


def _pairs(rows: list[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for run_id, key, value in rows:
        out.setdefault(run_id, {})[key] = value
    return out


def _metrics(
    rows: list[tuple[str, str, float | None, int, float]],
) -> dict[str, dict[str, MetricPoint]]:
    out: dict[str, dict[str, MetricPoint]] = {}
    nan = float("nan")
    for run_id, key, value, step, stamp in rows:
        out.setdefault(run_id, {})[key] = MetricPoint(
            key, nan if value is None else value, step, stamp
        )
    return out


def _inputs(rows: list[tuple[str, str, str]]) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for run_id, kind, ref in rows:
        out.setdefault(run_id, {}).setdefault(kind, []).append(ref)
    return out


_STATUS = {status.value: status for status in RunStatus}


def _run(
    row: tuple[Any, ...],
    params: dict[str, str],
    tags: dict[str, str],
    metrics: dict[str, MetricPoint],
    inputs: dict[str, list[str]],
) -> Run:
    # Positional: Run's first fields follow the table's columns (checked by a test).
    return Run(*row[:4], _STATUS[row[4]], *row[5:], params, tags, metrics, inputs)  # type: ignore[call-arg]
