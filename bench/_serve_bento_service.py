"""The BentoML peer of ``bench/serve.py``: a minimal service around the same fitted pipeline.

One worker (``workers=1``), one API (``POST /predict`` with ``{"rows": [[...], ...]}``) that
returns ``predict_proba``; the pipeline is the joblib file the benchmark wrote
(``BENCH_MODEL``). Run as ``bentoml serve _serve_bento_service:Classifier`` from ``bench/``.
"""

from __future__ import annotations

import os

import bentoml
import joblib
import numpy as np


@bentoml.service(workers=1)
class Classifier:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])

    @bentoml.api
    def predict(self, rows: list[list[float]]) -> list[list[float]]:
        proba = self.model.predict_proba(np.asarray(rows, dtype=np.float64))
        return proba.tolist()  # type: ignore[no-any-return]
