"""The wire formats: request bodies to a checked batch, predictions to response bodies.

``POST /invocations`` (SageMaker's contract, MLflow's scoring protocol):

* ``text/csv``: one row per line, no header, fields in signature order; or a first line of
  column names (any order) that then gives the order. An empty field is null.
* ``application/json``, any of MLflow's forms: ``{"dataframe_split": {"columns": [...],
  "data": [[...]]}}`` (``columns`` optional: signature order), ``{"dataframe_records":
  [{...}]}``, ``{"instances": [...]}`` (rows as lists or objects), ``{"inputs": {...}}``
  (columns as lists, or one row of scalars) or ``{"inputs": [...]}``; a bare list of rows or of
  records works too. An optional ``"params"`` object is accepted and ignored.
* The response is ``{"predictions": [...]}``: the class label per row for classifiers, the
  number for regression. With ``?probabilities=true`` a classifier's response adds
  ``"probabilities": [[p, ...], ...]`` (one per label) and ``"labels": [...]`` (their order).
  ``Accept: text/csv`` answers one line per row instead (label, then the probabilities).

Open Inference Protocol v2 (``POST /v2/models/{name}/infer``): ``inputs`` is either one tensor
per column (``name`` = column, ``shape`` ``[n]`` or ``[n, 1]``, ``datatype`` FP64/INT64/BOOL/
BYTES...) or one 2-D numeric tensor ``[n, columns]`` in signature order. The response has the
outputs ``predictions`` (``[n]``) and, for classifiers, ``probabilities`` (``[n, labels]``);
``outputs`` in the request picks among them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import orjson

from meguri.serve._model import Array, LoadedModel, Prediction
from meguri.serve._validate import BadRequest, Batch, Validator

__all__ = [
    "parse_invocation",
    "parse_json",
    "parse_v2_infer",
    "render_csv",
    "render_predictions",
    "render_v2",
    "v2_metadata",
    "wants_probabilities",
]

_FORMS = "dataframe_split, dataframe_records, instances or inputs"
_NUMERIC_TYPES = frozenset(
    {
        "FP16",
        "FP32",
        "FP64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
    }
)
_NATIVE = frozenset({np.dtype(np.float64), np.dtype(np.int64), np.dtype(np.bool_)})
_V2_TYPE = {
    "double": "FP64",
    "long": "INT64",
    "boolean": "BOOL",
    "string": "BYTES",
    "datetime": "BYTES",
}


# -- requests -------------------------------------------------------------------------------
def parse_invocation(body: bytes, content_type: str, validator: Validator) -> Batch:
    """``POST /invocations``: CSV or JSON by content type (JSON when none is given)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "text/csv":
        return parse_csv(body, validator)
    if kind in ("application/json", "") or kind.endswith("+json"):
        return from_document(parse_json(body), validator)
    raise BadRequest(
        f"content type {kind!r} is not supported; send application/json or text/csv",
        code="unsupported_media_type",
        status=415,
    )


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"malformed JSON ({exc}); note that NaN and Infinity are not JSON: send null for a "
            "missing value",
            code="malformed_json",
        ) from None


def parse_csv(body: bytes, validator: Validator) -> Batch:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the CSV body is not UTF-8 text", code="malformed_csv") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise BadRequest("the CSV body holds no rows; send at least one", code="no_rows")
    validator.check_rows(max(1, len(lines) - 1))  # the upper bound, before splitting
    if '"' in text:
        rows = list(csv.reader(io.StringIO("\n".join(lines))))
    else:
        rows = [line.split(",") for line in lines]
    header = rows[0] if set(rows[0]) & set(validator.names) else None
    return validator.from_text_rows(rows[1:] if header else rows, header)


