"""meguri's runs and experiments in MLflow's REST shapes, and MLflow's search syntax in
meguri's.

IDs carry over unchanged: a meguri run id (``run-01jdq3k8zr-7xk2a``) is the MLflow ``run_id``,
an experiment id (``exp-…``) the ``experiment_id``; MLflow's default experiment ``"0"`` is the
project's experiment ``Default``. Times are milliseconds in MLflow, seconds in meguri.
A run's ``artifact_uri`` is ``mlflow-artifacts:/<experiment_id>/<run_id>/artifacts``: the
client resolves it against its tracking URI, so its files come back to this server, which
keeps them in the artifact store by content (see :mod:`meguri.server._mlflow_artifacts`).

A run's name is MLflow's tag ``mlflow.runName`` too: meguri keeps the name once, on the run,
and shows it as that tag (and reads the tag in filters and orderings as the name), so that a
rename through either one is seen through both. ``lifecycle_stage`` is ``deleted`` while a run
or experiment is deleted (``deleted_at``), ``active`` otherwise; MLflow's ``ViewType``
(``ACTIVE_ONLY``, ``DELETED_ONLY``, ``ALL``) picks meguri's :data:`RunView`.

The registry's searches (and experiments') filter a few records in Python with
:func:`record_filter`, MLflow's small grammar for them: ``name = 'churn'``,
``name LIKE 'ch%'``, ``tags.team = 'risk'``, ``run_id = '…'``, joined by ``AND``.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from meguri.errors import QuerySyntaxError
from meguri.store.metadata import Experiment, Run, RunStatus
from meguri.store.metadata._search import RunView, split_and

__all__ = [
    "DEFAULT_EXPERIMENT",
    "DEFAULT_ID",
    "RUN_NAME_TAG",
    "artifact_uri",
    "experiment_json",
    "from_page_token",
    "metric_value",
    "mlflow_status",
    "ms",
    "page_token",
    "record_filter",
    "run_info",
    "run_json",
    "sort_records",
    "translate_filter",
    "translate_order",
    "view_type",
]

#: The tag MLflow keeps a run's name in; meguri's run name is it (see the module docstring).
RUN_NAME_TAG = "mlflow.runName"

DEFAULT_EXPERIMENT = "Default"
DEFAULT_ID = "0"

_STATUS = {
    RunStatus.RUNNING: "RUNNING",
    RunStatus.FINISHED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.KILLED: "KILLED",
}
_FROM_MLFLOW = {
    "RUNNING": RunStatus.RUNNING,
    "SCHEDULED": RunStatus.RUNNING,
    "FINISHED": RunStatus.FINISHED,
    "FAILED": RunStatus.FAILED,
    "KILLED": RunStatus.KILLED,
}
#: MLflow's run attributes and meguri's name for each (times: see _TIMES).
_ATTRIBUTES = {
    "run_id": "run_id",
    "run_name": "name",
    "status": "status",
    "start_time": "created_at",
    "end_time": "ended_at",
    "user_id": "created_by",
    "created": "created_at",
    "run_uuid": "run_id",
}
_TIMES = {"created_at", "ended_at"}


def ms(seconds: float | None) -> int | None:
    """Seconds (meguri) as milliseconds (MLflow)."""
    return None if seconds is None else int(seconds * 1000)


_VIEWS: dict[str, RunView] = {
    "ACTIVE_ONLY": "active",
    "1": "active",
    "DELETED_ONLY": "deleted",
    "2": "deleted",
    "ALL": "all",
    "3": "all",
}


def view_type(value: str | int | None) -> RunView:
    """MLflow's ``ViewType`` (name or number; none: active only) as a :data:`RunView`."""
    if value is None or value == "":
        return "active"
    found = _VIEWS.get(str(value).upper())
    if found is None:
        raise QuerySyntaxError(
            f"Unknown view type {value!r}; use ACTIVE_ONLY, DELETED_ONLY or ALL."
        )
    return found


def _stage(deleted_at: float | None) -> str:
    return "active" if deleted_at is None else "deleted"


def mlflow_status(status: str) -> RunStatus:
    found = _FROM_MLFLOW.get(status.upper())
    if found is None:
        raise QuerySyntaxError(
            f"Unknown run status {status!r}; use one of {', '.join(_FROM_MLFLOW)}"
        )
    return found


def _pairs(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in values.items()]


