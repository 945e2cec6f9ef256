"""The artifact store through the platform server (``HttpArtifactStore`` and its routes), beyond
the contract suite (which runs through HTTP too: ``[served-…]`` in test_contract_artifacts.py):
roles, refused bodies leave nothing behind, paths never come from the client, memory stays
bounded, and with encryption at rest no plaintext of an upload reaches the server's disk."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from meguri.errors import ArtifactCorruptedError, ArtifactError, ConfigError, NotFoundError
from meguri.store.artifacts import (
    ArtifactStore,
    FsspecArtifactStore,
    KeyRing,
    StoredArtifact,
    open_artifact_store,
)
from meguri.store.artifacts._http import HttpArtifactStore
from meguri.store.artifacts._keys import new_key
from meguri.testing._artifact_backends import ArtifactServer, shared_server

BASE = "/api/v1/artifacts"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> ArtifactServer:
    return shared_server(request)


def _store(folder: Path, *, encrypted: bool) -> FsspecArtifactStore:
    keys = KeyRing((new_key("remote"),), "the test key") if encrypted else None
    store = open_artifact_store(str(folder), keys=keys)
    assert isinstance(store, FsspecArtifactStore)
    return store


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def backing(request: pytest.FixtureRequest, tmp_path: Path) -> FsspecArtifactStore:
    return _store(tmp_path / "served", encrypted=request.param)


@pytest.fixture
def raw(server: ArtifactServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def _auth(server: ArtifactServer, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.tokens[user]}"}


def _files(store: FsspecArtifactStore) -> list[str]:
    return sorted(store.fs.find(store.root))


def test_roles_decide_who_stores_and_who_reads(
    server: ArtifactServer, backing: FsspecArtifactStore, raw: httpx.Client
) -> None:
    data = b"role-checked content"
    digest = hashlib.sha256(data).hexdigest()
    with server.client(backing, user="viewer") as viewer:
        with pytest.raises(ConfigError, match=r"needs the editor role .*your role there is viewer"):
            viewer.put_bytes(data)
        assert _files(backing) == []  # refused before anything was read or written
    with server.client(backing, user="editor", project="contract") as editor:
        assert editor.put_bytes(data) == StoredArtifact(digest, len(data))
    with server.client(backing, user="viewer") as viewer:
        assert viewer.exists(digest) and viewer.get_bytes(digest) == data
        assert viewer.encrypts_at_rest is backing.encrypts_at_rest
    with server.client(backing, user="outsider") as outsider:
        for read in (outsider.get_bytes, outsider.exists):
            with pytest.raises(ConfigError, match=r"needs the viewer role .*no role there"):
                read(digest)
    with server.client(backing, user="editor", project="elsewhere") as lost:
        with pytest.raises(NotFoundError, match="No project named 'elsewhere'"):
            lost.exists(digest)
    assert raw.get(f"{BASE}/{digest}").status_code == 401  # no token at all
    forged = {"Authorization": "Bearer mgr_forged"}
    assert raw.put(f"{BASE}/{digest}", content=data, headers=forged).status_code == 401
    answer = raw.put(f"{BASE}/{digest}", content=data, headers=_auth(server, "viewer"))
    assert (answer.status_code, answer.json()["error"]["code"]) == (403, "forbidden")


def test_a_body_that_does_not_match_its_digest_is_refused_and_nothing_stored(
    server: ArtifactServer, backing: FsspecArtifactStore, raw: httpx.Client
) -> None:
    server.serve(backing)
    claimed = hashlib.sha256(b"what the client claims").hexdigest()
    body = b"what it sends" * 100_000
    answer = raw.put(f"{BASE}/{claimed}", content=body, headers=_auth(server, "editor"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "digest_mismatch"
    assert hashlib.sha256(body).hexdigest() in answer.json()["error"]["message"]
    assert _files(backing) == []  # no object under either digest, no temp file
    stored = backing.put_bytes(b"already here")
    wrong = raw.put(f"{BASE}/{stored.digest}", content=b"not that", headers=_auth(server, "editor"))
    assert wrong.status_code == 422  # refused even when the digest is already stored
    assert backing.get_bytes(stored.digest) == b"already here"
    assert _files(backing) == [backing.object_path(stored.digest)]


def test_oversized_and_unsized_bodies_are_refused(
    server: ArtifactServer, tmp_path: Path, raw: httpx.Client
) -> None:
    backing = _store(tmp_path / "served", encrypted=False)
    limit = 1 << 20
    server.serve(backing, max_upload_bytes=limit)
    big = os.urandom(limit + 1)
    digest = hashlib.sha256(big).hexdigest()
    answer = raw.put(f"{BASE}/{digest}", content=big, headers=_auth(server, "editor"))
    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "too_large")
    chunked = raw.put(
        f"{BASE}/{digest}", content=iter([big[:10], big[10:]]), headers=_auth(server, "editor")
    )
    assert chunked.status_code == 411  # no Content-Length: the size must be known up front
    assert _files(backing) == []
    source = tmp_path / "big.bin"
    source.write_bytes(big)
    with HttpArtifactStore(server.url, server.tokens["editor"]) as client:
        with pytest.raises(ArtifactError, match=f"at most {limit} bytes.*max_upload_bytes"):
            client.put_file(source)  # refused by the client before sending anything
        assert client.put_bytes(big[:limit]).size == limit  # exactly the limit is fine


@pytest.mark.parametrize(
    "segment",
    [
        "..%2f..%2f..%2fetc%2fpasswd",
        "%2e%2e",
        "%252e%252e%252fsecret",
        "..%5c..%5cwindows",
        "A" * 64,
        "g" * 64,
        "a" * 63,
        "a" * 65,
        "a" * 64 + "%2f..",
        "a" * 64 + "%23x",
        "a" * 64 + ";x",
        "%2fproc%2fself%2froot",
    ],
)
def test_malformed_digests_and_traversal_are_refused(
    server: ArtifactServer, tmp_path: Path, segment: str
) -> None:
    backing = _store(tmp_path / "served", encrypted=False)
    server.serve(backing)
    host = urlsplit(server.url).netloc
    before = sorted(p for p in tmp_path.rglob("*"))
    for method in ("GET", "HEAD", "PUT"):
        connection = http.client.HTTPConnection(host, timeout=10)
        try:  # http.client sends the path exactly as written (httpx would normalise it)
            connection.request(
                method, f"{BASE}/{segment}", body=b"x", headers=_auth(server, "editor")
            )
            answer = connection.getresponse()
            status, body = answer.status, answer.read()
        finally:
            connection.close()
        assert 400 <= status < 500, (method, status, body)
        if method != "HEAD":
            assert json.loads(body)["error"]["message"]
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere


def test_a_50_mb_file_round_trips_with_bounded_client_memory(
    server: ArtifactServer, backing: FsspecArtifactStore, tmp_path: Path
) -> None:
    server.serve(backing)
    source = tmp_path / "big.bin"
    with source.open("wb") as out:
        for _ in range(50):
            out.write(os.urandom(1 << 20))
    child = r"""
