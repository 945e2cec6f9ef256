"""The MLflow 3.x half of the tracking benchmark (SQLite backend), measured the way its docs
show: the fluent ``mlflow.log_metric`` in a loop, ``MlflowClient.log_batch`` with 1,000 metrics
per call, ``MlflowClient.search_runs`` and ``MlflowClient.get_metric_history``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import SEARCH_FILTER, Point, SearchRun, timed

# MLflow 3 sends usage telemetry unless told not to; this machine has no network anyway.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

SEARCH_ORDER_MLFLOW = "metrics.acc DESC"


class MlflowSide:
    """One SQLite tracking store under ``root``; experiments get their artifacts there too."""

    def __init__(self, root: Path) -> None:
        import mlflow
        from mlflow import MlflowClient

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.mlflow = mlflow
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
        self.version = mlflow.__version__

    def experiment(self, name: str) -> str:
        location = (self.root / "artifacts" / name).as_uri()
        return str(self.client.create_experiment(name, artifact_location=location))

    def history_length(self, run_id: str, key: str) -> int:
        return len(self.client.get_metric_history(run_id, key))

    def _check_stored(self, run_id: str, key: str, expected: int) -> None:
        found = self.history_length(run_id, key)
        if found != expected:
            raise AssertionError(
                f"MLflow run {run_id} stored {found} points of {key!r}, not {expected}"
            )

    # -- logging ------------------------------------------------------------------------------

    def log_metric_loop(
        self, n: int, experiment: str, *, synchronous: bool = True
    ) -> dict[str, Any]:
        """``n`` calls of ``mlflow.log_metric``; the timing includes ``mlflow.end_run()``, which
        also drains MLflow's queue when ``synchronous=False`` (its asynchronous logging)."""
        mlflow = self.mlflow
        run = mlflow.start_run(experiment_id=self.experiment(experiment))

        def loop() -> None:
            for i in range(n):
                mlflow.log_metric("loss", i * 1e-3, step=i, synchronous=synchronous)
            mlflow.end_run()

        elapsed, _ = timed(loop)
        self._check_stored(run.info.run_id, "loss", n)
        return {"calls": n, "seconds": elapsed, "rate": n / elapsed}

    def log_batch_chunks(self, chunks: list[list[Point]], experiment: str) -> dict[str, Any]:
        """``MlflowClient.log_batch`` per chunk (the Metric objects are built beforehand, off
        the clock); the timing includes ``set_terminated``."""
        from mlflow.entities import Metric

        run_id = self.client.create_run(self.experiment(experiment)).info.run_id
        stamp = int(time.time() * 1000)
        batches = [[Metric(k, v, stamp, s) for k, v, s in chunk] for chunk in chunks]

        def loop() -> None:
            for batch in batches:
                self.client.log_batch(run_id, metrics=batch)
            self.client.set_terminated(run_id)

        elapsed, _ = timed(loop)
        key = chunks[0][0][0]
        self._check_stored(run_id, key, sum(1 for c in chunks for p in c if p[0] == key))
        total = sum(len(c) for c in chunks)
        return {"points": total, "seconds": elapsed, "rate": total / elapsed, "calls": len(chunks)}

    # -- search -------------------------------------------------------------------------------

    def populate_search(self, population: list[SearchRun], experiment: str) -> tuple[str, float]:
        """One run per entry: ``create_run``, ``log_batch`` (param and two metrics), finished."""
        from mlflow.entities import Metric, Param

        exp_id = self.experiment(experiment)
        client = self.client

        def fill() -> None:
            for item in population:
                run_id = client.create_run(exp_id).info.run_id
                stamp = int(time.time() * 1000)
                metrics = [Metric("acc", item.acc, stamp, 0), Metric("loss", item.loss, stamp, 0)]
                client.log_batch(run_id, metrics=metrics, params=[Param("lr", item.lr)])
                client.set_terminated(run_id)

        elapsed, _ = timed(fill)
        return exp_id, elapsed

    def search_query(self, exp_id: str, max_results: int) -> Callable[[], Any]:
        return lambda: self.client.search_runs(
            [exp_id], SEARCH_FILTER, order_by=[SEARCH_ORDER_MLFLOW], max_results=max_results
        )

    @staticmethod
    def check_search(found: Any) -> dict[str, Any]:
        return {"returned": len(found), "accs": [r.data.metrics["acc"] for r in found][:20]}

    # -- history ------------------------------------------------------------------------------

    def history_reader(self, points: list[Point]) -> Callable[[], Any]:
        """Log ``points`` of one key (1,000 per ``log_batch``); return the
        ``MlflowClient.get_metric_history`` call."""
        from mlflow.entities import Metric

        run_id = self.client.create_run(self.experiment("history")).info.run_id
        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, s) for k, v, s in points]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
        self.client.set_terminated(run_id)
        key = points[0][0]
        return lambda: self.client.get_metric_history(run_id, key)

    @staticmethod
    def check_history(hist: Any, points: list[Point]) -> None:
        if len(hist) != len(points):
            raise AssertionError(f"MLflow history has {len(hist)} points, expected {len(points)}")
