"""One serving worker of a deployment: the router app on the supervisor's listening socket.

``python -m meguri.deploy._worker STATE_DIR FD`` serves :class:`~meguri.serve._router.Router`
with uvicorn on the inherited socket ``FD`` (the supervisor binds it once; every worker accepts
from the same queue, so a worker that dies loses only the requests it was answering).

A worker whose supervisor died (its parent changed) shuts down gracefully. Every 0.5 s the
worker reads ``STATE_DIR/targets.json`` (written by the supervisor, replaced
atomically). A new ``generation`` there is loaded in a thread while the current one keeps
serving: each new model package is verified and loaded, answers a self-test prediction, and only
then does the router switch (one assignment). The worker writes what it serves and its counters
to ``STATE_DIR/stats/<pid>.json`` on the same beat; the supervisor reads them, and so does each
worker's ``/metrics``, which sums every worker's route series (a worker the supervisor
replaced takes its route counts with it: Prometheus reads that as a counter reset). The
backends' own ``/metrics`` numbers are shared under ``STATE_DIR/metrics/<backend>/``
(:class:`~meguri.serve._metrics.WorkerMetrics`), where those of a replaced worker stay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np

from meguri.serve._app import create_app
from meguri.serve._metrics import other_workers, write_json
from meguri.serve._model import LoadedModel
from meguri.serve._router import Backend, Route, Router
from meguri.serve._server import PackageSource, ServeSettings
from meguri.serve._signature import Column

__all__ = ["POLL_SECONDS", "load_routes", "main", "self_test"]

POLL_SECONDS = 0.5
log = logging.getLogger("meguri.deploy.worker")


def self_test(model: LoadedModel) -> None:
    """One prediction on a made-up row; raises when the model cannot answer it."""
    batch = {c.name: _example(c) for c in model.signature.inputs}
    prediction = model.predict(batch)
    if len(prediction.values) != 1:
        raise RuntimeError(f"self-test: {len(prediction.values)} predictions for 1 row")


def _example(column: Column) -> Any:
    if column.type in ("double", "long"):
        return np.zeros(1, dtype=np.float64)
    if column.type == "boolean":
        return np.zeros(1, dtype=bool)
    if column.type == "datetime":
        return np.zeros(1, dtype="datetime64[us]")
    return np.array([""], dtype=object)


def load_routes(
    document: dict[str, Any], known: dict[str, Backend], metrics: Path | None = None
) -> list[Route]:
    """The routes of a ``targets.json`` document; backends already in ``known`` are reused,
    new ones are loaded, self-tested and added to ``known``. With ``metrics`` (the state's
    ``metrics`` folder), each backend's workers share their ``/metrics`` numbers in a folder of
    it named after the backend."""
    settings = ServeSettings.from_json(json.dumps(document["settings"]))
    routes = []
    for target in document["targets"]:
        # a version served with other settings (limits, token, capture) is another backend
        cache_key = f"{target['key']}|{json.dumps(document['settings'], sort_keys=True)}"
        backend = known.get(cache_key)
        if backend is None:
            source = PackageSource(
                Path(target["folder"]), target["digest"], target["name"], target["version"]
            )
            model = source.load()
            self_test(model)
            served = settings
            if metrics is not None:
                folder = metrics / hashlib.sha256(cache_key.encode()).hexdigest()[:16]
                folder.mkdir(parents=True, exist_ok=True)
                served = dataclasses.replace(settings, metrics_folder=str(folder))
            app = create_app(model, settings=served)
            backend = known[cache_key] = Backend(target["key"], target["label"], app)
        routes.append(Route(backend, float(target["weight"]), target["role"]))
    return routes


class _Watcher:
    def __init__(self, state: Path, known: dict[str, Backend]) -> None:
        self.state, self.known = state, known
        self.stats = state / "stats" / f"{os.getpid()}.json"
        self.error: str | None = None
        self.failed_generation = -1
        self.parent = os.getppid()

    async def __call__(self, router: Router) -> None:
        while True:
            try:
                await self._tick(router)
            except Exception as exc:  # never let the watcher die: report and go on
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("worker %s: watching the targets failed", os.getpid())
            await asyncio.sleep(POLL_SECONDS)

    async def _tick(self, router: Router) -> None:
        if os.getppid() != self.parent:  # the supervisor died: leave the port to its successor
            log.warning("worker %s: supervisor %s is gone; stopping", os.getpid(), self.parent)
            os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
            return
        document = json.loads((self.state / "targets.json").read_text(encoding="utf-8"))
        generation = int(document["generation"])
        if generation != router.generation and generation != self.failed_generation:
            loop = asyncio.get_running_loop()
            try:
                routes = await loop.run_in_executor(
                    None, load_routes, document, self.known, self.state / "metrics"
                )
            except Exception as exc:
                self.failed_generation, self.error = generation, f"{type(exc).__name__}: {exc}"
                raise
            router.swap(routes, generation)
            self.error = None
            self._forget(router)
        report = {
            "pid": os.getpid(),
            "generation": router.generation,
            "error": self.error,
            "backends": router.snapshot(),
        }
        write_json(self.stats, report)

    def peer_reports(self) -> list[dict[str, Any]]:
        """The other live workers' last reports (``Router.peers``)."""
        return other_workers(self.state / "stats", self.stats)

    def _forget(self, router: Router) -> None:
        live = {id(r.backend) for r in router.table.routes}
        for key in [k for k, backend in self.known.items() if id(backend) not in live]:
            del self.known[key]


def main(argv: list[str]) -> None:
    """Serve the router on the inherited socket until SIGTERM."""
    import uvicorn

    state, fd = Path(argv[0]), int(argv[1])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    document = json.loads((state / "targets.json").read_text(encoding="utf-8"))
    known: dict[str, Backend] = {}
    watcher = _Watcher(state, known)
    router = Router(
        load_routes(document, known, state / "metrics"),
        generation=int(document["generation"]),
        watcher=watcher,
    )
    router.peers = watcher.peer_reports
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(
        router, loop="uvloop", http="httptools", lifespan="on", log_level="warning",
        access_log=False, timeout_keep_alive=30,
    )  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
