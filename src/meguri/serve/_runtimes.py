"""The runtimes a package can name, built from its files' bytes (already verified).

``model.json`` says which: ``runtime`` and ``estimator`` (``file``, and for ONNX the graph's
``input`` name and dtype and its ``probabilities`` / ``value`` outputs):

``onnx``
    ``pipeline.onnx``: transform and estimator in one graph. Its feeds (the entry's ``inputs``,
    see :mod:`meguri.data._transform_onnx`): one ``float64 [n, k]`` matrix ``input`` of the
    numeric input columns (null as NaN), and for text columns a ``bool [n, t]`` null mask plus
    one ``string [n, 1]`` tensor each (null as ``""``). Packages without ``inputs`` stack every
    signature column into ``input``.
``onnx+transform``
    the transform, then ``estimator.onnx`` on the transformed columns.
``skops`` / ``lightgbm`` / ``xgboost``
    the transform, then ``estimator.skops`` (loaded with :data:`SKOPS_ALLOWED` only),
    ``estimator.lgb.txt`` or ``estimator.xgb.json`` in their libraries' own loaders.

For the last three, the transform is ``transform.onnx`` in ONNX Runtime when the entry names
one (``estimator.transform``: ``file``, ``input``, ``inputs``, ``output``), else
``transform.json`` on Polars.

Nothing here unpickles. Classification values are ``labels[argmax(probabilities)]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from meguri.errors import PackageError
from meguri.serve._model import Array, LoadedModel, Prediction
from meguri.serve._signature import Signature

if TYPE_CHECKING:
    import polars as pl

    from meguri.data._transform import FittedTransform

__all__ = [
    "RUNTIMES",
    "SKOPS_ALLOWED",
    "build_model",
    "check_skops_types",
    "onnx_features",
    "onnx_feeder",
    "polars_features",
]

Scorer = Callable[[Array], tuple[Array | None, Array]]
"""A matrix of transformed columns → (probabilities or ``None``, raw values)."""

RUNTIMES = ("onnx", "onnx+transform", "skops", "lightgbm", "xgboost")

#: The only types a ``estimator.skops`` file may hold: the zoo's scikit-learn estimators, their
#: fitted parts and numpy scalars. skops' ``get_untrusted_types`` must list a subset of these.
SKOPS_ALLOWED: frozenset[str] = frozenset(
    {
        "builtins.slice",
        "numpy.dtype",
        "numpy.float64",
        "numpy.int64",
        "numpy.random.mtrand.RandomState",
        "numpy.random._generator.Generator",
        "numpy.random._pcg64.PCG64",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.Interval",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.MultinomialLogit",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn._loss._loss.CyHalfMultinomialLoss",
        "sklearn._loss._loss.CyHalfSquaredError",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn._loss.loss.HalfSquaredError",
        "sklearn.compose._target.TransformedTargetRegressor",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.ensemble._forest.RandomForestRegressor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.impute._base.SimpleImputer",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.linear_model._ridge.Ridge",
        "sklearn.neighbors._classification.KNeighborsClassifier",
        "sklearn.neighbors._regression.KNeighborsRegressor",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
        "sklearn.neural_network._multilayer_perceptron.MLPRegressor",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._label.LabelBinarizer",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._classes.DecisionTreeRegressor",
        "sklearn.tree._tree.Tree",
        "sklearn.utils._bunch.Bunch",
    }
)


_NULL: Any = None  # compared elementwise with object arrays
Feeder = Callable[[Mapping[str, Array]], dict[str, Array]]
"""A columnar batch → the feeds of an ONNX graph over the input columns."""
Features = Callable[[Mapping[str, Array]], Array]
"""A columnar batch → the matrix of transformed columns."""


@dataclass
class MatrixModel(LoadedModel):
    """``onnx``: the input columns fed to one ONNX Runtime session (transform and estimator)."""

    feeder: Feeder | None = field(default=None, repr=False)
    scorer: Callable[[dict[str, Array]], tuple[Array | None, Array]] | None = field(
        default=None, repr=False
    )

    def predict(self, batch: Mapping[str, Array]) -> Prediction:
        assert self.feeder is not None and self.scorer is not None
        return _prediction(self.signature, *self.scorer(self.feeder(batch)))


@dataclass
class TransformModel(LoadedModel):
    """The transform (ONNX or Polars), then an estimator on the transformed columns."""

    features: Features | None = field(default=None, repr=False)
    scorer: Scorer | None = field(default=None, repr=False)

    def predict(self, batch: Mapping[str, Array]) -> Prediction:
        assert self.features is not None and self.scorer is not None
        return _prediction(self.signature, *self.scorer(self.features(batch)))


def polars_features(transform: FittedTransform, signature: Signature) -> Features:
    """``transform.json`` on Polars: a one-row frame per request."""
    import polars as pl

    names = signature.names

    def features(batch: Mapping[str, Array]) -> Array:
        frame = pl.DataFrame([_series(name, batch[name]) for name in names])
        matrix = transform.apply(frame).collect().to_numpy()
        return matrix.astype(np.float64, copy=False)

    return features


def onnx_feeder(entry: Mapping[str, Any], signature: Signature) -> Feeder:
    """The feeds of a graph over the input columns, as the entry's ``inputs`` describe."""
    inputs: Mapping[str, Any] = entry.get("inputs") or {"numeric": signature.names, "text": {}}
    numeric, matrix = list(inputs["numeric"]), str(entry["input"])
    text: dict[str, str] = dict(inputs.get("text") or {})
    nulls = inputs.get("nulls")
    stack = _stacker(numeric, np.dtype(entry.get("input_dtype", "float64")))
    names = list(text.values())
    if not text:
        return lambda batch: {matrix: stack(batch)}

    def feed(batch: Mapping[str, Array]) -> dict[str, Array]:
        values = np.stack([batch[c] for c in text], axis=1).astype(object, copy=False)
        mask = values == _NULL
        strings = np.where(mask, "", values)
        feeds = {matrix: stack(batch), str(nulls): mask}
        for j, name in enumerate(names):
            feeds[name] = strings[:, j : j + 1]
        return feeds

    return feed


