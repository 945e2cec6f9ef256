"""Write a model package from a training result, choosing the safest exact format.

::

    document = build_package(result, Path("pkg"))       # the folder and its model.json
    digest = log_model(result, workspace=ws)            # the files as run artifacts model/...

Layout (``format: meguri.model``, ``format_version: 1``)::

    model.json             task, signature, metrics, intervals, algorithm, params, lineage,
                           dependencies, runtime, estimator (file and how to call it),
                           files {path: {sha256, size}}, checks (every format tried)
    transform.json         the fitted data.prepare chain (FittedTransform.to_json)
    pipeline.onnx          transform + estimator in one graph        (runtime "onnx"), or
    estimator.onnx         the estimator on transformed columns      ("onnx+transform"), or
    estimator.lgb.txt / estimator.xgb.json                            ("lightgbm" / "xgboost"), or
    estimator.skops        loaded with an explicit allowlist          ("skops")
    baseline/profile.json  the training rows' profile, monitoring's reference

Formats are tried in that order; each is loaded back through the server's own loader
(:func:`meguri.serve._runtimes.build_model`) and must reproduce the Python path (the fitted
transform on Polars, then ``predict_proba`` / ``predict``) on the held-out rows within
:data:`TOLERANCE`: the largest absolute difference of probabilities, or for regression the
largest difference relative to ``max(1, |value|)``. The package digest is the sha256 of
``model.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from meguri.data import DriftReference, profile
from meguri.data._reference import drift_kind, reference_sample
from meguri.data._steps_base import parse_dtype
from meguri.data._transform import FittedTransform
from meguri.data._transform_onnx import INPUT, OUTPUT, graph_inputs, transform_to_onnx
from meguri.errors import PackageError
from meguri.registry._convert import OnnxEstimator, estimator_to_onnx, merge_pipeline
from meguri.serve._package import FORMAT, FORMAT_VERSION, MODEL_FILE
from meguri.serve._runtimes import build_model, onnx_features
from meguri.serve._signature import Column, Output, Signature
from meguri.store.metadata import ArtifactRef

if TYPE_CHECKING:
    from meguri.store import Workspace
    from meguri.train._train import TrainResult

__all__ = ["DEPENDENCIES", "TOLERANCE", "build_package", "log_model", "package_digest"]

TOLERANCE = 1e-5
TRANSFORM_ONNX = "transform.onnx"
DEPENDENCIES = (
    "meguri",
    "numpy",
    "polars",
    "scikit-learn",
    "onnx",
    "onnxruntime",
    "skl2onnx",
    "onnxmltools",
    "skops",
    "lightgbm",
    "xgboost",
)
Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class _Format:
    """One candidate estimator format: its runtime, files and ``estimator`` entry."""

    runtime: str
    files: dict[str, bytes]
    estimator: dict[str, Any]


@dataclass(frozen=True)
class _HeldOut:
    part: str
    batch: dict[str, Array]
    expected_proba: Array | None
    expected_values: Array
    features: Array
    """The transformed columns (Polars), as the estimator saw them."""


def build_package(
    result: TrainResult, dest: Path, *, spec_version_id: str | None = None
) -> dict[str, Any]:
    """Write the package of ``result`` into the new folder ``dest`` (atomically: built in a
    sibling temp folder, then renamed); return its ``model.json`` document."""
    dest = Path(dest)
    _check_dest(dest)
    files, document = _contents(result, spec_version_id)
    temp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        for relative, data in {**files, MODEL_FILE: _dumps(document)}.items():
            path = temp / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if dest.exists():
            dest.rmdir()
        temp.rename(dest)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return document


def _check_dest(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise PackageError(f"{dest} exists and is not an empty folder; choose a new destination")
    dest.parent.mkdir(parents=True, exist_ok=True)


def log_model(result: TrainResult, workspace: Workspace) -> str:
    """Build the package of ``result`` and log each file as an artifact ``model/<path>`` of
    its (finished) run; return the package digest (sha256 of ``model.json``).

    The files go from memory (where :func:`build_package` has them too) straight to the
    artifact store: no copy of the package is written anywhere on the way, so with encryption
    at rest on the model exists on disk only sealed."""
    run = workspace.metadata.runs.get_run(result.run_id)
    files, document = _contents(result, run.spec_version_id)
    files[MODEL_FILE] = _dumps(document)
    for relative, data in sorted(files.items()):
        stored = workspace.artifacts.put_bytes(data)
        kind = "application/json" if relative.endswith(".json") else "application/octet-stream"
        ref = ArtifactRef(f"model/{relative}", stored.digest, stored.size, kind, time.time())
        workspace.metadata.runs.add_artifact(result.run_id, ref)
    return package_digest(files[MODEL_FILE])


def package_digest(model_json: bytes) -> str:
    """The package digest: the sha256 (hex) of its ``model.json`` bytes."""
    return hashlib.sha256(model_json).hexdigest()


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=False, allow_nan=False).encode()


# -- contents ---------------------------------------------------------------------------------


def _contents(
    result: TrainResult, spec_version_id: str | None
) -> tuple[dict[str, bytes], dict[str, Any]]:
    transform = result.prepared.transform
    signature = signature_of(result.model, transform)
    held = _held_out(result, signature)
    chosen, checks = _choose(result, signature, held)
    files = {
        "transform.json": transform.to_json(),
        **chosen.files,
        "baseline/profile.json": _baseline(result),
        **_drift_baseline(result, signature, held),
    }
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": time.time(),
        "task": signature.output.task,
        "signature": signature.to_dict(),
        "runtime": chosen.runtime,
        "estimator": chosen.estimator,
        "algorithm": result.best.name,
        "params": _plain(result.best.params),
        "metrics": dict(result.metrics),
        "intervals": {k: list(v) for k, v in result.intervals.items()},
        "lineage": _lineage(result, spec_version_id),
        "dependencies": _dependencies(),
        "checks": checks,
        "files": {path: _entry(data) for path, data in files.items()},
    }
    return files, _finite(document)


def signature_of(model: Any, transform: FittedTransform) -> Signature:
    """Inputs: the transform's input columns and logical types; output: task and labels."""
    inputs = tuple(Column(c, _logical(t)) for c, t in transform.input_schema.items())
    classes = getattr(model, "classes_", None)
    if classes is None:
        return Signature(inputs, Output("regression"))
    labels = tuple(np.asarray(classes).tolist())
    return Signature(inputs, Output("binary" if len(labels) == 2 else "multiclass", labels))


