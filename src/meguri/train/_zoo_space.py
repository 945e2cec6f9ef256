"""Search spaces of the model zoo, as plain data: no estimator library is imported here.

A tuner reads a candidate's :class:`Param` list and asks its trial for one value of each::

    params = {p.name: p.suggest(trial) for p in candidate.space}   # an optuna.Trial
    model = candidate.build(params, seed=42)

The names are the zoo's hyperparameter names (what ``build`` accepts), not always the
estimator's own: ``mlp`` takes ``hidden_layers`` and ``hidden_units`` and makes
``hidden_layer_sizes`` of them, because a tuner can only sample numbers and labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["DEFAULTS", "SPACES", "Choice", "Family", "Param", "ParamKind"]

ParamKind = Literal["float", "int", "categorical"]
Family = Literal["classification", "regression"]
Choice = str | int | float | bool | None


class _Trial(Protocol):
    """The part of ``optuna.Trial`` that :meth:`Param.suggest` uses."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Choice]) -> Choice: ...


@dataclass(frozen=True)
class Param:
    """One tunable hyperparameter: a float or int range (``log`` for a log scale) or choices."""

    name: str
    kind: ParamKind
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Choice, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError(f"categorical parameter {self.name!r} needs choices")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.kind} parameter {self.name!r} needs low < high")

    def suggest(self, trial: _Trial) -> Choice:
        """One value drawn by ``trial`` (an ``optuna.Trial`` or anything with its methods)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def _f(name: str, low: float, high: float, *, log: bool = False) -> Param:
    return Param(name, "float", low, high, log)


def _i(name: str, low: int, high: int, *, log: bool = False) -> Param:
    return Param(name, "int", low, high, log)


def _c(name: str, *choices: Choice) -> Param:
    return Param(name, "categorical", choices=choices)


_FOREST = (
    _i("n_estimators", 50, 500, log=True),
    _i("max_depth", 3, 32, log=True),
    _i("min_samples_leaf", 1, 50, log=True),
    _f("max_features", 0.1, 1.0),
)
_HIST = (
    _f("learning_rate", 0.01, 0.3, log=True),
    _i("max_iter", 50, 500, log=True),
    _i("max_leaf_nodes", 8, 128, log=True),
    _i("min_samples_leaf", 5, 200, log=True),
    _f("l2_regularization", 1e-8, 10.0, log=True),
)
_LIGHTGBM = (
    _i("n_estimators", 50, 1000, log=True),
    _f("learning_rate", 0.01, 0.3, log=True),
    _i("num_leaves", 8, 256, log=True),
    _i("min_child_samples", 5, 200, log=True),
    _f("subsample", 0.5, 1.0),
    _f("colsample_bytree", 0.3, 1.0),
    _f("reg_lambda", 1e-8, 10.0, log=True),
)
_XGBOOST = (
    _i("n_estimators", 50, 1000, log=True),
    _f("learning_rate", 0.01, 0.3, log=True),
    _i("max_depth", 2, 10),
    _f("min_child_weight", 0.1, 20.0, log=True),
    _f("subsample", 0.5, 1.0),
    _f("colsample_bytree", 0.3, 1.0),
    _f("reg_lambda", 1e-8, 10.0, log=True),
)
_KNN = (_i("n_neighbors", 1, 100, log=True), _c("weights", "uniform", "distance"), _c("p", 1, 2))
_MLP = (
    _i("hidden_layers", 1, 3),
    _i("hidden_units", 16, 256, log=True),
    _f("alpha", 1e-6, 1e-1, log=True),
    _f("learning_rate_init", 1e-4, 1e-2, log=True),
)
_BALANCE = (_c("class_weight", None, "balanced"),)

#: ``SPACES[algorithm][family]``: the search space of each zoo algorithm.
SPACES: dict[str, dict[Family, tuple[Param, ...]]] = {
    "linear": {
        "classification": (_f("C", 1e-4, 1e2, log=True), *_BALANCE),
        "regression": (_f("alpha", 1e-4, 1e3, log=True),),
    },
    "random_forest": {"classification": _FOREST + _BALANCE, "regression": _FOREST},
    "hist_gradient_boosting": {"classification": _HIST + _BALANCE, "regression": _HIST},
    "lightgbm": {"classification": _LIGHTGBM, "regression": _LIGHTGBM},
    "xgboost": {"classification": _XGBOOST, "regression": _XGBOOST},
    "knn": {"classification": _KNN, "regression": _KNN},
    "mlp": {"classification": _MLP, "regression": _MLP},
}

_FOREST_DEFAULTS: dict[str, Choice] = {
    "n_estimators": 200,
    "max_depth": None,
    "min_samples_leaf": 1,
}
_HIST_DEFAULTS: dict[str, Choice] = {
    "learning_rate": 0.1,
    "max_iter": 200,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 20,
    "l2_regularization": 0.0,
}
_BOOST_DEFAULTS: dict[str, Choice] = {
    "n_estimators": 300,
    "learning_rate": 0.05,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
}
_MLP_DEFAULTS: dict[str, Choice] = {
    "hidden_layers": 1,
    "hidden_units": 64,
    "alpha": 1e-4,
    "learning_rate_init": 1e-3,
    "early_stopping": True,
    "max_iter": 500,
}
_KNN_DEFAULTS: dict[str, Choice] = {"n_neighbors": 15, "weights": "distance", "p": 2}


def _both(defaults: dict[str, Choice]) -> dict[Family, dict[str, Choice]]:
    return {"classification": defaults, "regression": dict(defaults)}


#: ``DEFAULTS[algorithm][family]``: the values ``build`` uses for what ``params`` leaves out.
#: Its keys are exactly the names ``build`` accepts: the searched ones and a few fixed switches
#: (``mlp``'s ``early_stopping`` and ``max_iter``). A default may lie outside the search space
#: (``max_depth=None`` is an unlimited forest; ``max_features`` follows scikit-learn).
DEFAULTS: dict[str, dict[Family, dict[str, Choice]]] = {
    "linear": {"classification": {"C": 1.0, "class_weight": None}, "regression": {"alpha": 1.0}},
    "random_forest": {
        "classification": {**_FOREST_DEFAULTS, "max_features": "sqrt", "class_weight": None},
        "regression": {**_FOREST_DEFAULTS, "max_features": 1.0},
    },
    "hist_gradient_boosting": {
        "classification": {**_HIST_DEFAULTS, "class_weight": None},
        "regression": _HIST_DEFAULTS,
    },
    "lightgbm": _both(
        {**_BOOST_DEFAULTS, "num_leaves": 31, "min_child_samples": 20, "reg_lambda": 0.0}
    ),
    "xgboost": _both(
        {**_BOOST_DEFAULTS, "max_depth": 6, "min_child_weight": 1.0, "reg_lambda": 1.0}
    ),
    "knn": _both(_KNN_DEFAULTS),
    "mlp": _both(_MLP_DEFAULTS),
}