def _stacker(names: list[str], dtype: np.dtype[Any]) -> Callable[[Mapping[str, Array]], Array]:
    """The columns ``names`` of a batch as one ``[n, k]`` matrix; requests of a few rows reuse
    their buffer."""
    buffers: dict[int, Array] = {}

    def stack(batch: Mapping[str, Array]) -> Array:
        columns = [batch[name] for name in names]
        n = len(columns[0]) if columns else len(next(iter(batch.values())))
        out = buffers.get(n)
        if out is None:
            out = np.empty((n, len(columns)), dtype=dtype)
            if n <= 64:
                buffers[n] = out
        if columns:
            np.stack(columns, axis=1, out=out, casting="same_kind")
        return out

    return stack


def _series(name: str, values: Array) -> pl.Series:
    import polars as pl

    if values.dtype.kind == "f":
        return pl.Series(name, values, nan_to_null=True)
    return pl.Series(name, values)


def _prediction(signature: Signature, proba: Array | None, raw: Array) -> Prediction:
    if signature.output.task == "regression":
        return Prediction(np.asarray(raw, dtype=np.float64).reshape(-1))
    assert proba is not None
    labels = np.asarray(signature.output.labels)
    return Prediction(labels[np.argmax(proba, axis=1)], proba)


# -- building ---------------------------------------------------------------------------------


def build_model(
    document: Mapping[str, Any], files: Mapping[str, bytes], *, name: str, version: str
) -> LoadedModel:
    """The :class:`LoadedModel` of a package from ``model.json`` and its files' bytes."""
    runtime = document.get("runtime")
    if runtime not in RUNTIMES:
        raise PackageError(
            f"model.json: unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)}); "
            "upgrade meguri or repackage the model"
        )
    signature = Signature.from_dict(document["signature"])
    estimator: dict[str, Any] = dict(document["estimator"])
    blob = files[estimator["file"]]
    common: dict[str, Any] = {
        "name": name,
        "version": version,
        "signature": signature,
        "runtime": runtime,
        "metadata": dict(document),
    }
    if runtime == "onnx":
        run = _onnx_run(blob, estimator, signature)
        return MatrixModel(**common, feeder=onnx_feeder(estimator, signature), scorer=run)
    scorer = _SCORERS[runtime](blob, estimator, signature)
    return TransformModel(**common, features=_features(estimator, files, signature), scorer=scorer)


def _features(
    estimator: Mapping[str, Any], files: Mapping[str, bytes], signature: Signature
) -> Features:
    entry = estimator.get("transform")
    if not entry:
        # Only packages whose transform has no ONNX form need Polars and meguri.data.
        from meguri.data._transform import FittedTransform

        return polars_features(FittedTransform.from_json(files["transform.json"]), signature)
    return onnx_features(files[entry["file"]], entry, signature)


