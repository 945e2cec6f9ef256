"""The models ``bench/serve.py`` serves, fitted once by ``meguri.train`` on bundled data.

* ``lr``: the breast-cancer data (``bundled://breast_cancer``), no preparation steps, the zoo's
  ``linear`` candidate: median imputation, standardisation, logistic regression in one
  scikit-learn pipeline. Every peer serves this very fitted object (joblib for the Python
  peers, ``mlflow.sklearn.log_model`` for MLflow, the model package for meguri).
* ``hgb``: the same data with the spec template's ``prepare`` steps (impute, clip, ratio,
  scale, select) and the ``hist_gradient_boosting`` candidate; served by meguri only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CV_FOLDS = 3


@dataclass
class Model:
    """A fitted model and one test row to send (raw columns, as the server takes them)."""

    name: str
    result: Any  # meguri.train.TrainResult
    columns: list[str]
    row: list[float]
    expected: float  # in-process predict_proba of class 1 for ``row``
    joblib_path: Path | None = None
    package: Path | None = None


def _spec(algorithm: str, keep_prepare: bool) -> Any:
    from meguri.spec import parse_spec, render_example_spec

    text = render_example_spec("bench-serve")
    if not keep_prepare:
        start, end = text.index("  prepare:"), text.index("  # Reproducible by row hash")
        text = text[:start] + text[end:]
    start = text.index("  allowed_algorithms:")
    end = text.index("\n", text.index("]", start))
    text = text[:start] + f"  allowed_algorithms: [{algorithm}]" + text[end:]
    return parse_spec(text.replace("  cv_folds: 5\n", f"  cv_folds: {CV_FOLDS}\n", 1))


def fit(name: str, algorithm: str, keep_prepare: bool, workspace: Any) -> Model:
    from meguri.train import train

    result = train(_spec(algorithm, keep_prepare), workspace=workspace, experiment=name)
    prepared = result.prepared
    raw = prepared.raw["test"].drop(prepared.target).head(50)
    x = prepared.transform.apply(raw).collect().drop(prepared.target, strict=False)
    proba = result.model.predict_proba(x.to_numpy())[:, 1]
    pick = int(np.argmax(np.minimum(proba, 1.0 - proba)))  # the least certain: a telling check
    row = [float(v) for v in raw.row(pick)]
    return Model(name, result, raw.columns, row, float(proba[pick]))


def dump_joblib(model: Model, folder: Path) -> Path:
    import joblib

    path = folder / f"{model.name}.joblib"
    joblib.dump(model.result.model, path)
    model.joblib_path = path
    return path


def log_to_mlflow(model: Model, folder: Path) -> tuple[str, str]:
    """Log the pipeline into a fresh SQLite tracking store; (model URI, tracking URI)."""
    import mlflow
    from mlflow.models import infer_signature

    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking)
    experiment = mlflow.create_experiment("bench-serve", artifact_location=str(folder / "art"))
    x = np.asarray([model.row], dtype=np.float64)
    signature = infer_signature(x, model.result.model.predict_proba(x))
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(
            model.result.model,
            name="model",
            signature=signature,
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=["numpy.dtype"],  # MLflow 3.17 saves with skops by default
        )
    return str(info.model_uri), tracking


def build_package(model: Model, folder: Path) -> Path | None:
    """meguri's model package for ``model`` (None while ``meguri.registry`` has no writer)."""
    try:
        from meguri.registry._package import build_package as build
    except ImportError:
        return None
    model.package = folder / f"pkg-{model.name}"
    build(model.result, model.package)
    return model.package


def sklearn_one_row_us(model: Model, repeat: int) -> float:
    """Median µs of ``predict_proba`` on one row, in process (the issue's ~280 µs)."""
    import time

    if model.joblib_path is None:
        return float("nan")
    x = np.asarray([model.row], dtype=np.float64)
    estimator = model.result.model
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        estimator.predict_proba(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def onnx_one_row_us(model: Model, repeat: int) -> float | None:
    """Median µs of the package's ``LoadedModel.predict`` on one row (None: no reader yet)."""
    import time

    try:
        from meguri.serve._package import load_package
    except ImportError:
        return None
    if model.package is None:
        return None
    import hashlib

    digest = hashlib.sha256((model.package / "model.json").read_bytes()).hexdigest()
    loaded = load_package(model.package, expected_digest=digest, name=model.name, version="1")
    batch = {
        c: np.asarray([v], dtype=np.float64) for c, v in zip(model.columns, model.row, strict=True)
    }
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        loaded.predict(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)
