"""Contract of ``ArtifactStore``, run on every artifact backend (fixture ``artifact_store``).

Import it into a test module (``from meguri.testing.contract_artifacts import *``) of a
session that loads ``meguri.testing.pytest_plugin``: each test runs once per backend. Tests
that inspect or tamper with stored objects do so through fsspec, so they need an
:class:`~meguri.store.artifacts.FsspecArtifactStore`; other stores skip them.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from meguri.errors import ArtifactCorruptedError, ArtifactError, NotFoundError
from meguri.store.artifacts import ArtifactStore, FsspecArtifactStore

__all__ = [
    "test_concurrent_puts_of_the_same_content",
    "test_corrupted_object_raises_on_read",
    "test_empty_content",
    "test_get_file_overwrites_destination",
    "test_identical_content_is_stored_once",
    "test_layout_is_content_addressed",
    "test_malformed_digest_is_rejected",
    "test_missing_digest_raises_not_found",
    "test_put_bytes_roundtrip",
    "test_put_file_matches_put_bytes",
    "test_truncated_object_is_rewritten_by_put",
]

_MALFORMED = ["", "abc", "A" * 64, "g" * 64, "a" * 63, "a" * 65, "../" + "a" * 61, "a" * 63 + "/"]


def _fsspec(store: ArtifactStore) -> FsspecArtifactStore:
    if not isinstance(store, FsspecArtifactStore):
        pytest.skip("inspects stored objects through fsspec")
    return store


def _objects(store: FsspecArtifactStore) -> list[str]:
    """Every file under the store's root, temp files included."""
    return sorted(store.fs.find(store.root))


def _content(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(f"{seed}".encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def test_put_bytes_roundtrip(artifact_store: ArtifactStore) -> None:
    data = b"meguri artifact \x00\xff"
    stored = artifact_store.put_bytes(data)
    assert stored.digest == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data)
    assert artifact_store.exists(stored.digest)
    assert artifact_store.get_bytes(stored.digest) == data


def test_put_file_matches_put_bytes(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    for size in (10, 5 * (1 << 20) + 7):  # read whole, and streamed across chunk boundaries
        data = _content(size, seed=size)
        source = tmp_path / f"in-{size}.bin"
        source.write_bytes(data)
        stored = artifact_store.put_file(source)
        assert stored == artifact_store.put_bytes(data)
        out = artifact_store.get_file(stored.digest, tmp_path / "out" / f"{size}.bin")
        assert out == tmp_path / "out" / f"{size}.bin"
        assert out.read_bytes() == data
        assert artifact_store.put_file(str(source)) == stored  # str paths work too


def test_empty_content(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    stored = artifact_store.put_file(empty)
    assert stored.size == 0
    assert stored.digest == hashlib.sha256(b"").hexdigest()
    assert artifact_store.get_bytes(stored.digest) == b""
    assert artifact_store.get_file(stored.digest, tmp_path / "copy").read_bytes() == b""


def test_layout_is_content_addressed(artifact_store: ArtifactStore) -> None:
    store = _fsspec(artifact_store)
    digest = store.put_bytes(b"layout").digest
    assert store.object_path(digest) == f"{store.root}/sha256/{digest[:2]}/{digest[2:]}"
    assert _objects(store) == [store.object_path(digest)]


def test_identical_content_is_stored_once(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    store = _fsspec(artifact_store)
    source = tmp_path / "same.bin"
    source.write_bytes(_content(6 << 20))
    first = store.put_file(source)
    modified = store.fs.modified(store.object_path(first.digest))
    assert store.put_file(source) == first
    assert store.put_bytes(source.read_bytes()) == first
    assert _objects(store) == [store.object_path(first.digest)]
    assert store.fs.modified(store.object_path(first.digest)) == modified  # not rewritten


def test_missing_digest_raises_not_found(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    digest = hashlib.sha256(b"never stored").hexdigest()
    assert not artifact_store.exists(digest)
    with pytest.raises(NotFoundError, match=digest):
        artifact_store.get_bytes(digest)
    with pytest.raises(NotFoundError, match=digest):
        artifact_store.get_file(digest, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("digest", _MALFORMED)
def test_malformed_digest_is_rejected(
    artifact_store: ArtifactStore, tmp_path: Path, digest: str
) -> None:
    for read in (
        artifact_store.get_bytes,
        artifact_store.exists,
        lambda d: artifact_store.get_file(d, tmp_path / "x"),
    ):
        with pytest.raises(ArtifactError, match="Malformed artifact digest"):
            read(digest)


def test_corrupted_object_raises_on_read(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    store = _fsspec(artifact_store)
    data = _content(5 << 20, seed=1)
    digest = store.put_bytes(data).digest
    tampered = bytearray(data)
    tampered[len(data) // 2] ^= 0x01
    store.fs.pipe_file(store.object_path(digest), bytes(tampered))  # same size, one bit off
    with pytest.raises(ArtifactCorruptedError, match=digest) as caught:
        store.get_bytes(digest)
    assert "restore" in str(caught.value).lower()
    dest = tmp_path / "downloads" / "dest.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"previous")
    with pytest.raises(ArtifactCorruptedError, match=digest):
        store.get_file(digest, dest)
    assert dest.read_bytes() == b"previous"  # a corrupted copy never replaces the destination
    assert [p.name for p in dest.parent.iterdir()] == ["dest.bin"]  # no temp file left


def test_truncated_object_is_rewritten_by_put(artifact_store: ArtifactStore) -> None:
    store = _fsspec(artifact_store)
    data = b"x" * 1000
    digest = store.put_bytes(data).digest
    store.fs.pipe_file(store.object_path(digest), data[:10])
    with pytest.raises(ArtifactCorruptedError):
        store.get_bytes(digest)
    store.put_bytes(data)  # storing the original again repairs it
    assert store.get_bytes(digest) == data


def test_get_file_overwrites_destination(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    digest = artifact_store.put_bytes(b"new content").digest
    dest = tmp_path / "sub" / "file.txt"
    dest.parent.mkdir()
    dest.write_bytes(b"old content, longer than the new one")
    assert artifact_store.get_file(digest, str(dest)).read_bytes() == b"new content"


def test_concurrent_puts_of_the_same_content(artifact_store: ArtifactStore) -> None:
    workers = 8
    data = _content(300_000, seed=2)
    barrier = threading.Barrier(workers)

    def put(_: int) -> str:
        barrier.wait()
        return artifact_store.put_bytes(data).digest

    with ThreadPoolExecutor(workers) as pool:
        digests = set(pool.map(put, range(workers)))
    assert digests == {hashlib.sha256(data).hexdigest()}
    (digest,) = digests
    assert artifact_store.get_bytes(digest) == data
    if isinstance(artifact_store, FsspecArtifactStore):
        assert _objects(artifact_store) == [artifact_store.object_path(digest)]