import json, sys
from pathlib import Path
from meguri.store.artifacts._http import HttpArtifactStore
def peak_kib():  # this process's peak RSS (ru_maxrss would include the parent's, kept over exec)
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0])
url, token, source, dest = sys.argv[1:]
store = HttpArtifactStore(url, token)
warm = Path(dest).with_name("warm.bin")
warm.write_bytes(b"warm-up" * 1000)  # every code path once, before measuring
store.get_file(store.put_file(warm).digest, warm)
before = peak_kib()
stored = store.put_file(source)
store.get_file(stored.digest, dest)
after = peak_kib()
data = store.get_bytes(stored.digest)  # the control: a read that holds the whole file
control = peak_kib()
print(json.dumps({"digest": stored.digest, "growth_kib": after - before,
                  "control_kib": control - after, "peak_kib": after}))
"""
    dest = tmp_path / "back" / "big.bin"
    dest.parent.mkdir()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", child, server.url, server.tokens["editor"], str(source), str(dest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    with source.open("rb") as stream:
        expected = hashlib.file_digest(stream, "sha256").hexdigest()
    assert report["digest"] == expected
    with dest.open("rb") as stream:
        assert hashlib.file_digest(stream, "sha256").hexdigest() == expected
    assert sorted(p.name for p in dest.parent.iterdir()) == ["big.bin", "warm.bin"]  # no temp
    print(
        f"50 MB up and down in {elapsed:.2f}s; client peak RSS growth {report['growth_kib']} KiB"
        f" (get_bytes of the same file: {report['control_kib']} KiB)"
    )
    assert report["control_kib"] > 50 << 10  # the measure sees a whole file held in memory
    assert report["growth_kib"] < 16 << 10  # streaming holds a few chunks, not the file


def _marker_files(folders: list[Path], marker: bytes) -> list[Path]:
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink() and marker in path.read_bytes():
                found.append(path)
    return found


def test_with_encryption_no_plaintext_of_an_upload_reaches_the_server_disk(
    server: ArtifactServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where any spooled file would go
    marker = f"PLAINTEXT-MARKER-{os.urandom(8).hex()}".encode()
    source = tmp_path / "client" / "secret.bin"
    source.parent.mkdir()
    source.write_bytes(marker * 200_000)  # about 6 MB: several sealed segments
    small = marker + b" in a small one"
    watched = [tmp_path / "served", temp, server.workspace.root]
    for encrypted in (False, True):
        backing = _store(tmp_path / "served" / str(encrypted), encrypted=encrypted)
        with server.client(backing) as client:
            digest = client.put_file(source).digest
            client.put_bytes(small)
            assert client.get_file(digest, tmp_path / "client" / "back.bin").read_bytes() == (
                source.read_bytes()
            )
        found = _marker_files(watched, marker)
        if encrypted:
            assert found == [], found
            assert backing.fs.cat_file(backing.object_path(digest))[:4] == b"MGRE"
        else:  # the search finds plaintext where there is some: it is a fair search
            assert backing.object_path(digest) in map(str, found)
            for path in found:
                path.unlink()
    assert list(temp.iterdir()) == []


class _DictStore(ArtifactStore):
    """A store of another kind (not fsspec): the server spools uploads for it."""

    url = "dict://"

    def __init__(self, *, encrypts: bool) -> None:
        self.blobs: dict[str, bytes] = {}
        self.encrypts_at_rest = encrypts

    def put_bytes(self, data: bytes) -> StoredArtifact:
        digest = hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return StoredArtifact(digest, len(data))

    def put_file(self, path: str | Path) -> StoredArtifact:
        return self.put_bytes(Path(path).read_bytes())

    def get_bytes(self, digest: str) -> bytes:
        if digest not in self.blobs:
            raise NotFoundError(f"No artifact sha256:{digest}.")
        return self.blobs[digest]

    def get_file(self, digest: str, dest: str | Path) -> Path:
        Path(dest).write_bytes(self.get_bytes(digest))
        return Path(dest)

    def exists(self, digest: str) -> bool:
        return digest in self.blobs


@pytest.mark.parametrize("encrypts", [False, True], ids=["plain", "encrypted"])
def test_other_stores_get_uploads_through_a_spooled_file_that_is_deleted(
    server: ArtifactServer,
    raw: httpx.Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    encrypts: bool,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    store = _DictStore(encrypts=encrypts)
    with server.client(store) as client:
        stored = client.put_bytes(b"spooled" * 1000)
        assert store.blobs == {stored.digest: b"spooled" * 1000}
        assert client.get_bytes(stored.digest) == b"spooled" * 1000
    claimed = hashlib.sha256(b"claimed").hexdigest()
    refused = raw.put(f"{BASE}/{claimed}", content=b"other", headers=_auth(server, "editor"))
    assert refused.status_code == 422 and claimed not in store.blobs
    assert list(tmp_path.iterdir()) == []  # spooled files deleted, in memory when encrypting


_HALF_UPLOAD = r"""
import sys, time, httpx
url, token, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
def body():
    yield b"h" * (size // 2)
    print("sent half", flush=True)
    time.sleep(120)
    yield b"h" * (size - size // 2)
httpx.put(url, content=body(), timeout=300,
          headers={"Authorization": f"Bearer {token}", "Content-Length": str(size)})
"""


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_client_killed_mid_upload_leaves_nothing_visible(
    server: ArtifactServer, tmp_path: Path, encrypted: bool
) -> None:
    backing = _store(tmp_path / "served", encrypted=encrypted)
    server.serve(backing)
    size = 8 << 20
    digest = hashlib.sha256(b"h" * size).hexdigest()
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _HALF_UPLOAD,
            f"{server.url}{BASE}/{digest}",
            server.tokens["editor"],
            str(size),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"sent half\n"
        _wait_for(lambda: any(".tmp-" in p for p in _files(backing)))  # mid-write on the server
        assert not backing.exists(digest)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()  # type: ignore[union-attr]
    _wait_for(lambda: _files(backing) == [])  # the server removed its temp object
    assert not backing.exists(digest)


def _wait_for(condition: object, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_an_unreachable_server_names_meguri_server(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with HttpArtifactStore(f"http://127.0.0.1:{port}", "mgr_x") as client:
        with pytest.raises(ConfigError, match=r"Cannot reach the meguri server.*MEGURI_SERVER"):
            client.exists("a" * 64)
    with pytest.raises(ConfigError, match="MEGURI_SERVER"):
        HttpArtifactStore("127.0.0.1:8000", None)


def test_a_fault_in_a_sealed_object_reaches_the_client_and_never_the_destination(
    server: ArtifactServer, tmp_path: Path
) -> None:
    backing = _store(tmp_path / "served", encrypted=True)
    data = os.urandom(3 << 20)  # three sealed segments
    digest = backing.put_bytes(data).digest
    path = backing.object_path(digest)
    sealed = bytearray(backing.fs.cat_file(path))
    dest = tmp_path / "out" / "file.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"previous")
    with server.client(backing) as client:
        for offset in (100, len(sealed) - 100):  # in the first segment, then in the last
            damaged = bytearray(sealed)
            damaged[offset] ^= 0x01
            backing.fs.pipe_file(path, bytes(damaged))
            with pytest.raises(ArtifactError) as raised:
                client.get_file(digest, dest)
            if offset == 100:  # found before the answer starts: its own error, no server path
                assert isinstance(raised.value, ArtifactCorruptedError)
                assert f"sha256:{digest} is corrupted" in str(raised.value)
                assert str(tmp_path) not in str(raised.value)
            assert dest.read_bytes() == b"previous"
            assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]
