"""The artifact store in an S3 bucket (or any S3-compatible service), through s3fs.

Imported only for ``s3://`` URLs, so s3fs and botocore load only when they are used.

Endpoint, first found: ``storage_options["endpoint_url"]`` (or its ``client_kwargs``),
``MEGURI_S3_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``; else AWS itself.
Credentials: the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``~/.aws``, instance roles) or the ``key``/``secret``/``token`` options.

Atomicity is S3's own: an object written by one PUT, or by a multipart upload, appears only
when the PUT or the ``CompleteMultipartUpload`` succeeds, whole. A writer killed before that
leaves at most a pending multipart upload, which no reader sees; ``gc_temp`` aborts stale
ones (a bucket lifecycle rule ``AbortIncompleteMultipartUpload`` does the same).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.exceptions
import s3fs

from meguri.errors import ArtifactError, ConfigError, MeguriError
from meguri.store.artifacts._fsspec import FsspecArtifactStore

ENDPOINT_VARIABLES = ("MEGURI_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

_MAX_PARTS = 9_000
"""Parts per upload we plan for (S3 allows 10,000); larger objects get larger parts."""

_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)


class S3ArtifactStore(FsspecArtifactStore):
    """Artifacts under ``s3://bucket/prefix``."""

    part_size = 16 << 20
    """Size of a multipart-upload part; objects up to it are written with one PUT."""

    _boundary_errors = (OSError, botocore.exceptions.BotoCoreError)

    def __init__(self, fs: Any, root: str, endpoint: str | None) -> None:
        super().__init__(fs, root, f"s3://{root}")
        self.endpoint = endpoint
        self.bucket, _, prefix = root.partition("/")
        self._upload_prefix = f"{prefix}/sha256/" if prefix else "sha256/"

    def _write(self, path: str, chunks: Iterable[bytes], size: int) -> None:
        bucket, _, key = path.partition("/")
        parts = _batches(chunks, max(self.part_size, -(-size // _MAX_PARTS)))
        first = next(parts, b"")
        second = next(parts, None)
        if second is None:  # one PUT: the object appears whole or not at all
            self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=first)
        else:
            self._multipart(bucket, key, itertools.chain((first, second), parts))

    def _multipart(self, bucket: str, key: str, parts: Iterator[bytes]) -> None:
        # The parts stay invisible until CompleteMultipartUpload creates the object whole.
        created = self.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
        ids = {"Bucket": bucket, "Key": key, "UploadId": created["UploadId"]}
        try:
            done = [self._upload_part(ids, number, body) for number, body in enumerate(parts, 1)]
            self.fs.call_s3("complete_multipart_upload", MultipartUpload={"Parts": done}, **ids)
        except BaseException:
            with suppress(*self._boundary_errors):
                self.fs.call_s3("abort_multipart_upload", **ids)
            raise

    def _upload_part(self, ids: dict[str, str], number: int, body: bytes) -> dict[str, Any]:
        out = self.fs.call_s3("upload_part", PartNumber=number, Body=body, **ids)
        return {"PartNumber": number, "ETag": out["ETag"]}

    def gc_temp(self, older_than_s: float = 86_400.0) -> int:
        """Abort this store's multipart uploads started over ``older_than_s`` seconds ago."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        with self._translated("clean up unfinished uploads"):
            stale = [up for up in self._pending_uploads() if up["Initiated"] <= cutoff]
            for upload in stale:
                self.fs.call_s3(
                    "abort_multipart_upload",
                    Bucket=self.bucket,
                    Key=upload["Key"],
                    UploadId=upload["UploadId"],
                )
        return len(stale)

    def _pending_uploads(self) -> Iterator[dict[str, Any]]:
        markers: dict[str, str] = {}
        while True:
            page = self.fs.call_s3(
                "list_multipart_uploads", Bucket=self.bucket, Prefix=self._upload_prefix, **markers
            )
            yield from page.get("Uploads", [])
            if not page.get("IsTruncated"):
                return
            markers = {
                "KeyMarker": page["NextKeyMarker"],
                "UploadIdMarker": page["NextUploadIdMarker"],
            }

    def _translate(self, exc: BaseException, action: str) -> MeguriError:
        message = _s3_advice(exc, self.bucket, self.endpoint)
        if message is None:
            return super()._translate(exc, action)
        return ArtifactError(f"Cannot {action} in {self.url}: {message}")

    def _not_found(self, digest: str, exc: FileNotFoundError) -> MeguriError:
        if _error_code(exc) == "NoSuchBucket" or self._bucket_missing():
            advice = _missing_bucket(self.bucket, self.endpoint)
            return ArtifactError(f"Cannot read sha256:{digest} in {self.url}: {advice}")
        return super()._not_found(digest, exc)

    def _bucket_missing(self) -> bool:
        try:
            self.fs.call_s3("head_bucket", Bucket=self.bucket)
        except FileNotFoundError:
            return True
        except self._boundary_errors:  # unknown: report the digest as missing
            pass
        return False


def _batches(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``chunks`` regrouped into blocks of ``size`` bytes (the last one may be shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code behind ``exc`` (s3fs keeps botocore's ClientError as the cause)."""
    for err in (exc, exc.__cause__):
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            return str(code) if code else None
    return None


def _missing_bucket(bucket: str, endpoint: str | None) -> str:
    return (
        f"the bucket {bucket!r} does not exist at {endpoint or 'the AWS default endpoint'}. "
        f"Create it (aws s3 mb s3://{bucket}) or fix the artifact store URL."
    )


def _s3_advice(exc: BaseException, bucket: str, endpoint: str | None) -> str | None:
    """One line saying what went wrong with S3 and how to fix it; None for other errors."""
    code = _error_code(exc)
    where = endpoint or "the AWS default endpoint"
    if isinstance(exc, botocore.exceptions.NoCredentialsError) or code in _CREDENTIAL_CODES:
        return (
            f"no valid AWS credentials ({exc}). Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass key/secret in storage_options."
        )
    if isinstance(exc, botocore.exceptions.ConnectionError):
        return (
            f"cannot reach the S3 endpoint {where} ({exc}). Check MEGURI_S3_ENDPOINT_URL "
            "or AWS_ENDPOINT_URL, and that the service is up."
        )
    if code == "NoSuchBucket":
        return _missing_bucket(bucket, endpoint)
    if isinstance(exc, PermissionError) or code == "AccessDenied":
        return (
            f"access denied ({exc}). Grant these credentials s3:GetObject, s3:PutObject, "
            f"s3:ListBucket and s3:AbortMultipartUpload on bucket {bucket!r}."
        )
    return None


def resolve_endpoint(options: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """The S3 endpoint URL from the storage options, else the environment; None for AWS."""
    explicit = options.get("endpoint_url") or dict(options.get("client_kwargs") or {}).get(
        "endpoint_url"
    )
    if explicit:
        return str(explicit)
    return next((environ[name] for name in ENDPOINT_VARIABLES if environ.get(name)), None)


def open_s3(location: str, options: dict[str, Any]) -> S3ArtifactStore:
    """The store at ``s3://<location>`` (``bucket`` or ``bucket/prefix``)."""
    bucket, _, prefix = location.partition("/")
    if not bucket:
        raise ConfigError(
            f"The artifact store URL s3://{location} names no bucket: use "
            "s3://bucket or s3://bucket/prefix."
        )
    endpoint = resolve_endpoint(options, os.environ)
    kwargs: dict[str, Any] = {"use_listings_cache": False, **options}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    try:
        fs = s3fs.S3FileSystem(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid S3 storage options {sorted(options)}: {exc}.") from exc
    root = f"{bucket}/{prefix.strip('/')}".rstrip("/")
    return S3ArtifactStore(fs, root, endpoint)
