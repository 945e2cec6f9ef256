"""Running the app: settings, model sources and uvicorn (httptools + uvloop).

``serve(source, settings)`` blocks until the server stops (Ctrl-C / SIGTERM, which flushes the
capture buffer). With ``workers > 1`` uvicorn forks that many processes, each calling
:func:`app_factory`, which loads the model itself from the :class:`PackageSource` handed over in
the environment (a :class:`LoadedModel` object cannot cross processes: pass a package folder).
Each process logs how long after its start it became ready; the workers share their
``/metrics`` numbers through a temporary folder (:class:`~meguri.serve._metrics.WorkerMetrics`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meguri.errors import ConfigError
from meguri.serve._model import LoadedModel

__all__ = [
    "MIN_TOKEN_CHARS",
    "PackageSource",
    "ServeSettings",
    "app_factory",
    "app_in_background",
    "serve",
    "serve_in_background",
    "token_problem",
]

MIN_TOKEN_CHARS = 16
"""The shortest bearer token an endpoint accepts from its ``auth_token_env`` variable."""


def token_problem(token: str | None) -> str | None:
    """Why ``token`` (read from a variable) cannot guard an endpoint, or None when it can:
    one rule for local deployments and Ray Serve replicas."""
    if not token:
        return "is not set"
    if len(token) < MIN_TOKEN_CHARS:
        return f"holds fewer than {MIN_TOKEN_CHARS} characters"
    return None


_SOURCE_ENV = "MEGURI_SERVE_SOURCE"
_SETTINGS_ENV = "MEGURI_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServeSettings:
    """How the server listens, batches, limits, captures and authenticates."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_batch_rows: int = 256
    """A micro-batch is predicted once it holds this many rows."""
    max_wait_ms: float = 2.0
    """Longest wait for requests still reading their bodies (only when requests queue)."""
    max_body_bytes: int = 8 * 1024 * 1024
    max_columns: int = 1_000
    max_rows: int = 10_000
    capture_rate: float = 0.0
    """Share of requests captured (0 = off, 1 = all); needs ``capture_url``."""
    capture_url: str | None = None
    """Folder or fsspec URL the capture Parquet files go under."""
    auth_token: str | None = None
    """When set, every route but the health checks needs ``Authorization: Bearer <token>``."""
    auth_token_sha256: str | None = None
    """The same check given the token's sha256 (hex) instead: what deployments write to their
    state folder, so that the token itself is never on disk."""
    log_level: str = "info"
    metrics_folder: str | None = None
    """Where the workers of one server share their ``/metrics`` numbers
    (:class:`~meguri.serve._metrics.WorkerMetrics`); :func:`serve` sets it for ``workers > 1``."""

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_batch_rows < 1 or self.max_body_bytes < 1:
            raise ConfigError(
                "serve settings: workers, max_batch_rows and max_body_bytes must be at least 1"
            )
        if not 0.0 <= self.capture_rate <= 1.0:
            raise ConfigError(
                f"serve settings: capture_rate {self.capture_rate} must be between 0 and 1"
            )
        digest = self.auth_token_sha256
        if digest is not None and re.fullmatch(r"[0-9a-f]{64}", digest) is None:
            raise ConfigError(
                "serve settings: auth_token_sha256 must be 64 lowercase hex digits (the token's "
                "sha256), or unset"
            )
        if self.capture_rate > 0 and not self.capture_url:
            raise ConfigError(
                "serve settings: capture_rate > 0 needs capture_url (a folder or "
                "s3:// URL for the Parquet files)"
            )

    def token_digest(self) -> bytes | None:
        """The sha256 of the bearer token requests must send, or None (no auth)."""
        if self.auth_token:
            return hashlib.sha256(self.auth_token.encode()).digest()
        return bytes.fromhex(self.auth_token_sha256) if self.auth_token_sha256 else None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class PackageSource:
    """A model package folder to load (and verify) in each worker process."""

    folder: Path
    digest: str | None = None
    """sha256 of ``model.json`` as the registry recorded it; ``None`` skips that one check."""
    name: str | None = None
    version: str | None = None

    def load(self) -> LoadedModel:
        from meguri.serve._package import load_package

        model: LoadedModel = load_package(
            self.folder, expected_digest=self.digest, name=self.name, version=self.version
        )
        return model

    def verify(self) -> None:
        """Check every file's sha256 now (what each worker's :meth:`load` repeats), so that a
        changed package stops the command before any worker starts."""
        from meguri.serve._package import read_verified

        read_verified(self.folder, expected_digest=self.digest)

    def to_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "folder": str(self.folder)})

    @classmethod
    def from_json(cls, text: str) -> PackageSource:
        data = json.loads(text)
        return cls(Path(data.pop("folder")), **data)


def serve(source: LoadedModel | PackageSource, settings: ServeSettings) -> None:
    """Serve ``source`` until stopped (see the module docstring)."""
    import uvicorn

    _configure_logging(settings.log_level)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "log_level": settings.log_level,
        "timeout_keep_alive": 30,
        "backlog": 4096,
    }
    if settings.workers > 1:
        if not isinstance(source, PackageSource):
            raise ConfigError(
                "serve: --workers > 1 needs a package folder (each worker loads "
                "the model itself), not a model object"
            )
        source.verify()
        with tempfile.TemporaryDirectory(prefix="meguri-metrics-") as folder:
            shared = dataclasses.replace(settings, metrics_folder=settings.metrics_folder or folder)
            os.environ[_SOURCE_ENV] = source.to_json()
            os.environ[_SETTINGS_ENV] = shared.to_json()
            uvicorn.run(
                "meguri.serve._server:app_factory",
                factory=True,
                workers=settings.workers,
                **options,
            )
        return
    from meguri.serve._app import create_app

    model = source.load() if isinstance(source, PackageSource) else source
    uvicorn.run(create_app(model, settings=settings), **options)


@contextmanager
def serve_in_background(model: LoadedModel, settings: ServeSettings) -> Iterator[str]:
    """Serve ``model`` from a thread of this process (one worker; ``settings.port`` 0 picks a
    free port) and yield the base URL once it accepts requests; stop it on exit."""
    from meguri.serve._app import create_app

    app = create_app(model, settings=settings)
    with app_in_background(app, host=settings.host, port=settings.port) as url:
        yield url


@contextmanager
def app_in_background(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the ASGI ``app`` under uvicorn (httptools, uvloop) in a thread of this process;
    yield its base URL once it accepts requests (``port`` 0: a free one); stop it on exit."""
    import socket
    import threading
    import time

    import uvicorn

    if port == 0:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
        log_level="warning", access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="meguri-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        server.should_exit = True
        raise ConfigError(f"serve: the server did not start on {host}:{port}")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def app_factory() -> Any:
    """The app of one worker process: the model and settings come from the environment."""
    from meguri.serve._app import create_app

    try:
        source = PackageSource.from_json(os.environ[_SOURCE_ENV])
        settings = ServeSettings.from_json(os.environ[_SETTINGS_ENV])
    except KeyError as exc:
        raise ConfigError(
            f"serve worker: {exc} is not set; start workers with `meguri serve`"
        ) from None
    _configure_logging(settings.log_level)
    return create_app(source.load(), settings=settings)


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("meguri.serve")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
