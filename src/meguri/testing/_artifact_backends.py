"""pytest fixtures of the artifact backends: a local folder, S3 on moto's server, and either of
them served by the platform server over HTTP.

S3 is the one emulated part: no real S3 can run here, so ``s3_server`` starts moto's
``ThreadedMotoServer`` on 127.0.0.1 (a free port) and the S3 store talks to it over HTTP,
as it would to any S3-compatible endpoint. The store learns the endpoint the way it does in
production: ``storage_options["endpoint_url"]``, else ``MEGURI_S3_ENDPOINT_URL``, else
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``. While the server runs, the fixture sets
``MEGURI_S3_ENDPOINT_URL``, dummy credentials and a region, and points the AWS config files
at nothing (so no real profile is used); its teardown restores the environment.

* ``artifacts_url`` — parametrized ``[local]`` (a fresh temp folder) and ``[s3]`` (a fresh
  bucket, ``s3://bucket-<random>/artifacts``; marked ``s3``).
* ``artifact_store`` — ``open_artifact_store(artifacts_url)``, parametrized ``[plain]`` and
  ``[encrypted]`` (sealed with a fresh random key: encryption at rest must keep the whole
  contract, dedup, atomicity and verified reads included, on every backend), and
  ``[served-plain]``/``[served-encrypted]``: the same store served by the platform server
  (``create_app`` under uvicorn on loopback) and used through ``HttpArtifactStore`` with an
  editor's API token, wrapped in a :class:`ServedArtifactStore` so that the contract's tests
  that inspect or tamper with stored objects look at the server's storage while every
  contract call goes over HTTP.
* ``artifact_server`` — the one platform server of the session (see :class:`ArtifactServer`):
  starting and stopping uvicorn costs about 0.4 s, and FastAPI's preparing a new app 0.2 s, so
  each test has the running server serve its fresh store instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meguri.store import Workspace, open_workspace
from meguri.store.artifacts import (
    ArtifactStore,
    FsspecArtifactStore,
    KeyRing,
    StoredArtifact,
    open_artifact_store,
)
from meguri.store.artifacts._http import HttpArtifactStore
from meguri.store.artifacts._keys import new_key

__all__ = [
    "ArtifactServer",
    "ServedArtifactStore",
    "artifact_server",
    "artifact_store",
    "artifacts_url",
    "s3_server",
]

_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_CLEARED_ENV = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Moto's S3 server on loopback; yields its endpoint URL (``http://127.0.0.1:<port>``)."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is a dev extra")
    pytest.importorskip("s3fs", reason="s3fs is the [s3] extra")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)  # one access-log line per request otherwise
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with pytest.MonkeyPatch.context() as env:
            for name in _CLEARED_ENV:
                env.delenv(name, raising=False)
            for name, value in {**_DUMMY_ENV, "MEGURI_S3_ENDPOINT_URL": endpoint}.items():
                env.setenv(name, value)
            yield endpoint
    finally:
        server.stop()
        werkzeug.setLevel(level)


@pytest.fixture(
    params=[pytest.param("local", id="local"), pytest.param("s3", id="s3", marks=pytest.mark.s3)]
)
def artifacts_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, empty artifact store on each backend."""
    if request.param == "local":
        return str(tmp_path / "artifacts")
    endpoint: str = request.getfixturevalue("s3_server")
    bucket = f"bucket-{uuid.uuid4().hex[:16]}"
    _create_bucket(endpoint, bucket)
    return f"s3://{bucket}/artifacts"


@pytest.fixture(
    params=[
        pytest.param((False, False), id="plain"),
        pytest.param((True, False), id="encrypted"),
        pytest.param((False, True), id="served-plain"),
        pytest.param((True, True), id="served-encrypted"),
    ],
)
def artifact_store(request: pytest.FixtureRequest, artifacts_url: str) -> Iterator[ArtifactStore]:
    """The store at ``artifacts_url``, in clear or encrypted at rest, used directly or through
    the platform server."""
    encrypted, served = request.param
    keys = KeyRing((new_key("contract"),), "the test key") if encrypted else None
    store = open_artifact_store(artifacts_url, keys=keys)
    if not served:
        yield store
        return
    server = shared_server(request)
    assert isinstance(store, FsspecArtifactStore)
    with server.client(store) as client:
        yield ServedArtifactStore(client, store)