def experiment_json(e: Experiment, tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    created = ms(e.created_at)
    return {
        "experiment_id": e.id,
        "name": e.name,
        "artifact_location": f"mlflow-artifacts:/{e.id}",
        "lifecycle_stage": _stage(e.deleted_at),
        "creation_time": created,
        "last_update_time": ms(e.deleted_at) or created,
        "tags": _pairs(tags or {}),
    }


def artifact_uri(run: Run) -> str:
    return f"mlflow-artifacts:/{run.experiment_id}/{run.id}/artifacts"


def run_info(run: Run) -> dict[str, Any]:
    info: dict[str, Any] = {
        "run_id": run.id,
        "run_uuid": run.id,
        "run_name": run.name,
        "experiment_id": run.experiment_id,
        "user_id": run.created_by,
        "status": _STATUS[run.status],
        "start_time": ms(run.created_at),
        "artifact_uri": artifact_uri(run),
        "lifecycle_stage": _stage(run.deleted_at),
    }
    if run.ended_at is not None:
        info["end_time"] = ms(run.ended_at)
    return info


def metric_value(value: float) -> float | str:
    """A metric value in protobuf JSON: NaN and infinities as the strings it uses."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float(value)


def run_json(run: Run, dataset_inputs: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The run in MLflow's shape; ``dataset_inputs`` as recorded by ``runs/log-inputs``."""
    metrics = [
        {"key": k, "value": metric_value(p.value), "timestamp": ms(p.timestamp), "step": p.step}
        for k, p in run.metrics.items()
    ]
    return {
        "info": run_info(run),
        "data": {
            "metrics": metrics,
            "params": _pairs(run.params),
            "tags": _pairs({**run.tags, RUN_NAME_TAG: run.name}),
        },
        "inputs": {"dataset_inputs": list(dataset_inputs)} if dataset_inputs else {},
    }


def page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def from_page_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == "o" and number.isdigit():
            return int(number)
    except (ValueError, UnicodeDecodeError):
        pass
    raise QuerySyntaxError("Invalid page_token: pass back the next_page_token of a search.")


# -- search syntax ---------------------------------------------------------------------------

_CLAUSE = re.compile(
    r"^\s*(?:(?P<kind>attributes?|metrics?|params?|tags?|datasets?)\.)?"
    r"(?P<key>`[^`]+`|\"[^\"]+\"|[\w.\-/:]+)\s*(?P<rest>.*)$",
    re.IGNORECASE | re.DOTALL,
)
_OP_VALUE = re.compile(
    r"^(?P<op>>=|<=|!=|=|>|<|not\s+like|like|ilike)\s*(?P<value>.+?)\s*$", re.IGNORECASE | re.DOTALL
)


def _attribute_clause(key: str, op: str, value: str) -> str:
    name = _ATTRIBUTES.get(key.lower())
    if name is None:
        known = ", ".join(sorted(_ATTRIBUTES))
        raise QuerySyntaxError(f"Unknown run attribute {key!r}; use one of: {known}.")
    if name == "status":
        value = value.lower()
    if name in _TIMES:
        try:
            value = repr(float(value) / 1000.0)
        except ValueError:
            raise QuerySyntaxError(f"{key} compares with milliseconds, not {value!r}.") from None
    return f"{name} {op} {value}"


def translate_filter(text: str | None) -> str | None:
    """An MLflow ``filter_string`` in meguri's search language (the same grammar but for
    attribute names, upper-case statuses and times in milliseconds)."""
    if not text or not text.strip():
        return None
    out = []
    for part in split_and(text):
        clause = _CLAUSE.match(part)
        tail = _OP_VALUE.match(clause["rest"]) if clause else None
        if clause is None or tail is None:
            raise QuerySyntaxError(f"Cannot read the filter clause {part.strip()!r}.")
        kind, key = (clause["kind"] or "attributes").lower(), clause["key"].strip('"`')
        if kind.startswith("dataset"):
            raise QuerySyntaxError("Filtering runs by datasets is not supported here.")
        if kind.startswith("tag") and key == RUN_NAME_TAG:
            kind, key = "attributes", "run_name"
        if kind.startswith("attribute"):
            out.append(_attribute_clause(key, tail["op"], tail["value"]))
        else:
            quoted = key if re.fullmatch(r"[\w./-]+", key) else f"`{key}`"
            out.append(f"{kind}.{quoted} {tail['op']} {tail['value']}")
    return " and ".join(out)


def translate_order(items: list[str] | None) -> list[str] | None:
    """MLflow ``order_by`` items in meguri's form (attribute names mapped)."""
    if not items:
        return None
    out = []
    for item in items:
        m = re.fullmatch(
            r"\s*(?:(attributes?)\.)?([\w.`\-/: ]+?)(\s+(?:asc|desc))?\s*", item, re.IGNORECASE
        )
        if m is None:
            raise QuerySyntaxError(f"Cannot read the order_by item {item!r}.")
        key, direction = m[2], m[3] or ""
        if key.strip("`").lower() in ("tags.mlflow.runname", "tag.mlflow.runname"):
            key = "run_name"
        if m[1] or "." not in key:
            mapped = _ATTRIBUTES.get(key.lower().strip("`"))
            if mapped is None:
                raise QuerySyntaxError(f"Cannot order by unknown attribute {key!r}.")
            key = "id" if mapped == "run_id" else mapped
        out.append(f"{key}{direction}")
    return out


# -- filters on a few records (registry, experiments) ----------------------------------------

_RECORD_CLAUSE = re.compile(
    r"^\s*(?P<key>(?:tags?\.)?(?:`[^`]+`|\"[^\"]+\"|[\w.\-]+))\s*"
    r"(?P<op>>=|<=|!=|=|>|<|\bilike\b|\blike\b)\s*"
    r"(?:'(?P<s1>(?:[^'\\]|\\.)*)'|\"(?P<s2>(?:[^\"\\]|\\.)*)\"|(?P<num>[-+]?\d+(?:\.\d+)?))\s*$",
    re.IGNORECASE | re.DOTALL,
)
Record = Mapping[str, Any]


def _like(pattern: str, case: bool) -> re.Pattern[str]:
    parts = ("." if c == "_" else ".*" if c == "%" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL if case else re.IGNORECASE | re.DOTALL)


def _record_clause(part: str, fields: frozenset[str]) -> Callable[[Record], bool]:
    m = _RECORD_CLAUSE.match(part)
    if m is None:
        raise QuerySyntaxError(
            f"Cannot read the filter clause {part.strip()!r}; write e.g. name = 'churn' "
            "or name LIKE 'ch%'."
        )
    key, op = m["key"], m["op"].lower()
    tag = re.match(r"tags?\.", key, re.IGNORECASE)
    key = key[tag.end() :].strip('`"') if tag else key.strip('`"').lower()
    if not tag and key not in fields:
        known = ", ".join(sorted(fields))
        raise QuerySyntaxError(f"Cannot filter by {key!r}; use tags.<key> or one of: {known}.")
    text = m["s1"] if m["s1"] is not None else m["s2"]
    value: str | float = float(m["num"]) if text is None else re.sub(r"\\(.)", r"\1", text)
    pattern = _like(str(value), op == "like") if "like" in op else None

    def test(record: Record) -> bool:
        found = record.get("tags", {}).get(key) if tag else record.get(key)
        if found is None:  # "tags.k != 'v'" holds for a record without the tag
            return op == "!="
        if pattern is not None:
            return pattern.fullmatch(str(found)) is not None
        return _OPS[op](_coerce(found, value), value)

    return test


def _coerce(found: Any, value: str | float) -> Any:
    if isinstance(value, float):
        try:
            return float(found)
        except (TypeError, ValueError):
            return math.nan
    return str(found)


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def record_filter(text: str | None, fields: Sequence[str]) -> Callable[[Record], bool]:
    """A predicate on records (``{field: value, "tags": {...}}``) from an MLflow filter on
    ``fields`` and tags (see the module docstring); no filter keeps every record."""
    if not text or not text.strip():
        return lambda r: True
    known = frozenset(fields)
    clauses = [_record_clause(part, known) for part in split_and(text)]
    return lambda r: all(c(r) for c in clauses)


def sort_records(
    records: list[dict[str, Any]], order_by: Sequence[str] | None, fields: Sequence[str]
) -> list[dict[str, Any]]:
    """``records`` ordered by MLflow ``order_by`` items (``name ASC``, ``version_number
    DESC``) on ``fields``; the first item decides first, ties keep the given order."""
    keys = []
    for item in order_by or []:
        m = re.fullmatch(r"\s*(?:attributes?\.)?`?([\w.]+)`?(?:\s+(asc|desc))?\s*", item, re.I)
        if m is None or m[1].lower() not in fields:
            known = ", ".join(fields)
            raise QuerySyntaxError(f"Cannot order by {item!r}; use one of: {known} (ASC or DESC).")
        keys.append((m[1].lower(), (m[2] or "asc").lower() == "desc"))
    out = list(records)
    for field, descending in reversed(keys):
        out.sort(key=lambda r: r[field], reverse=descending)
    return out
