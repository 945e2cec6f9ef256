"""The loaded model the server calls: one ``predict`` over a columnar batch.

Contract for every implementation (the ONNX Runtime one, the skops one, the native LightGBM /
XGBoost one):

* ``predict(batch)`` takes one numpy array per input column of :attr:`signature` (already
  validated and converted by the server: see :mod:`meguri.serve._signature` for the dtypes), all
  of the same length ``n >= 1``, and returns a :class:`Prediction` of ``n`` rows;
* it applies the fitted transform and the estimator exactly as training evaluated them;
* it never unpickles, and it is safe to call from one thread at a time (the server calls it from
  its event loop; a worker process holds its own instance).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meguri.serve._signature import Signature

__all__ = ["Array", "LoadedModel", "Prediction"]

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Prediction:
    """``values``: the label (classification) or number (regression) per row;
    ``probabilities``: ``[n, len(labels)]`` for classification, else ``None``."""

    values: Array
    probabilities: Array | None = None


@dataclass
class LoadedModel(ABC):
    """A verified model package, ready to predict (see the module docstring)."""

    name: str
    version: str
    signature: Signature
    runtime: str
    """How it predicts: ``onnx`` (transform and estimator in one ONNX Runtime session),
    ``onnx+transform``, ``skops``, ``lightgbm``, ``xgboost``."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """The package's ``model.json``."""

    @abstractmethod
    def predict(self, batch: Mapping[str, Array]) -> Prediction:
        """Predictions for the ``n`` rows of ``batch`` (see the module docstring)."""
