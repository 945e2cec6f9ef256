"""The bare FastAPI peer of ``bench/serve.py``: scikit-learn's ``predict_proba`` under uvicorn.

The handler most tutorials write: a pydantic body (``{"rows": [[...], ...]}``), the fitted
pipeline loaded once at start-up (``BENCH_MODEL``: a joblib file the benchmark wrote), the
probabilities returned as JSON. Run as ``uvicorn --app-dir bench _serve_fastapi_app:app``.
"""

from __future__ import annotations

import os

import joblib
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

MODEL = joblib.load(os.environ["BENCH_MODEL"])
app = FastAPI()


class Rows(BaseModel):
    rows: list[list[float]]


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/invocations")
async def invocations(body: Rows) -> dict[str, list[list[float]]]:
    proba = MODEL.predict_proba(np.asarray(body.rows, dtype=np.float64))
    return {"probabilities": proba.tolist()}
