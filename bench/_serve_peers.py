"""The servers ``bench/serve.py`` compares: how each is started, pinged and sent one row.

Every peer serves the same fitted pipeline (imputation, standardisation, logistic regression;
fitted once by ``meguri.train``) and returns its ``predict_proba`` for a single row:

* ``mlflow``: ``mlflow models serve --env-manager local`` (uvicorn, one worker) on the model
  logged with ``mlflow.sklearn.log_model(..., pyfunc_predict_fn="predict_proba")`` into a
  temporary SQLite tracking store; the body is MLflow's tensor input ``{"inputs": [[...]]}``
  (the signature was inferred from a numpy matrix, so no DataFrame is built per request);
* ``bentoml``: ``bentoml serve`` on the one-worker service of ``_serve_bento_service.py``;
* ``fastapi``: ``uvicorn`` on the handler of ``_serve_fastapi_app.py``;
* ``meguri``: ``meguri serve --model-dir PKG`` on the model package ``build_package`` wrote;
* ``uvicorn, empty handler``: the ceiling of one uvicorn worker on the core
  (``_serve_empty_app.py``: reads the body, sends a fixed answer; not checked, no model).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _serve_load import Request

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Peer:
    """One server to start: command, environment, readiness path and the request to send."""

    name: str
    argv: list[str]
    port: int
    ping: str
    request: Request
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    predicts: bool = True
    """Whether its answer is a prediction to check (the empty handler's is not)."""

    def full_env(self) -> dict[str, str]:
        quiet = {
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "BENTOML_DO_NOT_TRACK": "true",
        }
        threads = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
        path = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # mlflow runs `uvicorn`
        return {**os.environ, **quiet, **threads, **path, **self.env}


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


def mlflow_peer(model_uri: str, tracking_uri: str, row: list[float], port: int) -> Peer:
    argv = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    url = f"http://127.0.0.1:{port}/invocations"
    request = Request(url, _json({"inputs": [row]}), "application/json")
    return Peer("mlflow", argv, port, "/ping", request, env={"MLFLOW_TRACKING_URI": tracking_uri})


def bento_peer(model_path: Path, row: list[float], port: int) -> Peer:
    argv = [str(BIN / "bentoml"), "serve", "_serve_bento_service:Classifier"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    request = Request(
        f"http://127.0.0.1:{port}/predict", _json({"rows": [row]}), "application/json"
    )
    env = {"BENCH_MODEL": str(model_path), "BENTOML_HOME": str(model_path.parent / "bentoml")}
    return Peer("bentoml", argv, port, "/readyz", request, env=env, cwd=BENCH)


def fastapi_peer(model_path: Path, row: list[float], port: int) -> Peer:
    argv = [str(BIN / "uvicorn"), "--app-dir", str(BENCH), "_serve_fastapi_app:app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-access-log"]
    url = f"http://127.0.0.1:{port}/invocations"
    request = Request(url, _json({"rows": [row]}), "application/json")
    return Peer("fastapi", argv, port, "/ping", request, env={"BENCH_MODEL": str(model_path)})


def empty_peer(row: list[float], port: int) -> Peer:
    argv = [str(BIN / "uvicorn"), "--app-dir", str(BENCH), "_serve_empty_app:app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-access-log"]
    argv += ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}/invocations"
    request = Request(url, _json({"inputs": [row]}), "application/json")
    return Peer("uvicorn, empty handler", argv, port, "/ping", request, predicts=False)


def meguri_peer(
    name: str, package: Path, columns: list[str], row: list[Any], port: int, extra: list[str]
) -> Peer:
    """``meguri serve --model-dir PKG`` with ``extra`` options (micro-batching, capture)."""
    argv = [str(BIN / "meguri"), "serve", "--model-dir", str(package)]
    argv += ["--host", "127.0.0.1", "--port", str(port), *extra]
    body = {"dataframe_split": {"columns": columns, "data": [row]}}
    url = f"http://127.0.0.1:{port}/invocations?probabilities=true"  # predict_proba, as the rest
    return Peer(name, argv, port, "/ping", Request(url, _json(body), "application/json"))


def numbers(document: Any) -> list[float]:
    """Every number in a JSON document (to find the probability in any peer's answer)."""
    if isinstance(document, bool):
        return []
    if isinstance(document, int | float):
        return [float(document)]
    if isinstance(document, dict):
        return [n for value in document.values() for n in numbers(value)]
    if isinstance(document, list):
        return [n for value in document for n in numbers(value)]
    return []
