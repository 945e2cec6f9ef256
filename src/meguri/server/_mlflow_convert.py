"""meguri's runs and experiments in MLflow's REST shapes, and MLflow's search syntax in
meguri's.

IDs carry over unchanged: a meguri run id (``run-01jdq3k8zr-7xk2a``) is the MLflow ``run_id``,
an experiment id (``exp-…``) the ``experiment_id``; MLflow's default experiment ``"0"`` is the
project's experiment ``Default``. Times are milliseconds in MLflow, seconds in meguri.
A run's ``artifact_uri`` is ``mlflow-artifacts:/<experiment_id>/<run_id>/artifacts``: the
client resolves it against its tracking URI, so its files come back to this server, which
keeps them in the artifact store by content (see :mod:`meguri.server._mlflow_artifacts`).
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any

from meguri.errors import QuerySyntaxError
from meguri.store.metadata import Experiment, Run, RunStatus
from meguri.store.metadata._search import split_and

__all__ = [
    "DEFAULT_EXPERIMENT",
    "artifact_uri",
    "experiment_json",
    "from_page_token",
    "metric_value",
    "mlflow_status",
    "page_token",
    "run_info",
    "run_json",
    "translate_filter",
    "translate_order",
]

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


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def mlflow_status(status: str) -> RunStatus:
    found = _FROM_MLFLOW.get(status.upper())
    if found is None:
        raise QuerySyntaxError(
            f"Unknown run status {status!r}; use one of {', '.join(_FROM_MLFLOW)}"
        )
    return found


def experiment_json(e: Experiment, default_id: str | None = None) -> dict[str, Any]:
    created = _ms(e.created_at)
    return {
        "experiment_id": DEFAULT_ID if e.id == default_id else e.id,
        "name": e.name,
        "artifact_location": f"mlflow-artifacts:/{e.id}",
        "lifecycle_stage": "active",
        "creation_time": created,
        "last_update_time": created,
        "tags": [],
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
        "start_time": _ms(run.created_at),
        "artifact_uri": artifact_uri(run),
        "lifecycle_stage": "active",
    }
    if run.ended_at is not None:
        info["end_time"] = _ms(run.ended_at)
    return info


def metric_value(value: float) -> float | str:
    """A metric value in protobuf JSON: NaN and infinities as the strings it uses."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float(value)


def run_json(run: Run) -> dict[str, Any]:
    metrics = [
        {"key": k, "value": metric_value(p.value), "timestamp": _ms(p.timestamp), "step": p.step}
        for k, p in run.metrics.items()
    ]
    return {
        "info": run_info(run),
        "data": {
            "metrics": metrics,
            "params": [{"key": k, "value": v} for k, v in run.params.items()],
            "tags": [{"key": k, "value": v} for k, v in run.tags.items()],
        },
        "inputs": {},
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
        if m[1] or "." not in key:
            mapped = _ATTRIBUTES.get(key.lower().strip("`"))
            if mapped is None:
                raise QuerySyntaxError(f"Cannot order by unknown attribute {key!r}.")
            key = "id" if mapped == "run_id" else mapped
        out.append(f"{key}{direction}")
    return out