def from_document(doc: Any, validator: Validator) -> Batch:
    """Any of the JSON forms of ``/invocations`` (see the module docstring)."""
    if isinstance(doc, list):
        if doc and all(isinstance(r, dict) for r in doc):
            return validator.from_records(doc)
        return validator.from_rows(doc)
    if not isinstance(doc, dict):
        raise BadRequest(f"the JSON body must be an object with one of {_FORMS}")
    keys = set(doc) - {"params"}
    if len(keys) != 1 or not keys <= {
        "dataframe_split",
        "dataframe_records",
        "instances",
        "inputs",
    }:
        raise BadRequest(
            f"the JSON object must hold exactly one of {_FORMS}; got {sorted(map(str, keys))}",
            code="unknown_format",
        )
    key = keys.pop()
    value = doc[key]
    if key == "dataframe_split":
        return _split(value, validator)
    if key == "inputs" and isinstance(value, dict):
        if value and not any(isinstance(v, list) for v in value.values()):
            return validator.from_records([value])
        return validator.from_columns(value)
    if key == "instances" and isinstance(value, dict):
        return validator.from_columns(value)
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        return validator.from_records(value)
    if key == "dataframe_records":
        raise BadRequest("dataframe_records must be a list of objects {column: value}")
    return validator.from_rows(value)


def _split(value: Any, validator: Validator) -> Batch:
    if not isinstance(value, dict) or "data" not in value:
        raise BadRequest('dataframe_split must be an object {"columns": [...], "data": [[...]]}')
    columns = value.get("columns")
    if columns is not None and not isinstance(columns, list):
        raise BadRequest("dataframe_split.columns must be a list of column names")
    return validator.from_rows(value["data"], columns)


def parse_v2_infer(body: bytes, validator: Validator) -> tuple[Batch, Any, list[str] | None]:
    """A v2 inference request: the batch, the request ``id`` and the outputs asked for."""
    doc = parse_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise BadRequest('a v2 request is {"inputs": [{"name", "shape", "datatype", "data"}]}')
    tensors = doc["inputs"]
    if not all(isinstance(t, dict) for t in tensors):
        raise BadRequest("each v2 input must be an object {name, shape, datatype, data}")
    validator.check_width(len(tensors))
    outputs = doc.get("outputs")
    wanted = None
    if isinstance(outputs, list):
        wanted = [str(o.get("name")) for o in outputs if isinstance(o, dict)]
    shape = tensors[0].get("shape")
    if len(tensors) == 1 and isinstance(shape, list) and len(shape) == 2 and shape[1] != 1:
        return _v2_matrix(tensors[0], validator), doc.get("id"), wanted
    columns = {str(t.get("name")): _v2_column(t, validator) for t in tensors}
    return validator.from_columns(columns), doc.get("id"), wanted


def _v2_data(tensor: Mapping[str, Any], validator: Validator) -> tuple[list[Any], list[int]]:
    name, shape, data = tensor.get("name"), tensor.get("shape"), tensor.get("data")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of sizes", column=str(name))
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: data must be a list", column=str(name))
    if data and isinstance(data[0], list):
        data = list(_flatten(data))
    if len(data) != int(np.prod(shape)):
        raise BadRequest(
            f"input {name!r}: {len(data)} values do not fill shape {shape}",
            column=str(name),
            code="wrong_shape",
        )
    if shape:
        validator.check_rows(shape[0])
    return data, shape


def _flatten(data: list[Any]) -> Any:
    for item in data:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def _v2_matrix(tensor: Mapping[str, Any], validator: Validator) -> Batch:
    data, shape = _v2_data(tensor, validator)
    if tensor.get("datatype") not in _NUMERIC_TYPES or not set(map(type, data)) <= {int, float}:
        raise BadRequest(
            "a 2-D input must be a numeric tensor (FP64) of [rows, columns]", code="wrong_type"
        )
    try:
        return validator.from_matrix(np.array(data, dtype=np.float64).reshape(shape))
    except OverflowError:
        raise BadRequest(
            "the tensor holds a number too large for FP64", code="not_finite"
        ) from None


