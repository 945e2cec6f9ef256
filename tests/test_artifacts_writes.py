"""Writes that fail half-way, on every backend: nothing becomes visible, nothing is left over.

A file that changes between the hashing pass and the copy must not be stored under the digest
of its old content; the write is abandoned (local: the temp file is removed; S3: the
multipart upload is aborted), which ``gc_temp(older_than_s=0)`` confirms by finding nothing
left to clean.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from meguri.errors import ArtifactError, NotFoundError
from meguri.store.artifacts import ArtifactStore, FsspecArtifactStore, _digest


@pytest.fixture
def fsspec_store(artifact_store: ArtifactStore) -> FsspecArtifactStore:
    assert isinstance(artifact_store, FsspecArtifactStore)
    if hasattr(artifact_store, "part_size"):
        artifact_store.part_size = 5 << 20  # S3's smallest part: exercise multipart uploads
    return artifact_store


def test_file_changed_while_stored_is_not_stored(
    fsspec_store: FsspecArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "moving.bin"
    source.write_bytes(b"new" * (4 << 20))  # 12 MiB: streamed, three parts on S3
    stale = hashlib.sha256(b"what it held when hashed").hexdigest()
    monkeypatch.setattr(_digest, "hash_file", lambda path: (stale, source.stat().st_size))
    with pytest.raises(ArtifactError, match="changed while it was being stored"):
        fsspec_store.put_file(source)
    assert not fsspec_store.exists(stale)
    with pytest.raises(NotFoundError):
        fsspec_store.get_bytes(stale)
    assert fsspec_store.gc_temp(older_than_s=0) == 0  # no temp file, no pending upload
    assert fsspec_store.fs.find(fsspec_store.root) == []


def test_large_file_roundtrip(fsspec_store: FsspecArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "large.bin"
    source.write_bytes(bytes(range(256)) * (48 << 10) + b"tail")  # 12 MiB + 4 bytes
    stored = fsspec_store.put_file(source)
    assert stored.size == source.stat().st_size
    assert (
        fsspec_store.get_file(stored.digest, tmp_path / "copy").read_bytes() == source.read_bytes()
    )
    assert fsspec_store.fs.find(fsspec_store.root) == [fsspec_store.object_path(stored.digest)]
    assert fsspec_store.gc_temp(older_than_s=0) == 0