def onnx_features(blob: bytes, entry: Mapping[str, Any], signature: Signature) -> Features:
    """``transform.onnx`` in ONNX Runtime: feeds built as ``entry`` says, its ``output``."""
    run = _session(blob, str(entry["file"])).run
    feeder, wanted = onnx_feeder(entry, signature), [str(entry["output"])]
    return lambda batch: run(wanted, feeder(batch))[0]


def _session(blob: bytes, file: str) -> Any:
    import onnxruntime as ort  # type: ignore[import-untyped,unused-ignore]

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise PackageError(f"{file}: ONNX Runtime cannot load it: {exc}") from exc


def _onnx_run(
    blob: bytes, estimator: Mapping[str, Any], signature: Signature
) -> Callable[[dict[str, Array]], tuple[Array | None, Array]]:
    """The session's ``probabilities`` (as float64) or ``value`` output on a dict of feeds."""
    run = _session(blob, str(estimator["file"])).run
    proba, value = estimator.get("probabilities"), str(estimator["value"])
    wanted = [value] if proba is None else [str(proba)]

    def score(feeds: dict[str, Array]) -> tuple[Array | None, Array]:
        (out,) = run(wanted, feeds)
        return (None, out) if proba is None else (np.asarray(out, dtype=np.float64), out)

    return score


def _onnx(blob: bytes, estimator: Mapping[str, Any], signature: Signature) -> Scorer:
    """``estimator.onnx`` on the transformed matrix."""
    score = _onnx_run(blob, estimator, signature)
    feed, dtype = str(estimator["input"]), np.dtype(estimator.get("input_dtype", "float64"))
    return lambda x: score({feed: x if x.dtype == dtype else x.astype(dtype)})


def _skops(blob: bytes, estimator: Mapping[str, Any], signature: Signature) -> Scorer:
    import skops.io  # type: ignore[import-untyped,unused-ignore]

    check_skops_types(blob)
    try:
        model = skops.io.loads(blob, trusted=sorted(SKOPS_ALLOWED))
    except Exception as exc:  # skops raises several unrelated types
        raise PackageError(f"{estimator['file']}: skops cannot load it: {exc}") from exc
    if signature.output.task == "regression":
        return lambda x: (None, model.predict(x))
    return lambda x: (model.predict_proba(x), x)


def check_skops_types(blob: bytes) -> None:
    """Refuse a skops file holding any type outside :data:`SKOPS_ALLOWED`, before loading."""
    import skops.io  # type: ignore[import-untyped,unused-ignore]

    try:
        found = set(skops.io.get_untrusted_types(data=blob))
    except Exception as exc:
        raise PackageError(f"estimator.skops is not a readable skops file: {exc}") from exc
    refused = sorted(found - SKOPS_ALLOWED)
    if refused:
        raise PackageError(
            f"estimator.skops holds types outside meguri's allowlist: {', '.join(refused)}; "
            "it was not built by meguri's packaging: rebuild the package from the training run"
        )


def _lightgbm(blob: bytes, estimator: Mapping[str, Any], signature: Signature) -> Scorer:
    import lightgbm

    booster = lightgbm.Booster(model_str=blob.decode())
    return _booster_scorer(lambda x: booster.predict(x, num_threads=1), signature)


def _xgboost(blob: bytes, estimator: Mapping[str, Any], signature: Signature) -> Scorer:
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray(blob))
    booster.set_param({"nthread": 1})
    return _booster_scorer(lambda x: booster.inplace_predict(x), signature)


def _booster_scorer(raw: Callable[[Array], Any], signature: Signature) -> Scorer:
    """Boosters give P(class 1) for binary tasks, ``[n, k]`` for multiclass, values else."""
    task = signature.output.task

    def score(x: Array) -> tuple[Array | None, Array]:
        out = np.asarray(raw(x), dtype=np.float64)
        if task == "regression":
            return None, out
        if task == "binary" and out.ndim == 1:
            return np.column_stack([1.0 - out, out]), out
        return out, out

    return score


_SCORERS: dict[str, Callable[[bytes, Mapping[str, Any], Signature], Scorer]] = {
    "onnx": _onnx,
    "onnx+transform": _onnx,
    "skops": _skops,
    "lightgbm": _lightgbm,
    "xgboost": _xgboost,
}
