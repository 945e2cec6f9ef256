"""SQL steps run by DuckDB over the table ``data``.

``sql`` is re-run on every frame at apply time, so it must be row-wise: one output row per
input row, computed from that row alone (fit checks this on a few rows). Serving such a step
needs DuckDB. ``sql_lookup`` is for aggregates (per-customer means, counts): its query runs
once, on the training rows; the resulting table is stored in the transform (as JSON) and
left-joined with pure Polars at apply time, so serving never recomputes an aggregate over the
one row it has, and test rows never leak into the statistics.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from meguri.data._steps_base import FitContext, Learned, StepKind, parse_dtype
from meguri.errors import TransformError
from meguri.spec._prepare import Sql, SqlLookup

#: A lookup table larger than this is refused: it would bloat the stored transform.
MAX_LOOKUP_ROWS = 1_000_000
_STORABLE = (pl.String, pl.Boolean)


def run_sql(frame: pl.DataFrame, query: str) -> pl.DataFrame:
    """``query`` over ``frame`` registered as the table ``data``, in a private DuckDB."""
    import duckdb

    connection = duckdb.connect(":memory:")
    try:
        connection.register("data", frame.to_arrow())
        result = connection.sql(query)
        if result is None:
            raise TransformError(f"the query {query!r} returns no table; write a SELECT")
        out = pl.from_arrow(result.to_arrow_table())
    except duckdb.Error as exc:
        raise TransformError(f"DuckDB cannot run {query!r}: {exc}") from exc
    finally:
        connection.close()
    assert isinstance(out, pl.DataFrame)
    return out


def _run(frame: pl.DataFrame, query: str, ctx: FitContext) -> pl.DataFrame:
    try:
        return run_sql(frame, query)
    except TransformError as exc:
        raise ctx.error(str(exc)) from exc


# -- sql (row-wise) ---------------------------------------------------------------------------


def _learn_sql(frame: pl.DataFrame, config: Sql, ctx: FitContext) -> Learned:
    out = _run(frame, config.query, ctx)
    if out.height != frame.height:
        raise ctx.error(
            f"the query returns {out.height} rows for {frame.height}; a sql step must keep "
            "every row (use filter to drop rows, sql_lookup for aggregates)"
        )
    head = frame.head(3)
    alone = pl.concat([run_sql(head.slice(i, 1), config.query) for i in range(head.height)])
    if not alone.equals(run_sql(head, config.query)):
        raise ctx.error(
            "the query is not row-wise: a row's result depends on other rows (an aggregate, "
            "window or join over data); use sql_lookup, whose result is learned on training rows"
        )
    if ctx.target is not None and ctx.target not in out.columns:
        raise ctx.error(f"the query drops the target {ctx.target!r}; select it (SELECT *, ...)")
    return {"query": config.query, "columns": out.columns}


def _apply_sql(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    return run_sql(frame.collect(), learned["query"]).lazy()


# -- sql_lookup (aggregates learned on training rows) -----------------------------------------


def _learn_lookup(frame: pl.DataFrame, config: SqlLookup, ctx: FitContext) -> Learned:
    ctx.check_columns(config.on, frame.schema)
    table = _run(frame, config.query, ctx)
    _check_lookup(table, frame.schema, config, ctx)
    return {
        "on": list(config.on),
        "table": {name: table.get_column(name).to_list() for name in table.columns},
        "dtypes": {name: str(dtype) for name, dtype in table.schema.items()},
    }


def _check_lookup(
    table: pl.DataFrame, schema: pl.Schema, config: SqlLookup, ctx: FitContext
) -> None:
    missing = [c for c in config.on if c not in table.columns]
    if missing:
        raise ctx.error(f"the query's result lacks the join column(s) {missing}; select them")
    clash = [c for c in table.columns if c not in config.on and c in schema]
    if clash:
        raise ctx.error(f"the query's columns {clash} already exist; rename them with AS")
    if table.height > MAX_LOOKUP_ROWS:
        raise ctx.error(f"the query returns {table.height} rows, over {MAX_LOOKUP_ROWS}")
    if table.select(config.on).is_duplicated().any():
        raise ctx.error(f"the query returns several rows per {config.on}; GROUP BY them")
    for name, dtype in table.schema.items():
        if not (dtype.is_numeric() or dtype in _STORABLE):
            raise ctx.error(f"column {name!r} of the query is {dtype}; CAST it to a number or text")


def _apply_lookup(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    schema = frame.collect_schema()
    on: list[str] = learned["on"]
    dtypes = {name: parse_dtype(text) for name, text in learned["dtypes"].items()}
    table = pl.DataFrame(learned["table"], schema=dtypes).with_columns(
        pl.col(c).cast(schema[c]) for c in on if c in schema
    )
    return frame.join(table.lazy(), on=on, how="left", maintain_order="left")


KINDS: dict[str, StepKind] = {
    "sql": StepKind(_learn_sql, _apply_sql),
    "sql_lookup": StepKind(_learn_lookup, _apply_lookup),
}
