"""pytest fixtures of the artifact backends: a local folder, and S3 on moto's server.

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
  contract, dedup, atomicity and verified reads included, on every backend).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from meguri.store.artifacts import ArtifactStore, KeyRing, open_artifact_store
from meguri.store.artifacts._keys import new_key

__all__ = ["artifact_store", "artifacts_url", "s3_server"]

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
    params=[pytest.param(False, id="plain"), pytest.param(True, id="encrypted")],
)
def artifact_store(request: pytest.FixtureRequest, artifacts_url: str) -> ArtifactStore:
    """The store at ``artifacts_url``, in clear or encrypted at rest."""
    keys = KeyRing((new_key("contract"),), "the test key") if request.param else None
    return open_artifact_store(artifacts_url, keys=keys)


def _create_bucket(endpoint: str, bucket: str) -> None:
    import s3fs

    s3fs.S3FileSystem(endpoint_url=endpoint, use_listings_cache=False).call_s3(
        "create_bucket", Bucket=bucket
    )
