"""The S3 artifact store against moto's S3 server on loopback.

S3 is the one emulated part of the test suite: no real S3 can run here, so moto plays the
service (fixture ``s3_server``), reached over HTTP like any S3-compatible endpoint. What is
tested here is ours: multipart uploads and their clean-up, and the translation of S3 failures
(no bucket, no credentials, unreachable endpoint) into one-line errors that name the fix.
"""

from __future__ import annotations

import re
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from meguri.errors import ArtifactError, NotFoundError
from meguri.store.artifacts import open_artifact_store
from meguri.store.artifacts._s3 import S3ArtifactStore, resolve_endpoint

pytestmark = pytest.mark.s3
S3FileSystem = pytest.importorskip("s3fs", reason="s3fs is the [s3] extra").S3FileSystem

_DIGEST = "ab" * 32


def _s3(url: str, **options: Any) -> S3ArtifactStore:
    store = open_artifact_store(url, storage_options=options)
    assert isinstance(store, S3ArtifactStore)
    return store


@pytest.fixture
def bucket_url(s3_server: str) -> str:
    """A fresh bucket on the moto server; the store URL of a prefix in it."""
    bucket = f"bucket-{uuid.uuid4().hex[:16]}"
    S3FileSystem(endpoint_url=s3_server, use_listings_cache=False).call_s3(
        "create_bucket", Bucket=bucket
    )
    return f"s3://{bucket}/artifacts"


def test_multipart_upload_roundtrip(bucket_url: str, tmp_path: Path) -> None:
    store = _s3(bucket_url)
    store.part_size = 5 << 20
    source = tmp_path / "model.bin"
    source.write_bytes(b"0123456789abcdef" * (13 << 16))  # 13 MiB: three parts
    stored = store.put_file(source)
    assert store.get_bytes(stored.digest) == source.read_bytes()
    assert store.fs.find(store.root) == [store.object_path(stored.digest)]


def test_gc_temp_aborts_only_stale_uploads_of_this_store(bucket_url: str) -> None:
    store = _s3(bucket_url)
    key = store.object_path(_DIGEST).partition("/")[2]
    store.fs.call_s3("create_multipart_upload", Bucket=store.bucket, Key=key)
    store.fs.call_s3("create_multipart_upload", Bucket=store.bucket, Key="elsewhere/file")
    assert not store.exists(_DIGEST)  # a pending upload is no object
    # moto reports every upload as initiated in 2010, hence an age limit of 30 years here.
    assert store.gc_temp(older_than_s=30 * 365 * 86_400) == 0
    assert store.gc_temp(older_than_s=0) == 1
    pending = store.fs.call_s3("list_multipart_uploads", Bucket=store.bucket).get("Uploads", [])
    assert [upload["Key"] for upload in pending] == ["elsewhere/file"]


def test_missing_bucket_names_the_fix(s3_server: str, tmp_path: Path) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    store = _s3(f"s3://{bucket}/artifacts")
    assert not store.exists(_DIGEST)
    attempts = (
        lambda: store.put_bytes(b"x"),
        lambda: store.get_bytes(_DIGEST),  # a GET names the missing bucket
        lambda: store.get_file(_DIGEST, tmp_path / "dest"),  # a HEAD does not: we ask
    )
    for attempt in attempts:
        with pytest.raises(ArtifactError, match=f"the bucket '{bucket}' does not exist") as caught:
            attempt()
        assert not isinstance(caught.value, NotFoundError)
        assert f"aws s3 mb s3://{bucket}" in str(caught.value)
        assert "\n" not in str(caught.value)


def test_missing_credentials_name_the_fix(bucket_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = _s3(bucket_url, skip_instance_cache=True)
    with pytest.raises(ArtifactError, match=r"no valid AWS credentials.*AWS_ACCESS_KEY_ID"):
        store.put_bytes(b"x")


def test_unreachable_endpoint_names_the_fix(bucket_url: str) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    store = _s3(bucket_url, endpoint_url=endpoint, config_kwargs={"retries": {"max_attempts": 1}})
    with pytest.raises(ArtifactError, match=f"cannot reach the S3 endpoint {endpoint}"):
        store.get_bytes(_DIGEST)


def test_url_without_bucket_is_a_config_error() -> None:
    from meguri.errors import ConfigError

    with pytest.raises(ConfigError, match="names no bucket"):
        open_artifact_store("s3:///prefix")


def test_endpoint_resolution_order() -> None:
    env = {"AWS_ENDPOINT_URL": "http://aws", "AWS_ENDPOINT_URL_S3": "http://aws-s3"}
    assert resolve_endpoint({}, {}) is None
    assert resolve_endpoint({}, env) == "http://aws-s3"
    assert resolve_endpoint({}, {**env, "MEGURI_S3_ENDPOINT_URL": "http://ours"}) == "http://ours"
    assert resolve_endpoint({"client_kwargs": {"endpoint_url": "http://ck"}}, env) == "http://ck"
    assert resolve_endpoint({"endpoint_url": "http://opt"}, env) == "http://opt"


def test_store_url_is_normalised(s3_server: str) -> None:
    assert _s3("s3://bucket/a/b/").url == "s3://bucket/a/b"
    assert _s3("s3://bucket").object_path(_DIGEST) == f"bucket/sha256/ab/{_DIGEST[2:]}"


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        ("AccessDenied", "access denied.*s3:PutObject"),
        ("InvalidAccessKeyId", "no valid AWS credentials"),
        ("SignatureDoesNotMatch", "no valid AWS credentials"),
    ],
)
def test_client_errors_are_translated(code: str, advice: str) -> None:
    from botocore.exceptions import ClientError

    store = _s3("s3://bucket/prefix", endpoint_url="http://127.0.0.1:9")
    error = PermissionError("denied")
    error.__cause__ = ClientError({"Error": {"Code": code, "Message": "no"}}, "PutObject")
    translated = store._translate(error, "store sha256:abc")
    assert isinstance(translated, ArtifactError)
    assert re.search(advice, str(translated))
    assert str(translated).startswith("Cannot store sha256:abc in s3://bucket/prefix: ")