class ServedArtifactStore(FsspecArtifactStore):
    """The contract over HTTP, for the contract suite: every contract method goes through
    ``client`` (an :class:`HttpArtifactStore` talking to the platform server), while ``fs``,
    ``root``, ``object_path`` and ``gc_temp`` are those of ``backing``, the store that server
    serves, so tests that look at or tamper with the stored objects see the server's storage."""

    def __init__(self, client: HttpArtifactStore, backing: FsspecArtifactStore) -> None:
        super().__init__(backing.fs, backing.root, client.url)
        self.client, self.backing = client, backing

    @property
    def encrypts_at_rest(self) -> bool:
        return self.client.encrypts_at_rest  # what the server says

    @encrypts_at_rest.setter
    def encrypts_at_rest(self, value: bool) -> None:
        self.client.encrypts_at_rest = value

    def put_bytes(self, data: bytes) -> StoredArtifact:
        return self.client.put_bytes(data)

    def put_file(self, path: str | Path) -> StoredArtifact:
        return self.client.put_file(path)

    def get_bytes(self, digest: str) -> bytes:
        return self.client.get_bytes(digest)

    def get_file(self, digest: str, dest: str | Path) -> Path:
        return self.client.get_file(digest, dest)

    def exists(self, digest: str) -> bool:
        return self.client.exists(digest)

    def object_path(self, digest: str) -> str:
        return self.backing.object_path(digest)

    def gc_temp(self, older_than_s: float = 86_400.0) -> int:
        return self.backing.gc_temp(older_than_s)


_SECRET = "contract-secret-" + "x" * 32


class _AppSlot:
    """An ASGI app that forwards every request to the app installed in it; it answers the
    server's lifespan itself (the installed apps serve workspaces they do not own)."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.app(scope, receive, send)


@dataclasses.dataclass
class ArtifactServer:
    """A platform server running for the session. :meth:`serve` makes it serve a workspace
    whose artifact store is the one given; ``tokens`` holds an API token per user of the
    workspace's project (``editor``, ``viewer``, ``outsider``: no role)."""

    url: str
    workspace: Workspace
    tokens: dict[str, str]
    slot: _AppSlot
    apps: dict[tuple[tuple[str, Any], ...], Any] = dataclasses.field(default_factory=dict)

    def serve(self, store: ArtifactStore, **settings: Any) -> Any:
        """Serve ``store`` from now on (``settings``: ``ServerSettings`` fields); the app.

        One app per distinct ``settings`` is built by ``create_app`` and kept: FastAPI spends
        about 0.2 s of CPU preparing a new app's routes on its first request, so a test gets
        the kept app with the workspace it serves (``app.state.workspace``, where
        ``create_app`` puts it) replaced by one holding ``store``."""
        key = tuple(sorted(settings.items()))
        if key not in self.apps:
            self.apps[key] = _new_app(self.workspace, settings)
        app = self.slot.app = self.apps[key]
        app.state.workspace = dataclasses.replace(self.workspace, artifacts=store)
        return app

    def client(
        self, store: ArtifactStore, *, user: str = "editor", project: str | None = None
    ) -> HttpArtifactStore:
        """Serve ``store`` and return a client acting as ``user`` (close it after use)."""
        self.serve(store)
        return HttpArtifactStore(self.url, self.tokens[user], project=project)


def _new_app(workspace: Workspace, settings: dict[str, Any]) -> Any:
    from meguri.server import ServerSettings, create_app
    from meguri.server import _app as app_module
    from meguri.server._r_artifacts import router

    extra = () if router in app_module._ROUTERS else (router,)
    config = ServerSettings(secret_key=_SECRET, **settings)
    return create_app(config, workspace=workspace, extra_routers=extra)


_SERVER = pytest.StashKey["ArtifactServer"]()


@pytest.fixture(scope="session")
def artifact_server(request: pytest.FixtureRequest) -> ArtifactServer:
    """The platform server of the session (see :class:`ArtifactServer`)."""
    return shared_server(request)


def shared_server(request: pytest.FixtureRequest) -> ArtifactServer:
    """The session's :class:`ArtifactServer`, started on first use and stopped when the session
    ends (kept in the session's stash, so a test module need not import a fixture for it)."""
    config = request.config
    if _SERVER in config.stash:
        return config.stash[_SERVER]
    from meguri.serve._server import app_in_background

    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    stack = contextlib.ExitStack()
    ws = open_workspace(factory.mktemp("served"), project="contract", user="owner")
    stack.callback(ws.close)
    tokens = {}
    for name, role in (("editor", "editor"), ("viewer", "viewer"), ("outsider", None)):
        ws.metadata.access.create_user(name, by="owner")
        if role is not None:
            ws.metadata.access.set_role(ws.project.id, name, role, by="owner")
        tokens[name] = ws.metadata.access.create_token(name, name="test", by="owner")[1]
    slot = _AppSlot()
    url = stack.enter_context(app_in_background(slot))
    config.add_cleanup(stack.close)
    server = config.stash[_SERVER] = ArtifactServer(url, ws, tokens, slot)
    return server


def _create_bucket(endpoint: str, bucket: str) -> None:
    import s3fs

    s3fs.S3FileSystem(endpoint_url=endpoint, use_listings_cache=False).call_s3(
        "create_bucket", Bucket=bucket
    )
