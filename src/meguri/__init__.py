"""meguri: one full turn of a machine-learning project.

The public SDK::

    import meguri

    meguri.init()                                  # the project in this folder (.meguri/)
    with meguri.start_run(experiment="baseline") as run:
        run.log_params({"C": 1.0})
        run.log_metric("roc_auc", 0.97)
    meguri.search_runs("metrics.roc_auc > 0.9", order_by=["metrics.roc_auc desc"])

    from meguri.train import train
    result = train(meguri.load_spec())             # data phase, candidates, CV, gates
    version = meguri.register_model(result, "churn")   # package + card, version 1
    meguri.promote("churn@1")                      # production, if its gates pass
    model = meguri.load_model("churn@production")  # verified package, ONNX Runtime

Names load lazily on first use so that ``import meguri`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "init": "meguri.store",
    "open_workspace": "meguri.store",
    "Workspace": "meguri.store",
    "start_run": "meguri.train",
    "active_run": "meguri.train",
    "search_runs": "meguri.train",
    "get_run": "meguri.train",
    "get_metric_history": "meguri.train",
    "fail_stale_runs": "meguri.train",
    "TrainResult": "meguri.train",
    "register_model": "meguri.registry",
    "load_model": "meguri.registry",
    "get_model_version": "meguri.registry",
    "list_models": "meguri.registry",
    "promote": "meguri.registry",
    "ModelVersion": "meguri.store.metadata",
    "ActiveRun": "meguri.train",
    "MetricHistory": "meguri.train",
    "Run": "meguri.store.metadata",
    "RunStatus": "meguri.store.metadata",
    "load_spec": "meguri.spec",
    "ProjectSpec": "meguri.spec",
    "MeguriError": "meguri.errors",
}

_SUBPACKAGES = ("data",)

__all__ = [
    "ActiveRun",
    "MeguriError",
    "MetricHistory",
    "ModelVersion",
    "ProjectSpec",
    "Run",
    "RunStatus",
    "TrainResult",
    "Workspace",
    "__version__",
    "active_run",
    "data",
    "fail_stale_runs",
    "get_metric_history",
    "get_model_version",
    "get_run",
    "init",
    "list_models",
    "load_model",
    "load_spec",
    "open_workspace",
    "promote",
    "register_model",
    "search_runs",
    "start_run",
]

if TYPE_CHECKING:
    from meguri import data
    from meguri.errors import MeguriError
    from meguri.registry import (
        get_model_version,
        list_models,
        load_model,
        promote,
        register_model,
    )
    from meguri.spec import ProjectSpec, load_spec
    from meguri.store import Workspace, init, open_workspace
    from meguri.store.metadata import ModelVersion, Run, RunStatus
    from meguri.train import (
        ActiveRun,
        MetricHistory,
        TrainResult,
        active_run,
        fail_stale_runs,
        get_metric_history,
        get_run,
        search_runs,
        start_run,
    )


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return import_module(f"meguri.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'meguri' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
