"""The run search language, compiled to SQL.

A filter is clauses joined by ``and`` (case-insensitive), as in MLflow::

    metrics.roc_auc >= 0.9 and params.model = 'lgbm' and tags.team != 'x' and status = 'finished'

``metrics.K``, ``params.K``, ``tags.K`` (quote unusual keys with backticks: ``metrics.`val/loss```)
and the attributes ``status``, ``name``, ``created_by``, ``created_at``, ``ended_at``, ``run_id``,
``parent_run_id``. Operators: ``= != > >= < <=`` and ``like``/``ilike`` for strings. Order by
``metrics.K``, ``params.K``, ``tags.K`` or an attribute, then ``asc``/``desc``.

Deleted runs are left out unless the search asks for another :data:`RunView` (``deleted`` or
``all``): a lifecycle is not a filter clause, so that no face (the CLI, the Studio's table, the
API) can show a deleted run by forgetting a clause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

import sqlalchemy as sa

from meguri.errors import QuerySyntaxError
from meguri.store.metadata._schema import latest_metrics, run_params, run_tags, runs

#: Which runs a search sees: the active ones (the default), the deleted ones, or both.
RunView = Literal["active", "deleted", "all"]
RUN_VIEWS: tuple[str, ...] = get_args(RunView)

_ATTRIBUTES = {
    "status": runs.c.status,
    "name": runs.c.name,
    "created_by": runs.c.created_by,
    "created_at": runs.c.created_at,
    "ended_at": runs.c.ended_at,
    "run_id": runs.c.id,
    "id": runs.c.id,
    "parent_run_id": runs.c.parent_run_id,
}
_KIND = r"(?:(?P<kind>metrics|params|tags|metric|param|tag|attributes|attribute)\.)?"
_ENTITY = _KIND + r"(?:`(?P<qkey>[^`]+)`|(?P<key>[\w./-]+))"
_STRING = r"'(?P<s1>(?:[^'\\]|\\.)*)'|\"(?P<s2>(?:[^\"\\]|\\.)*)\""
_VALUE = _STRING + r"|(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_CLAUSE = re.compile(
    rf"\s*{_ENTITY}\s*(?P<op>>=|<=|!=|=|>|<|\bnot\s+like\b|\blike\b|\bilike\b)\s*(?:{_VALUE})\s*",
    re.IGNORECASE,
)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_HELP = (
    "Write clauses like: metrics.roc_auc >= 0.9 and params.model = 'lgbm' and status = 'finished'"
)


@dataclass(frozen=True)
class Clause:
    kind: str  # metrics | params | tags | attributes
    key: str
    op: str
    value: str | float


def _kind(raw: str | None) -> str:
    if raw is None:
        return "attributes"
    raw = raw.lower()
    return raw if raw.endswith("s") else raw + "s"


def split_and(text: str) -> list[str]:
    """Split a filter on ``and`` outside quotes and backticks (the MLflow search syntax the
    platform's MLflow routes translate uses the same rule)."""
    parts, start, quote = [], 0, ""
    for match in re.finditer(r"'|\"|`|\s+and\s+", text, re.IGNORECASE):
        token = match.group(0)
        if token in "'\"`":
            quote = "" if quote == token else (quote or token)
        elif not quote:
            parts.append(text[start : match.start()])
            start = match.end()
    parts.append(text[start:])
    return parts


def parse_filter(text: str | None) -> list[Clause]:
    if not text or not text.strip():
        return []
    return [_parse_clause(part) for part in split_and(text)]


def _parse_clause(part: str) -> Clause:
    m = _CLAUSE.fullmatch(part)
    if m is None:
        raise QuerySyntaxError(f"Cannot read the filter clause {part.strip()!r}. {_HELP}")
    kind = _kind(m["kind"])
    key = m["qkey"] or m["key"]
    op = " ".join(m["op"].lower().split())
    if m["num"] is not None:
        value: str | float = float(m["num"])
    else:
        value = (
            (m["s1"] if m["s1"] is not None else m["s2"]).replace("\\'", "'").replace('\\"', '"')
        )
    if kind == "attributes" and key not in _ATTRIBUTES:
        allowed = ", ".join(sorted(_ATTRIBUTES))
        raise QuerySyntaxError(
            f"Unknown run attribute {key!r} in {part.strip()!r}. Use metrics.K, params.K, tags.K "
            f"or one of: {allowed}."
        )
    if kind == "metrics" and isinstance(value, str):
        raise QuerySyntaxError(f"metrics.{key} compares with a number, not {value!r}.")
    if kind == "metrics" and "like" in op:
        raise QuerySyntaxError(f"metrics.{key}: 'like' applies to strings; use = != > >= < <=.")
    return Clause(kind, key, op, value)


def _compare(column: Any, op: str, value: str | float) -> Any:
    match op:
        case "=":
            return column == value
        case "!=":
            return column != value
        case ">":
            return column > value
        case ">=":
            return column >= value
        case "<":
            return column < value
        case "<=":
            return column <= value
        case "like":
            return column.like(value)
        case "not like":
            return column.not_like(value)
        case _:  # ilike
            return column.ilike(value)


def clause_condition(clause: Clause) -> Any:
    """A SQL condition on ``runs`` for one clause."""
    if clause.kind == "attributes":
        return _compare(_ATTRIBUTES[clause.key], clause.op, clause.value)
    table = {"metrics": latest_metrics, "params": run_params, "tags": run_tags}[clause.kind]
    value = str(clause.value) if clause.kind != "metrics" else clause.value
    if clause.kind != "metrics" and isinstance(clause.value, float):
        value = _number_text(clause.value)
    inner = sa.select(table.c.run_id).where(
        table.c.key == clause.key, _compare(table.c.value, clause.op, value)
    )
    return runs.c.id.in_(inner)


def _number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


@dataclass(frozen=True)
class OrderKey:
    kind: str
    key: str
    descending: bool


_ORDER = re.compile(rf"\s*{_ENTITY}(?:\s+(?P<dir>asc|desc))?\s*", re.IGNORECASE)


def parse_order(items: list[str] | None) -> list[OrderKey]:
    keys = []
    for item in items or []:
        m = _ORDER.fullmatch(item)
        if m is None:
            raise QuerySyntaxError(
                f"Cannot read the order {item!r}. Write e.g. 'metrics.rmse asc'."
            )
        kind, key = _kind(m["kind"]), m["qkey"] or m["key"]
        if kind == "attributes" and key not in _ATTRIBUTES:
            raise QuerySyntaxError(f"Cannot order by unknown attribute {key!r}.")
        keys.append(OrderKey(kind, key, (m["dir"] or "asc").lower() == "desc"))
    return keys


def apply_order(query: sa.Select[Any], keys: list[OrderKey]) -> sa.Select[Any]:
    """Join what ordering needs and order by it; newest first breaks ties."""
    for i, order in enumerate(keys):
        if order.kind == "attributes":
            column: Any = _ATTRIBUTES[order.key]
        else:
            table = {"metrics": latest_metrics, "params": run_params, "tags": run_tags}[order.kind]
            alias = table.alias(f"order_{i}")
            query = query.outerjoin(
                alias, sa.and_(alias.c.run_id == runs.c.id, alias.c.key == order.key)
            )
            column = alias.c.value
        column = column.desc() if order.descending else column.asc()
        query = query.order_by(column.nulls_last())
    return query.order_by(runs.c.created_at.desc(), runs.c.id.desc())


def lifecycle_condition(view: RunView) -> Any:
    """The condition on ``runs`` that keeps the runs ``view`` sees (None: every run)."""
    match view:
        case "active":
            return runs.c.deleted_at.is_(None)
        case "deleted":
            return runs.c.deleted_at.is_not(None)
        case "all":
            return None
    raise QuerySyntaxError(f"Unknown run view {view!r}; use one of: {', '.join(RUN_VIEWS)}.")


def _filtered(
    experiment_ids: list[str],
    clauses: list[Clause],
    view: RunView,
    skip_metric: str | None = None,
) -> Any:
    query = sa.select(*runs.c).where(runs.c.experiment_id.in_(experiment_ids))
    lifecycle = lifecycle_condition(view)
    if lifecycle is not None:
        query = query.where(lifecycle)
    for clause in clauses:
        if not (clause.kind == "metrics" and clause.key == skip_metric):
            query = query.where(clause_condition(clause))
    return query


def ordered_id_queries(
    experiment_ids: list[str],
    clauses: list[Clause],
    keys: list[OrderKey],
    view: RunView = "active",
) -> list[sa.Select[Any]]:
    """Queries whose results, concatenated, are the matching runs' rows in order.

    Ordering by a metric is split in two so that the database can walk the ``(key, value)``
    index and stop at the page's end: first the runs that have a (non-NaN) value for that
    metric, by value; then, NULLS LAST, the runs without one. A filter on that same metric
    already excludes runs without it, so the second query is dropped.
    """
    first = keys[0] if keys else None
    if first is None or first.kind != "metrics":
        return [apply_order(_filtered(experiment_ids, clauses, view), keys)]
    value = latest_metrics.alias("order_by_metric")
    on_key = [c for c in clauses if c.kind == "metrics" and c.key == first.key]
    with_value = _filtered(experiment_ids, clauses, view, skip_metric=first.key).join(
        value, sa.and_(value.c.run_id == runs.c.id, value.c.key == first.key)
    )
    with_value = with_value.where(
        value.c.value.is_not(None), *(_compare(value.c.value, c.op, c.value) for c in on_key)
    )
    column = value.c.value.desc() if first.descending else value.c.value.asc()
    queries = [apply_order(with_value.order_by(column), keys[1:])]
    if not on_key:
        has_value = sa.exists().where(
            latest_metrics.c.run_id == runs.c.id,
            latest_metrics.c.key == first.key,
            latest_metrics.c.value.is_not(None),
        )
        rest = _filtered(experiment_ids, clauses, view).where(~has_value)
        queries.append(apply_order(rest, keys[1:]))
    return queries
