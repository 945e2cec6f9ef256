"""The local-folder artifact store: what only a real disk can show.

Bytes flipped on disk, a writer killed with SIGKILL half-way through a large file, several
processes storing the same content at once, folders without write permission, temp files
of dead writers, and memory that stays bounded while streaming.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from meguri.errors import ArtifactCorruptedError, ConfigError, NotFoundError
from meguri.store.artifacts import FsspecArtifactStore, open_artifact_store


@pytest.fixture
def store(tmp_path: Path) -> FsspecArtifactStore:
    opened = open_artifact_store(str(tmp_path / "store"))
    assert isinstance(opened, FsspecArtifactStore)
    return opened


def _write_big(path: Path, mib: int) -> str:
    """Write ``mib`` MiB of distinct blocks to ``path``; return its sha256."""
    block = os.urandom(1 << 20)
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        for i in range(mib):
            chunk = block[i:] + block[:i]
            hasher.update(chunk)
            out.write(chunk)
    return hasher.hexdigest()


def _entries(store: FsspecArtifactStore) -> tuple[list[Path], list[Path]]:
    """(objects, temp files) under the store's root."""
    files = [p for p in Path(store.root).rglob("*") if p.is_file()]
    temps = [p for p in files if p.name.startswith(".tmp-")]
    return sorted(set(files) - set(temps)), temps


def test_object_lives_at_its_digest(store: FsspecArtifactStore) -> None:
    digest = store.put_bytes(b"on disk").digest
    on_disk = Path(store.root, "sha256", digest[:2], digest[2:])
    assert on_disk.read_bytes() == b"on disk"
    assert _entries(store) == ([on_disk], [])


def test_flipped_byte_on_disk_is_detected(store: FsspecArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(100_000))
    digest = store.put_file(source).digest
    path = Path(store.object_path(digest))
    with path.open("r+b") as handle:
        handle.seek(4242)
        byte = handle.read(1)
        handle.seek(4242)
        handle.write(bytes([byte[0] ^ 0x80]))
    with pytest.raises(ArtifactCorruptedError) as caught:
        store.get_bytes(digest)
    message = str(caught.value)
    assert digest in message
    assert str(path) in message
    assert "restore" in message.lower()
    with pytest.raises(ArtifactCorruptedError):
        store.get_file(digest, tmp_path / "copy.bin")
    assert not (tmp_path / "copy.bin").exists()


_KILLED_WRITER = """
import sys
from meguri.store.artifacts import open_artifact_store
open_artifact_store(sys.argv[1]).put_file(sys.argv[2])
"""


def _wait_for_temp(folder: Path, writer: subprocess.Popen[bytes]) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for temp in folder.glob(".tmp-*") if folder.is_dir() else ():
            if temp.stat().st_size > 0:
                return temp
        assert writer.poll() is None, "the writer finished before it could be killed"
        time.sleep(0.001)
    raise AssertionError("the writer never started writing")


@pytest.mark.slow
def test_sigkill_during_large_write_leaves_no_visible_artifact(
    store: FsspecArtifactStore, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    digest = _write_big(big, 200)
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, store.root, str(big)])
    temp = _wait_for_temp(Path(store.root, "sha256", digest[:2]), writer)
    os.kill(writer.pid, signal.SIGKILL)
    assert writer.wait() == -signal.SIGKILL

    assert temp.exists()  # the killed writer's partial file is still there ...
    assert _entries(store) == ([], [temp])  # ... and it is the only thing there
    assert not store.exists(digest)
    with pytest.raises(NotFoundError):
        store.get_bytes(digest)

    assert store.gc_temp(older_than_s=0) == 1
    assert store.put_file(big).digest == digest  # the store still works
    copy = store.get_file(digest, tmp_path / "copy.bin")
    with copy.open("rb") as handle:
        assert hashlib.file_digest(handle, "sha256").hexdigest() == digest
    assert _entries(store) == ([Path(store.object_path(digest))], [])


_RACING_WRITER = """
import sys
from meguri.store.artifacts import open_artifact_store
store = open_artifact_store(sys.argv[1])
shift = int(sys.argv[2])
blobs = [bytes([i]) * (50_000 + i) for i in range(20)]
for blob in blobs[shift:] + blobs[:shift]:
    store.put_bytes(blob)
store.put_file(sys.argv[3])
"""


