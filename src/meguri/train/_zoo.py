"""The model zoo: one registry of candidate algorithms for every task of the spec.

::

    for candidate in candidates("binary_classification", spec.constraints.allowed_algorithms):
        model = candidate.build({"learning_rate": 0.05}, seed=spec.model.seed)
        model.fit(X_train, y_train)
        size = model_size_bytes(model)          # against max_model_size_mb

The algorithm names are :data:`meguri.spec.ALGORITHMS`. Each :class:`Candidate` carries its
defaults and its search space as data (:class:`~meguri.train._zoo_space.Param`), so a tuner
samples from it without importing any estimator library; ``build`` imports the library only
when called. ``xgboost`` is an optional extra (``pip install meguri[xgboost]``): when it is
not installed it is left out of the default candidates (with a log line saying so), and naming
it in ``constraints.allowed_algorithms`` is an error that says how to install it.

Determinism: ``build(params, seed, n_jobs=...)`` fixes every random state and thread count,
so fitting the same data twice gives the same predictions and the same pickle bytes.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meguri.errors import ConfigError, SpecError
from meguri.spec._model import ALGORITHMS, TASKS
from meguri.train._zoo_space import DEFAULTS, SPACES, Choice, Family, Param

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

__all__ = ["Candidate", "build", "candidates", "model_size_bytes"]

_log = logging.getLogger(__name__)

#: The module an algorithm needs beyond the core dependencies, and the extra that brings it.
_OPTIONAL = {"xgboost": ("xgboost", "meguri[xgboost]")}
_ALLOWED = "constraints.allowed_algorithms"
_TASK = "requirements.functional.task"


@dataclass(frozen=True)
class Candidate:
    """One algorithm configured for one task: its defaults, search space and factory."""

    name: str
    task: str
    defaults: Mapping[str, Choice] = field(repr=False)
    space: tuple[Param, ...] = field(repr=False)

    @property
    def family(self) -> Family:
        return _family(self.task)

    def params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The defaults updated with ``params``; an unknown name is a :class:`SpecError`."""
        given = dict(params or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise SpecError(
                f"{self.name} ({self.family}) has no hyperparameter {', '.join(unknown)}; "
                f"use one of: {', '.join(sorted(self.defaults))}."
            )
        return {**self.defaults, **given}

    def build(
        self, params: Mapping[str, Any] | None = None, seed: int = 0, *, n_jobs: int = 1
    ) -> BaseEstimator:
        """A new, unfitted estimator with ``params`` over the defaults, seeded by ``seed``.

        ``n_jobs`` is the number of threads the estimator may use; keep it fixed across
        runs that must give identical models (LightGBM's sums depend on it)."""
        _require(self.name)
        from meguri.train._zoo_estimators import FACTORIES

        return FACTORIES[self.name](self.family, self.params(params), seed, n_jobs)


def _family(task: str) -> Family:
    if task not in TASKS:
        raise SpecError(f"{_TASK}: unknown task {task!r}; use one of: {', '.join(TASKS)}.")
    return "regression" if task == "regression" else "classification"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _missing(name: str) -> str | None:
    """Why algorithm ``name`` cannot run here, or ``None`` when it can."""
    if name not in _OPTIONAL:
        return None
    module, extra = _OPTIONAL[name]
    if _installed(module):
        return None
    return f"{name} needs the {module} package, which is not installed: pip install '{extra}'."


def _require(name: str) -> None:
    reason = _missing(name)
    if reason is not None:
        raise ConfigError(reason)


def _candidate(name: str, task: str) -> Candidate:
    family = _family(task)
    return Candidate(name, task, DEFAULTS[name][family], SPACES[name][family])


def _check_allowed(allowed: Sequence[str]) -> None:
    if not allowed:
        raise SpecError(f"{_ALLOWED} is empty; name at least one of: {', '.join(ALGORITHMS)}.")
    for i, name in enumerate(allowed):
        if name not in ALGORITHMS:
            raise SpecError(
                f"{_ALLOWED}[{i}]: unknown algorithm {name!r}; use one of: {', '.join(ALGORITHMS)}."
            )
        _require(name)


def candidates(task: str, allowed: Sequence[str] | None = None) -> list[Candidate]:
    """The zoo's candidates for ``task``, in :data:`ALGORITHMS` order.

    ``allowed`` is the spec's ``constraints.allowed_algorithms``: ``None`` means every
    algorithm that can run here (an uninstalled optional one is skipped and logged); a name
    that is unknown, or optional and not installed, raises an error naming the setting."""
    _family(task)
    if allowed is None:
        names = [name for name in ALGORITHMS if not _skipped(name)]
    else:
        _check_allowed(allowed)
        names = [name for name in ALGORITHMS if name in allowed]
    return [_candidate(name, task) for name in names]


def _skipped(name: str) -> bool:
    reason = _missing(name)
    if reason is not None:
        _log.info("model zoo: skipping %s", reason)
    return reason is not None


def build(
    name: str,
    task: str,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    *,
    n_jobs: int = 1,
) -> BaseEstimator:
    """The estimator of algorithm ``name`` for ``task``: ``candidates(task, [name])[0].build``."""
    return candidates(task, [name])[0].build(params, seed, n_jobs=n_jobs)


def model_size_bytes(estimator: object) -> int:
    """The size of a fitted model in bytes, as pickled (protocol 5).

    This is the yardstick for ``requirements.non_functional.max_model_size_mb``: the package's
    own formats (ONNX, skops, LightGBM/XGBoost text) are of the same order, and pickle covers
    every estimator the zoo builds, meta-estimators included."""
    return len(pickle.dumps(estimator, protocol=5))