def _v2_column(tensor: Mapping[str, Any], validator: Validator) -> list[Any]:
    name = str(tensor.get("name"))
    data, shape = _v2_data(tensor, validator)
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise BadRequest(
            f"input {name!r}: a column tensor has shape [n] or [n, 1]",
            column=name,
            code="wrong_shape",
        )
    column = validator.columns.get(name)
    datatype = tensor.get("datatype")
    if column is None or _V2_TYPE[column.type] == datatype:
        return data
    if column.type in ("double", "long") and datatype in _NUMERIC_TYPES:
        return data
    raise BadRequest(
        f"input {name!r}: datatype {datatype!r} does not fit column type "
        f"{column.type}; send {_V2_TYPE[column.type]}",
        column=name,
        code="wrong_type",
    )


# -- responses ------------------------------------------------------------------------------
def wants_probabilities(query: bytes) -> bool:
    if not query:
        return False
    values = parse_qs(query.decode("latin-1")).get("probabilities", [""])
    return values[-1].lower() in ("true", "1", "yes")


def render_predictions(pred: Prediction, labels: list[Any], probabilities: bool) -> bytes:
    doc: dict[str, Any] = {"predictions": _json_array(pred.values)}
    if probabilities and pred.probabilities is not None:
        doc["probabilities"] = _json_array(pred.probabilities)
        doc["labels"] = labels
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def _json_array(values: Array) -> Any:
    """``values`` as orjson renders it without a Python list (float64, int64, bool arrays:
    written exactly as ``tolist()`` would be), else as plain Python values."""
    if values.dtype in _NATIVE and values.flags.c_contiguous:
        return values
    return _plain(values) if values.ndim == 1 else values.tolist()


def render_csv(pred: Prediction, probabilities: bool) -> bytes:
    values = [str(v) for v in _plain(pred.values)]
    if probabilities and pred.probabilities is not None:
        probs = [",".join(map(repr, row)) for row in pred.probabilities.tolist()]
        values = [f"{v},{p}" for v, p in zip(values, probs, strict=True)]
    return ("\n".join(values) + "\n").encode()


def render_v2(
    pred: Prediction, model: LoadedModel, request_id: Any, wanted: list[str] | None
) -> bytes:
    values = _plain(pred.values)
    outputs = [
        {
            "name": "predictions",
            "shape": [len(values)],
            "datatype": _datatype(pred.values),
            "data": values,
        }
    ]
    if pred.probabilities is not None:
        outputs.append(
            {
                "name": "probabilities",
                "shape": list(pred.probabilities.shape),
                "datatype": "FP64",
                "data": pred.probabilities.ravel().tolist(),
            }
        )
    if wanted:
        outputs = [o for o in outputs if o["name"] in wanted]
    doc = {"model_name": model.name, "model_version": model.version, "outputs": outputs}
    if request_id is not None:
        doc["id"] = str(request_id)
    return orjson.dumps(doc)


def v2_metadata(model: LoadedModel) -> bytes:
    sig = model.signature
    outputs = [
        {"name": "predictions", "datatype": _label_datatype(sig.output.labels), "shape": [-1]}
    ]
    if sig.output.task != "regression":
        outputs.append(
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(sig.output.labels)]}
        )
    return orjson.dumps(
        {
            "name": model.name,
            "versions": [model.version],
            "platform": f"meguri-{model.runtime}",
            "inputs": [
                {"name": c.name, "datatype": _V2_TYPE[c.type], "shape": [-1]} for c in sig.inputs
            ],
            "outputs": outputs,
        }
    )


def _plain(values: Array) -> list[Any]:
    if values.dtype.kind == "M":
        return [str(v) for v in values.astype(str)]
    out: list[Any] = values.tolist()
    return out


def _datatype(values: Array) -> str:
    return {"b": "BOOL", "i": "INT64", "u": "UINT64", "f": "FP64"}.get(values.dtype.kind, "BYTES")


def _label_datatype(labels: tuple[Any, ...]) -> str:
    if not labels:
        return "FP64"
    return _datatype(np.asarray(labels))