def _logical(text: str) -> Any:
    dtype = parse_dtype(text)
    if dtype is None:
        raise PackageError(f"input dtype {text} has no logical type; cast it in the source")
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_integer():
        return "long"
    if dtype.is_numeric():
        return "double"
    return "datetime" if dtype.is_temporal() else "string"


def _entry(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _lineage(result: TrainResult, spec_version_id: str | None) -> dict[str, Any]:
    prepared = result.prepared
    return {
        "run_id": result.run_id,
        "candidate_run_id": result.best.run_id,
        "spec_version_id": spec_version_id,
        "source_dataset_version": prepared.source.id,
        "dataset_versions": {part: v.id for part, v in prepared.parts.items()},
        "transform_digest": prepared.transform_digest,
    }


def _dependencies() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in DEPENDENCIES:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


def _baseline(result: TrainResult) -> bytes:
    train = result.prepared.raw.get("train")
    if train is None:
        return result.prepared.profile.to_json()
    return profile(train, target=result.prepared.target).to_json()


def _drift_baseline(result: TrainResult, signature: Signature, held: _HeldOut) -> dict[str, bytes]:
    """``baseline/reference.json``: drift statistics of the training rows' inputs and of the
    model's predictions on the held-out rows; ``baseline/reference_sample.parquet``: a uniform
    sample of those rows for the multivariate check. None without training rows."""
    train = result.prepared.raw.get("train")
    if train is None or train.height == 0:
        return {}
    columns = [c.name for c in signature.inputs if drift_kind(train.schema[c.name]) is not None]
    reference = DriftReference.from_frame(train, columns, prediction=held.expected_values)
    sample = io.BytesIO()
    reference_sample(train, columns).write_parquet(sample)
    return {
        "baseline/reference.json": reference.to_json(),
        "baseline/reference_sample.parquet": sample.getvalue(),
    }


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: np.asarray(v).tolist()))


