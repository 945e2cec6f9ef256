"""What a model takes and gives: the signature in ``model.json``, checked on every request.

A signature lists the model's input columns in order, each with a logical type and whether it
may be null, and describes the output (task, class labels). It is plain JSON::

    {"inputs": [{"name": "mean_radius", "type": "double", "nullable": true}, ...],
     "output": {"task": "binary", "labels": [0, 1]}}

Logical types: ``double`` (any float), ``long`` (any integer), ``boolean``, ``string``,
``datetime`` (ISO 8601 text on the wire). At serving time a batch is columnar: one numpy array
per input column (``float64`` with NaN for null for ``double``/``long``; ``object`` arrays of
``str``/``None`` for ``string``; ``bool`` for ``boolean``; ``datetime64[us]`` for ``datetime``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from meguri.errors import ConfigError

__all__ = ["LOGICAL_TYPES", "Column", "Output", "Signature"]

LogicalType = Literal["double", "long", "boolean", "string", "datetime"]
LOGICAL_TYPES: tuple[LogicalType, ...] = ("double", "long", "boolean", "string", "datetime")
Task = Literal["binary", "multiclass", "regression"]


@dataclass(frozen=True)
class Column:
    """One input column: its name, logical type and whether null (NaN) is accepted."""

    name: str
    type: LogicalType
    nullable: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable}


@dataclass(frozen=True)
class Output:
    """What a prediction is: a class label (with probabilities per label) or a number."""

    task: Task
    labels: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "labels": list(self.labels)}


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Column, ...]
    output: Output

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.inputs]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [c.to_dict() for c in self.inputs], "output": self.output.to_dict()}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Signature:
        try:
            inputs = tuple(
                Column(str(c["name"]), _logical(c["type"]), bool(c.get("nullable", True)))
                for c in document["inputs"]
            )
            out = document["output"]
            output = Output(out["task"], tuple(out.get("labels", ())))
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"model.json: the signature is malformed ({exc!r} missing or wrong); "
                "repackage the model with this version of meguri"
            ) from exc
        if output.task not in ("binary", "multiclass", "regression"):
            raise ConfigError(f"model.json: unknown task {output.task!r} in the signature")
        return cls(inputs, output)


def _logical(value: Any) -> LogicalType:
    if value not in LOGICAL_TYPES:
        raise ConfigError(
            f"model.json: unknown column type {value!r}; expected one of {', '.join(LOGICAL_TYPES)}"
        )
    return value  # type: ignore[no-any-return]
