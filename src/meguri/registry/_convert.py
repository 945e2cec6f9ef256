"""Estimators to ONNX: skl2onnx for scikit-learn, onnxmltools for LightGBM and XGBoost.

:func:`estimator_to_onnx` returns the graph and how to call it (input name and dtype, the
probabilities or value output); :func:`merge_pipeline` puts the transform graph in front.
scikit-learn models are converted on ``float64`` inputs (exact arithmetic); the gradient
boosting libraries' converters take ``float32`` only, which verification may then refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto, helper

from meguri.data._transform_onnx import INPUT, OUTPUT
from meguri.errors import PackageError

__all__ = ["OnnxEstimator", "estimator_to_onnx", "merge_pipeline"]

_OPSET = {"": 17, "ai.onnx.ml": 3}
_BOOSTER_OPSET = 15


@dataclass(frozen=True)
class OnnxEstimator:
    model: ModelProto
    input: str
    input_dtype: str
    probabilities: str | None
    value: str

    def call(self) -> dict[str, Any]:
        """The ``estimator`` entry of ``model.json`` (without ``file``)."""
        return {
            "input": self.input,
            "input_dtype": self.input_dtype,
            "probabilities": self.probabilities,
            "value": self.value,
        }


def estimator_to_onnx(model: Any, n_features: int, *, classifier: bool) -> OnnxEstimator:
    """``model`` as ONNX; a :class:`PackageError` when no converter handles it."""
    library = type(model).__module__.split(".")[0]
    try:
        if library in ("lightgbm", "xgboost"):
            graph = _booster(model, n_features, library)
        else:
            graph = _sklearn(model, n_features, classifier)
    except Exception as exc:  # converters raise anything from RuntimeError to ValueError
        raise PackageError(f"no exact ONNX conversion of {type(model).__name__}: {exc}") from exc
    return _described(graph, classifier)


def _sklearn(model: Any, n_features: int, classifier: bool) -> ModelProto:
    """float64 inputs where ONNX Runtime has float64 kernels for every node, else float32."""
    from skl2onnx import to_onnx  # type: ignore[import-untyped,unused-ignore]
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType  # type: ignore[import-untyped,unused-ignore]

    _register_double_imputer()
    _register_tree_attributes()
    options = {"zipmap": False} if classifier else None
    failure: Exception | None = None
    for kind in (DoubleTensorType, FloatTensorType):
        graph: ModelProto = to_onnx(
            model,
            initial_types=[("X", kind([None, n_features]))],
            options=options,
            target_opset=_OPSET,
        )
        try:
            _loads(graph)
        except Exception as exc:  # onnxruntime's errors are untyped
            failure = exc
            continue
        return graph
    raise PackageError(f"ONNX Runtime cannot run the converted graph: {failure}")


def _loads(graph: ModelProto) -> None:
    import onnxruntime as ort  # type: ignore[import-untyped,unused-ignore]

    options = ort.SessionOptions()
    options.log_severity_level = 3
    ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _booster(model: Any, n_features: int, library: str) -> ModelProto:
    import onnxmltools  # type: ignore[import-untyped,unused-ignore]
    from onnxmltools.convert.common.data_types import FloatTensorType  # type: ignore[import-untyped,unused-ignore]

    convert = onnxmltools.convert_lightgbm if library == "lightgbm" else onnxmltools.convert_xgboost
    extra = {"zipmap": False} if library == "lightgbm" else {}
    graph: ModelProto = convert(
        model,
        initial_types=[("X", FloatTensorType([None, n_features]))],
        target_opset=_BOOSTER_OPSET,
        **extra,
    )
    return graph


def _described(graph: ModelProto, classifier: bool) -> OnnxEstimator:
    feed = graph.graph.input[0]
    dtype = "float64" if feed.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE else "float32"
    outputs = [o.name for o in graph.graph.output]
    if not classifier:
        return OnnxEstimator(graph, feed.name, dtype, None, outputs[0])
    proba = next((o for o in outputs if "prob" in o), outputs[-1])
    return OnnxEstimator(graph, feed.name, dtype, proba, outputs[0])


def merge_pipeline(transform: ModelProto, estimator: OnnxEstimator) -> OnnxEstimator:
    """One graph: the transform's ``features`` (cast to the estimator's dtype) into it."""
    try:
        return _merge(transform, _at_least(estimator, 13))
    except Exception as exc:  # onnx raises ValueError, ConvertError, checker errors
        raise PackageError(f"cannot merge the transform and estimator graphs: {exc}") from exc


def _at_least(estimator: OnnxEstimator, version: int) -> OnnxEstimator:
    """The estimator graph at default-domain opset ``version`` or above (the transform's ops
    need 13: ``ReduceSum`` takes its axes as an input)."""
    current = next((o.version for o in estimator.model.opset_import if o.domain == ""), version)
    if current >= version:
        return estimator
    from onnx import version_converter

    graph = version_converter.convert_version(estimator.model, version)
    return OnnxEstimator(
        graph, estimator.input, estimator.input_dtype, estimator.probabilities, estimator.value
    )


def _merge(transform: ModelProto, estimator: OnnxEstimator) -> OnnxEstimator:
    head = onnx.ModelProto()
    head.CopyFrom(transform)
    head.ir_version = estimator.model.ir_version
    tail = onnx.ModelProto()
    tail.CopyFrom(estimator.model)
    _same_opsets(head, tail)
    feed = OUTPUT
    if estimator.input_dtype == "float32":
        feed = _cast_output(head)
    merged = onnx.compose.merge_models(head, tail, io_map=[(feed, estimator.input)], prefix2="est_")
    proba = None if estimator.probabilities is None else f"est_{estimator.probabilities}"
    return OnnxEstimator(merged, INPUT, "float64", proba, f"est_{estimator.value}")


def _same_opsets(*models: ModelProto) -> None:
    """Every model imports every domain any of them uses, at the highest version (13 at least
    for the default one): ``merge_models`` wants them equal, and the ops used here read the
    same in those versions (``ai.onnx.ml`` 1 to 3: tree ensembles, ``LabelEncoder`` from 2)."""
    versions: dict[str, int] = {"": 13}
    for model in models:
        for entry in model.opset_import:
            domain = "" if entry.domain == "ai.onnx" else entry.domain
            versions[domain] = max(versions.get(domain, 0), entry.version)
    for model in models:
        del model.opset_import[:]
        model.opset_import.extend(helper.make_opsetid(d, v) for d, v in versions.items())


def _cast_output(head: ModelProto) -> str:
    name = f"{OUTPUT}_float32"
    head.graph.node.append(helper.make_node("Cast", [OUTPUT], [name], to=onnx.TensorProto.FLOAT))
    shape = [d.dim_param or d.dim_value for d in head.graph.output[0].type.tensor_type.shape.dim]
    del head.graph.output[:]
    head.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape))
    return name


_registered = False


def _register_double_imputer() -> None:
    """SimpleImputer on float64 as ``Where(IsNaN(x), statistics, x)``: the ``ai.onnx.ml``
    Imputer skl2onnx emits has no float64 kernel in ONNX Runtime."""
    global _registered
    if _registered:
        return
    from skl2onnx import update_registered_converter  # type: ignore[import-untyped,unused-ignore]
    from skl2onnx.common.data_types import DoubleTensorType  # type: ignore[import-untyped,unused-ignore]
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer  # type: ignore[import-untyped,unused-ignore]
    from skl2onnx.shape_calculators.imputer import calculate_sklearn_imputer_output_shapes  # type: ignore[import-untyped,unused-ignore]
    from sklearn.impute import SimpleImputer

    def convert(scope: Any, operator: Any, container: Any) -> None:
        if not isinstance(operator.inputs[0].type, DoubleTensorType):
            convert_sklearn_imputer(scope, operator, container)
            return
        stats = np.asarray(operator.raw_operator.statistics_, dtype=np.float64)
        fill = scope.get_unique_variable_name("fill")
        missing = scope.get_unique_variable_name("missing")
        container.add_initializer(fill, onnx.TensorProto.DOUBLE, [stats.size], stats.tolist())
        container.add_node("IsNaN", [operator.inputs[0].full_name], [missing])
        sources = [missing, fill, operator.inputs[0].full_name]
        container.add_node("Where", sources, [operator.outputs[0].full_name])

    update_registered_converter(
        SimpleImputer,
        "SklearnImputer",
        calculate_sklearn_imputer_output_shapes,
        convert,
        overwrite=True,
    )
    _registered = True


class _PlainAttributes:
    """A converter container whose ``add_node`` turns booleans and numpy scalars in list
    attributes into Python numbers (skl2onnx's tree converter passes booleans among the ints
    of ``nodes_missing_value_tracks_true`` for HistGradientBoosting, which ``onnx.helper``
    refuses)."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, *args: Any, **attrs: Any) -> Any:
        plain = {k: [_scalar(v) for v in a] if isinstance(a, list) else a for k, a in attrs.items()}
        return self._container.add_node(*args, **plain)


def _scalar(value: Any) -> Any:
    if isinstance(value, bool | np.bool_):
        return int(value)
    return value.item() if isinstance(value, np.generic) else value


_trees_registered = False


def _register_tree_attributes() -> None:
    global _trees_registered
    if _trees_registered:
        return
    from skl2onnx import update_registered_converter  # type: ignore[import-untyped,unused-ignore]
    from skl2onnx.common._registration import get_converter, get_shape_calculator  # type: ignore[import-untyped,unused-ignore]
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    for model in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
        alias = f"Sklearn{model.__name__}"
        original = get_converter(alias)
        update_registered_converter(
            model,
            alias,
            get_shape_calculator(alias),
            _plain_converter(original),
            options=_allowed_options(original),
            overwrite=True,
        )
    _trees_registered = True


def _allowed_options(converter: Any) -> Any:
    allowed = getattr(converter, "get_allowed_options", None)
    return None if allowed is None else allowed()


def _plain_converter(inner: Any) -> Any:
    def convert(scope: Any, operator: Any, container: Any) -> None:
        inner(scope, operator, _PlainAttributes(container))

    return convert