def _finite(value: Any) -> Any:
    """NaN and infinities as ``null`` (model.json is strict JSON)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# -- held-out rows and verification -----------------------------------------------------------


def _held_out(result: TrainResult, signature: Signature) -> _HeldOut:
    raw = result.prepared.raw
    part = next((p for p in ("validation", "test") if p in raw and raw[p].height), None)
    if part is None:
        raise PackageError(
            "the training result holds no validation or test rows to verify the package on; "
            "train with a split that keeps some (data.split)"
        )
    frame = raw[part]
    batch = {c.name: column_array(frame.get_column(c.name), c.type) for c in signature.inputs}
    matrix = result.prepared.transform.apply(frame).collect()
    x = matrix.select(list(result.prepared.transform.output_schema)).to_numpy()
    if signature.output.task == "regression":
        values = np.asarray(result.model.predict(x), dtype=np.float64)
        return _HeldOut(part, batch, None, values, x)
    proba = np.asarray(result.model.predict_proba(x), dtype=np.float64)
    return _HeldOut(part, batch, proba, np.asarray(result.model.predict(x)), x)


def column_array(series: pl.Series, logical: str) -> Array:
    """A column as the server hands it to ``predict`` (see meguri.serve._signature)."""
    if logical in ("double", "long"):
        return series.cast(pl.Float64).to_numpy().astype(np.float64, copy=False)
    if logical == "string":
        return np.asarray(series.cast(pl.String).to_list(), dtype=object)
    return series.to_numpy()


def _verify(fmt: _Format, signature: Signature, transform: bytes, held: _HeldOut) -> float:
    document = {
        "runtime": fmt.runtime,
        "signature": signature.to_dict(),
        "estimator": fmt.estimator,
    }
    model = build_model(document, {"transform.json": transform, **fmt.files}, name="", version="")
    got = model.predict(held.batch)
    if held.expected_proba is None:
        scale = np.maximum(1.0, np.abs(held.expected_values))
        return float(np.max(np.abs(got.values - held.expected_values) / scale))
    assert got.probabilities is not None
    return float(np.max(np.abs(got.probabilities - held.expected_proba)))


def _choose(
    result: TrainResult, signature: Signature, held: _HeldOut
) -> tuple[_Format, list[dict[str, Any]]]:
    graph, checks = _transform_graph(result.prepared.transform, signature, held)
    transform = result.prepared.transform.to_json()
    for name, make in _candidates(result, signature, graph):
        check: dict[str, Any] = {"check": "exactness", "format": name, "part": held.part}
        try:
            fmt = make()
            if fmt is None:
                continue
            diff = _verify(fmt, signature, transform, held)
        except PackageError as exc:
            checks.append({**check, "passed": False, "error": str(exc)})
            continue
        passed = bool(diff <= TOLERANCE)
        metric = "max_abs_diff" if held.expected_proba is not None else "max_rel_diff"
        rows = len(held.expected_values)
        checks.append(
            {**check, "rows": rows, metric: diff, "tolerance": TOLERANCE, "passed": passed}
        )
        if passed:
            return fmt, checks
    raise PackageError(
        f"no package format reproduces {result.best.name}'s predictions within {TOLERANCE}: "
        f"{checks}; report this with the model's algorithm and parameters"
    )


def _transform_graph(
    transform: FittedTransform, signature: Signature, held: _HeldOut
) -> tuple[_Format | None, list[dict[str, Any]]]:
    """``transform.onnx`` (files and entry) when the transform converts and gives features
    bit-identical to Polars on the held-out rows; the check either way."""
    head, inputs = transform_to_onnx(transform), graph_inputs(transform)
    if head is None or inputs is None:
        return None, []
    blob = head.SerializeToString()
    entry = {"file": TRANSFORM_ONNX, "input": INPUT, "inputs": inputs.to_dict(), "output": OUTPUT}
    got = onnx_features(blob, entry, signature)(held.batch)
    identical = got.shape == held.features.shape and bool(
        np.array_equal(got, held.features.astype(np.float64), equal_nan=True)
    )
    check = {
        "check": "transform_exactness",
        "format": TRANSFORM_ONNX,
        "part": held.part,
        "rows": int(got.shape[0]),
        "identical": identical,
        "passed": identical,
    }
    fmt = _Format("transform", {TRANSFORM_ONNX: blob}, entry) if identical else None
    return fmt, [check]


def _candidates(
    result: TrainResult, signature: Signature, graph: _Format | None
) -> Iterator[tuple[str, Callable[[], _Format | None]]]:
    classifier = signature.output.task != "regression"
    model, transform = result.model, result.prepared.transform
    merge = graph is not None  # the transform converts exactly
    yield "onnx", lambda: _onnx_format(model, transform, classifier, merge)
    library = type(model).__module__.split(".")[0]
    if library == "lightgbm":
        yield "lightgbm", lambda: _with_transform(_lightgbm_format(model), graph)
    if library == "xgboost":
        yield "xgboost", lambda: _with_transform(_xgboost_format(model), graph)
    yield "skops", lambda: _with_transform(_skops_format(model), graph)


def _onnx_format(model: Any, transform: FittedTransform, classifier: bool, merge: bool) -> _Format:
    """``pipeline.onnx`` (the transform merged in front) or ``estimator.onnx``."""
    estimator = estimator_to_onnx(model, len(transform.output_schema), classifier=classifier)
    head, inputs = transform_to_onnx(transform), graph_inputs(transform)
    if not merge or head is None or inputs is None:
        return _Format("onnx+transform", *_onnx_file("estimator.onnx", estimator))
    files, entry = _onnx_file("pipeline.onnx", merge_pipeline(head, estimator))
    return _Format("onnx", files, {**entry, "inputs": inputs.to_dict()})


def _onnx_file(name: str, graph: OnnxEstimator) -> tuple[dict[str, bytes], dict[str, Any]]:
    return {name: graph.model.SerializeToString()}, {"file": name, **graph.call()}


def _with_transform(fmt: _Format, graph: _Format | None) -> _Format:
    """``fmt`` with ``transform.onnx`` beside it (ONNX Runtime instead of Polars at serving)."""
    if graph is None:
        return fmt
    return _Format(
        fmt.runtime, {**fmt.files, **graph.files}, {**fmt.estimator, "transform": graph.estimator}
    )


def _lightgbm_format(model: Any) -> _Format:
    text: str = model.booster_.model_to_string()
    name = "estimator.lgb.txt"
    return _Format("lightgbm", {name: text.encode()}, {"file": name})


def _xgboost_format(model: Any) -> _Format:
    raw = bytes(model.get_booster().save_raw(raw_format="json"))
    name = "estimator.xgb.json"
    return _Format("xgboost", {name: raw}, {"file": name})


def _skops_format(model: Any) -> _Format:
    import skops.io  # type: ignore[import-untyped,unused-ignore]

    name = "estimator.skops"
    return _Format("skops", {name: skops.io.dumps(model)}, {"file": name})
