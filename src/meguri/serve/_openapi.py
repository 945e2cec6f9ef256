"""The OpenAPI 3.0 document of the inference server (``GET /openapi.json``).

Built from the model's signature so that clients and schemathesis see the real column names and
types: a record is an object with one property per input column.
"""

from __future__ import annotations

from typing import Any

from meguri.serve._model import LoadedModel
from meguri.serve._signature import Column

__all__ = ["openapi_document"]

_JSON_TYPES = {
    "double": {"type": "number"},
    "long": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "string": {"type": "string"},
    "datetime": {"type": "string", "format": "date-time"},
}


def openapi_document(
    model: LoadedModel, *, secured: bool = False, feedback: bool = False
) -> dict[str, Any]:
    """The document for ``model``; ``secured`` adds the bearer scheme to the protected routes;
    ``feedback`` (capture is on) adds ``POST /feedback``."""
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": f"meguri inference server: {model.name}",
            "version": model.version,
            "description": "SageMaker, MLflow scoring and Open Inference Protocol v2.",
        },
        "paths": _paths(model.name),
        "components": {"schemas": _schemas(model)},
    }
    if feedback:
        doc["paths"]["/feedback"] = _feedback_path()
        doc["components"]["schemas"].update(_feedback_schemas(model))
    if secured:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, item in doc["paths"].items():
            if path not in ("/ping", "/health", "/v2/health/live", "/v2/health/ready"):
                for operation in item.values():
                    operation["security"] = [{"bearer": []}]
                    operation["responses"]["401"] = _error_response("missing or wrong token")
    return doc


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error_response(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _get(summary: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": _json(schema)}}}


def _paths(name: str) -> dict[str, Any]:
    errors = {
        code: _error_response(text)
        for code, text in (
            ("400", "input does not match the signature"),
            ("413", "body or batch too large"),
            ("415", "unsupported content type"),
        )
    }
    model_param = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "example": name},
    }
    status = {"type": "object"}
    return {
        "/ping": _get("SageMaker health check", status),
        "/health": _get("MLflow health check", status),
        "/v2/health/live": _get("v2 liveness", status),
        "/v2/health/ready": _get("v2 readiness", status),
        "/invocations": {
            "post": {
                "summary": "Predict (SageMaker contract; MLflow scoring JSON)",
                "parameters": [
                    {
                        "name": "probabilities",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("ScoringRequest")},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                "responses": {"200": _json(_ref("Predictions")), **errors},
            }
        },
        "/v2/models/{name}": {
            "get": {
                "summary": "v2 model metadata",
                "parameters": [model_param],
                "responses": {
                    "200": _json(_ref("V2Metadata")),
                    "404": _error_response("unknown model"),
                },
            }
        },
        "/v2/models/{name}/infer": {
            "post": {
                "summary": "v2 inference",
                "parameters": [model_param],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("V2Request")}},
                },
                "responses": {
                    "200": _json(_ref("V2Response")),
                    "404": _error_response("unknown model"),
                    **errors,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": _get("This document", {"type": "object"}),
    }


def _feedback_path() -> dict[str, Any]:
    accepted = {
        "type": "object",
        "required": ["accepted", "duplicates"],
        "properties": {
            "accepted": {"type": "integer"},
            "duplicates": {"type": "integer"},
        },
    }
    return {
        "post": {
            "summary": "Ground truth for earlier predictions, by request id",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("FeedbackRequest")}},
            },
            "responses": {
                "202": _json(accepted, "Accepted; written with the next capture flush"),
                "400": _error_response("malformed entry (the message names index and field)"),
                "413": _error_response("body too large"),
                "503": _error_response("capture buffer full"),
            },
        }
    }


def _feedback_schemas(model: LoadedModel) -> dict[str, Any]:
    output = model.signature.output
    label: dict[str, Any] = {"type": "number"}
    if output.task != "regression":
        label = {"description": "one of the model's labels: " + ", ".join(map(str, output.labels))}
    entry = {
        "type": "object",
        "required": ["request_id", "label"],
        "properties": {
            "request_id": {"type": "string", "minLength": 1, "maxLength": 200},
            "row": {"type": "integer", "minimum": 0, "default": 0},
            "label": label,
        },
    }
    entries = {"type": "array", "minItems": 1, "items": _ref("Feedback")}
    wrapped = {"type": "object", "required": ["feedback"], "properties": {"feedback": entries}}
    return {
        "Feedback": entry,
        "FeedbackRequest": {"oneOf": [_ref("Feedback"), entries, wrapped]},
    }


def _value(column: Column) -> dict[str, Any]:
    schema: dict[str, Any] = dict(_JSON_TYPES[column.type])
    if column.nullable:
        schema["nullable"] = True
    return schema


def _schemas(model: LoadedModel) -> dict[str, Any]:
    sig = model.signature
    record = {
        "type": "object",
        "properties": {c.name: _value(c) for c in sig.inputs},
        "required": [c.name for c in sig.inputs],
    }
    rows = {"type": "array", "items": {"type": "array", "items": {}}}
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string"},
            "data": {"type": "array"},
        },
    }
    return {
        "Record": record,
        "ScoringRequest": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["dataframe_split"],
                    "properties": {
                        "dataframe_split": {
                            "type": "object",
                            "required": ["data"],
                            "properties": {
                                "columns": {"type": "array", "items": {"type": "string"}},
                                "data": rows,
                            },
                        }
                    },
                },
                {
                    "type": "object",
                    "required": ["dataframe_records"],
                    "properties": {"dataframe_records": {"type": "array", "items": _ref("Record")}},
                },
                {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {"instances": {"type": "array", "items": {}}},
                },
                {"type": "object", "required": ["inputs"], "properties": {"inputs": {}}},
            ]
        },
        "Predictions": {
            "type": "object",
            "required": ["predictions"],
            "properties": {
                "predictions": {"type": "array", "items": {}},
                "probabilities": {
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "number"}},
                },
                "labels": {"type": "array", "items": {}},
            },
        },
        "V2Request": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "inputs": {"type": "array", "items": tensor},
                "outputs": {"type": "array", "items": {"type": "object"}},
            },
        },
        "V2Response": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": tensor},
            },
        },
        "V2Metadata": {
            "type": "object",
            "required": ["name", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array"},
                "outputs": {"type": "array"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "column": {"type": "string", "nullable": True},
                    },
                }
            },
        },
    }
