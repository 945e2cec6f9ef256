"""Helpers of the serve tests: real models (ONNX Runtime, plain numpy) and a live server.

Imported by the other ``test_serve_*`` modules; its own tests check the helpers themselves.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Mapping
from typing import Any

import numpy as np

from meguri.serve._model import Array, LoadedModel, Prediction
from meguri.serve._server import app_in_background
from meguri.serve._signature import Column, Output, Signature


class OnnxModel(LoadedModel):
    """A scikit-learn pipeline converted with skl2onnx, run by ONNX Runtime (as packages do)."""

    session: Any = None

    def predict(self, batch: Mapping[str, Array]) -> Prediction:
        columns = [batch[name] for name in self.signature.names]
        matrix = np.array(columns, dtype=np.float32).T
        labels, probabilities = self.session.run(None, {"X": np.ascontiguousarray(matrix)})
        return Prediction(labels, probabilities.astype(np.float64))


@functools.cache
def breast_cancer() -> tuple[Array, Array, Any, bytes]:
    """The data, the fitted scaler + logistic regression pipeline and its ONNX bytes."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    onnx = to_onnx(pipeline, x[:1].astype(np.float32), options={"zipmap": False})
    return x, y, pipeline, onnx.SerializeToString()


FEATURES = [f"f{i:02d}" for i in range(30)]


def onnx_model(name: str = "cancer", version: str = "1") -> OnnxModel:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    signature = Signature(
        tuple(Column(n, "double", nullable=False) for n in FEATURES), Output("binary", (0, 1))
    )
    model = OnnxModel(name, version, signature, "onnx")
    model.session = ort.InferenceSession(
        breast_cancer()[3], options, providers=["CPUExecutionProvider"]
    )
    return model


class MixedModel(LoadedModel):
    """Every logical type as input; predicts a number from them (regression), in numpy."""

    def predict(self, batch: Mapping[str, Array]) -> Prediction:
        score = np.nan_to_num(batch["amount"]) + np.nan_to_num(batch["count"])
        score = score + batch["flag"] + np.array([len(s or "") for s in batch["city"]])
        return Prediction(score.astype(np.float64))


def mixed_model() -> MixedModel:
    signature = Signature(
        (
            Column("amount", "double", nullable=True),
            Column("count", "long", nullable=False),
            Column("flag", "boolean", nullable=False),
            Column("city", "string", nullable=True),
            Column("seen", "datetime", nullable=True),
        ),
        Output("regression"),
    )
    return MixedModel("mixed", "7", signature, "numpy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


running = app_in_background
"""Serve an ASGI app with uvicorn (httptools, uvloop) in a thread; yields its base URL."""


def test_onnx_model_matches_scikit_learn() -> None:
    x, _, pipeline, _ = breast_cancer()
    model = onnx_model()
    got = model.predict({n: x[:50, i] for i, n in enumerate(FEATURES)})
    assert (got.values == pipeline.predict(x[:50])).all()
    assert got.probabilities is not None
    assert np.abs(got.probabilities - pipeline.predict_proba(x[:50])).max() < 1e-4


def send_labelled(
    client: Any, frame: Any, target: str, prefix: str, inputs: list[str] | None = None
) -> list[tuple[str, int, int]]:
    """Post ``frame``'s rows to ``/invocations`` ten at a time (``client``: an httpx client
    on the server; request ids ``{prefix}-0``, ``{prefix}-1``...); each row's request id, its
    index there and its true class, for feedback later."""
    inputs = inputs or [c for c in frame.columns if c != target]
    sent = []
    for i, start in enumerate(range(0, frame.height, 10)):
        rows = frame.slice(start, 10)
        request_id = f"{prefix}-{i}"
        body = {"dataframe_split": {"columns": inputs, "data": rows.select(inputs).rows()}}
        answer = client.post("/invocations", json=body, headers={"x-request-id": request_id})
        assert answer.status_code == 200, answer.text
        sent += [(request_id, j, int(y)) for j, y in enumerate(rows[target].to_list())]
    return sent