@pytest.mark.slow
def test_processes_storing_the_same_content_at_once(
    store: FsspecArtifactStore, tmp_path: Path
) -> None:
    shared = tmp_path / "shared.bin"
    digest = _write_big(shared, 8)
    writers = [
        subprocess.Popen([sys.executable, "-c", _RACING_WRITER, store.root, str(n), str(shared)])
        for n in range(4)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    objects, temps = _entries(store)
    assert temps == []
    assert len(objects) == 21
    assert store.get_file(digest, tmp_path / "copy.bin").stat().st_size == 8 << 20
    for i in range(20):
        blob = bytes([i]) * (50_000 + i)
        assert store.get_bytes(hashlib.sha256(blob).hexdigest()) == blob


def test_temp_files_are_invisible_and_collected_when_stale(store: FsspecArtifactStore) -> None:
    digest = hashlib.sha256(b"half written").hexdigest()
    folder = Path(store.object_path(digest)).parent
    folder.mkdir(parents=True)
    (folder / ".tmp-deadwriter").write_bytes(b"half wri")
    assert not store.exists(digest)
    assert store.gc_temp(older_than_s=3600) == 0  # could still be a live writer
    an_hour_ago = time.time() - 3700
    os.utime(folder / ".tmp-deadwriter", (an_hour_ago, an_hour_ago))
    assert store.gc_temp(older_than_s=3600) == 1
    assert list(folder.iterdir()) == []


def test_streaming_keeps_memory_bounded(store: FsspecArtifactStore, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    digest = _write_big(big, 48)
    tracemalloc.start()
    try:
        assert store.put_file(big).digest == digest
        store.get_file(digest, tmp_path / "copy.bin")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for a 48 MiB file"


def test_file_urls_and_relative_paths_open_the_same_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    digest = open_artifact_store("rel/store").put_bytes(b"same").digest
    assert open_artifact_store(f"file://{tmp_path}/rel/store").get_bytes(digest) == b"same"
    assert open_artifact_store(str(tmp_path / "rel" / "store")).exists(digest)


def test_folder_blocked_by_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(ConfigError, match="a file is in the way"):
        open_artifact_store(str(tmp_path / "file" / "artifacts"))


_UNPRIVILEGED = """
import os, sys
import fsspec.implementations.local
import meguri.store.artifacts._local
from meguri.errors import ConfigError
from meguri.store.artifacts import open_artifact_store
if os.geteuid() == 0:
    os.setuid(65534)  # root ignores file modes; 'nobody' does not
for attempt in (lambda: open_artifact_store(sys.argv[1] + "/new"),
                lambda: open_artifact_store(sys.argv[1]).put_bytes(b"x")):
    try:
        attempt()
    except ConfigError as exc:
        print(exc)
    else:
        sys.exit("no ConfigError")
"""


@pytest.fixture
def read_only_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as base:
        os.chmod(base, 0o755)
        folder = Path(base, "artifacts")
        folder.mkdir(mode=0o555)
        try:
            yield folder
        finally:
            folder.chmod(stat.S_IRWXU)


def test_folder_without_write_permission_is_a_config_error(read_only_folder: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _UNPRIVILEGED, str(read_only_folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    created, written = result.stdout.splitlines()
    assert f"Cannot create the artifact folder {read_only_folder}/new: permission denied" in created
    assert f"artifact folder {read_only_folder}: permission denied" in written
    assert "MEGURI_ARTIFACTS_URL" in created
    assert "MEGURI_ARTIFACTS_URL" in written


def test_take_file_renames_into_place_once(tmp_path: Path) -> None:
    import hashlib
    import os
    import time

    from meguri.store.artifacts._local import open_local

    store = open_local(str(tmp_path / "store"))
    data = os.urandom(5 << 20)
    first = store.scratch() / "a.bin"
    first.write_bytes(data)
    stored = store.take_file(first)
    assert stored.digest == hashlib.sha256(data).hexdigest()
    assert not first.exists()  # taken, not copied
    assert store.get_bytes(stored.digest) == data
    again = store.scratch() / "b.bin"
    again.write_bytes(data)
    assert store.take_file(again) == stored and not again.exists()  # identical: stored once
    leftover = store.scratch() / "killed-writer"
    leftover.mkdir()
    old = time.time() - 10
    os.utime(leftover, (old, old))
    assert store.gc_temp(older_than_s=5) == 1
    assert not leftover.exists()
