"""The zoo's estimator factories: zoo hyperparameters in, a configured, unfitted estimator out.

Each factory takes ``(family, params, seed, n_jobs)`` with ``params`` already complete (the
defaults merged in) and returns a scikit-learn estimator: the library's own class, or one of
scikit-learn's meta-estimators around it; there is no estimator class of meguri's. Every
random choice is seeded by ``seed`` and every thread count is ``n_jobs``, so the same data,
params, seed and ``n_jobs`` give the same fitted model, byte for byte.

Linear models, k-NN and the MLP see imputed (median) and standardised inputs inside their own
:class:`~sklearn.pipeline.Pipeline`; tree ensembles take the columns as they are, missing
values included. The MLP regressor also standardises its target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from meguri.train._zoo_space import Family

__all__ = ["FACTORIES", "Factory"]

Factory = Callable[[Family, Mapping[str, Any], int, int], BaseEstimator]


def _scaled(model: BaseEstimator) -> Pipeline:
    """``model`` after median imputation and standardisation (what distance and gradient
    based models need; a no-op cost when the fitted transform already did both)."""
    steps = [
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("scale", StandardScaler()),
        ("model", model),
    ]
    return Pipeline(steps)


def _linear(family: Family, p: Mapping[str, Any], seed: int, n_jobs: int) -> BaseEstimator:
    if family == "classification":
        model = LogisticRegression(
            C=p["C"], class_weight=p["class_weight"], max_iter=1000, random_state=seed
        )
        return _scaled(model)
    return _scaled(Ridge(alpha=p["alpha"], random_state=seed))


def _forest(family: Family, p: Mapping[str, Any], seed: int, n_jobs: int) -> BaseEstimator:
    if family == "classification":
        return RandomForestClassifier(**p, random_state=seed, n_jobs=n_jobs)
    return RandomForestRegressor(**p, random_state=seed, n_jobs=n_jobs)


def _hist(family: Family, p: Mapping[str, Any], seed: int, n_jobs: int) -> BaseEstimator:
    if family == "classification":
        return HistGradientBoostingClassifier(**p, random_state=seed)
    return HistGradientBoostingRegressor(**p, random_state=seed)


def _lightgbm(family: Family, p: Mapping[str, Any], seed: int, n_jobs: int) -> BaseEstimator:
    import lightgbm

    fixed: dict[str, Any] = {
        "subsample_freq": 1 if p["subsample"] < 1.0 else 0,
        "random_state": seed,
        "n_jobs": n_jobs,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    if family == "classification":
        return lightgbm.LGBMClassifier(**p, **fixed)
    return lightgbm.LGBMRegressor(**p, **fixed)


def _xgboost(family: Family, p: Mapping[str, Any], seed: int, n_jobs: int) -> BaseEstimator:
    import xgboost

    fixed: dict[str, Any] = {
        "tree_method": "hist",
        "random_state": seed,
        "n_jobs": n_jobs,
        "verbosity": 0,
    }
    if family == "classification":
        return xgboost.XGBClassifier(**p, **fixed)
    return xgboost.XGBRegressor(**p, **fixed)


def _knn(family: Family, p: Mapping[str, Any], seed: int, n_jobs: int) -> BaseEstimator:
    if family == "classification":
        return _scaled(KNeighborsClassifier(**p, n_jobs=n_jobs))
    return _scaled(KNeighborsRegressor(**p, n_jobs=n_jobs))


def _mlp(family: Family, p: Mapping[str, Any], seed: int, n_jobs: int) -> BaseEstimator:
    settings = {
        "hidden_layer_sizes": (int(p["hidden_units"]),) * int(p["hidden_layers"]),
        "alpha": p["alpha"],
        "learning_rate_init": p["learning_rate_init"],
        "early_stopping": bool(p["early_stopping"]),
        "max_iter": int(p["max_iter"]),
        "random_state": seed,
    }
    if family == "classification":
        return _scaled(MLPClassifier(**settings))
    regressor = _scaled(MLPRegressor(**settings))
    return TransformedTargetRegressor(regressor=regressor, transformer=StandardScaler())


#: ``FACTORIES[algorithm]``: the factory of each zoo algorithm.
FACTORIES: dict[str, Factory] = {
    "linear": _linear,
    "random_forest": _forest,
    "hist_gradient_boosting": _hist,
    "lightgbm": _lightgbm,
    "xgboost": _xgboost,
    "knn": _knn,
    "mlp": _mlp,
}
