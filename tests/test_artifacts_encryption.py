"""Encryption at rest of artifacts: the sealed format, tampering, keys, rotation, and the rule
that with encryption on no plaintext of a dataset or a model reaches the workspace's disk.

The whole artifact contract also runs encrypted (``[encrypted-…]`` in
``test_contract_artifacts.py``); this file checks what only encryption has.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import struct
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meguri.errors import ArtifactCorruptedError, ConfigError
from meguri.store.artifacts import (
    EncryptedArtifactStore,
    FsspecArtifactStore,
    KeyRing,
    load_key_ring,
    memory_cache_folder,
    open_artifact_store,
)
from meguri.store.artifacts._keys import Key, create_key_file, derived_id, new_key
from meguri.store.artifacts._memory import _ensure_private
from meguri.store.artifacts._sealed import SEGMENT, sealed_size

MiB = 1 << 20


def _ring(*ids: str) -> KeyRing:
    return KeyRing(tuple(new_key(i) for i in ids), "the test keys")


def _store(folder: Path, ring: KeyRing) -> EncryptedArtifactStore:
    store = open_artifact_store(str(folder), keys=ring)
    assert isinstance(store, EncryptedArtifactStore)
    return store


def _content(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(f"plaintext-{seed}".encode()).digest()
    return (block * (size // 32 + 1))[:size]


def _raw(store: FsspecArtifactStore, digest: str) -> bytes:
    return Path(store.object_path(digest)).read_bytes()


def _open_by_hand(sealed: bytes, digest: str, ring: KeyRing) -> bytes:
    """The plaintext of a sealed object, read from the documented layout alone."""
    magic, version, segment, id_len = struct.unpack(">4sBIB", sealed[:10])
    assert (magic, version, segment) == (b"MGRE", 1, SEGMENT)
    header = sealed[: 10 + id_len]
    key = ring.get(header[10:].decode())
    assert key is not None
    body, out, index, record = sealed[len(header) :], [], 0, segment + 28
    while body:
        piece, body = body[:record], body[record:]
        aad = header + bytes.fromhex(digest) + struct.pack(">QB", index, not body)
        out.append(AESGCM(key.secret).decrypt(piece[:12], piece[12:], aad))
        index += 1
    return b"".join(out)


# -- the format ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT, 5 * SEGMENT // 2]
)
def test_objects_are_sealed_in_the_documented_layout(tmp_path: Path, size: int) -> None:
    ring = _ring("k1")
    store = _store(tmp_path / "store", ring)
    data = _content(size, seed=size)
    stored = store.put_bytes(data)
    assert stored.digest == hashlib.sha256(data).hexdigest()  # the address is the plaintext's
    sealed = _raw(store, stored.digest)
    assert len(sealed) == sealed_size(size, "k1")
    assert _open_by_hand(sealed, stored.digest, ring) == data
    if size >= 64:
        assert data[size // 2 : size // 2 + 32] not in sealed
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    assert store.put_file(source) == stored  # streamed, same object: deduplicated
    assert store.get_bytes(stored.digest) == data
    assert store.get_file(stored.digest, tmp_path / "out.bin").read_bytes() == data


def test_each_write_uses_fresh_nonces(tmp_path: Path) -> None:
    ring = _ring("k1")
    one, two = _store(tmp_path / "a", ring), _store(tmp_path / "b", ring)
    data = _content(3 * SEGMENT)
    digest = one.put_bytes(data).digest
    two.put_bytes(data)
    a, b = _raw(one, digest), _raw(two, digest)
    header = 10 + 2
    nonces = {a[header + i * (SEGMENT + 28) :][:12] for i in range(3)}
    nonces |= {b[header + i * (SEGMENT + 28) :][:12] for i in range(3)}
    assert len(nonces) == 6
    assert a != b


def test_large_objects_stream_with_bounded_memory(tmp_path: Path) -> None:
    store = _store(tmp_path / "store", _ring("k1"))
    source = tmp_path / "large.bin"
    with source.open("wb") as out:
        for i in range(24):
            out.write(_content(MiB, seed=i))
    tracemalloc.start()
    try:
        stored = store.put_file(source)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        copy = store.get_file(stored.digest, tmp_path / "copy.bin")
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == stored.digest
    assert put_peak < 8 * MiB and get_peak < 8 * MiB  # a few segments, not 24 MiB


# -- tampering ------------------------------------------------------------------------------


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "where", ["segment size", "nonce", "ciphertext", "tag", "last segment"], ids=str
)
def test_a_changed_byte_is_detected(tmp_path: Path, where: str) -> None:
    store = _store(tmp_path / "store", _ring("k1"))
    digest = store.put_bytes(_content(2 * SEGMENT + 100)).digest
    path = Path(store.object_path(digest))
    first = 12  # header: 10 fixed bytes and the id "k1"
    offset = {
        "segment size": 6,
        "nonce": first + 3,
        "ciphertext": first + 12 + SEGMENT // 2,
        "tag": first + 12 + SEGMENT + 5,
        "last segment": path.stat().st_size - 40,
    }[where]
    _flip(path, offset)
    with pytest.raises(ArtifactCorruptedError, match=digest) as caught:
        store.get_bytes(digest)
    assert "restore" in str(caught.value).lower()
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"previous")
    with pytest.raises(ArtifactCorruptedError, match=digest):
        store.get_file(digest, dest)
    assert dest.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest.bin", "store"]


def test_objects_cannot_be_swapped_cut_or_extended(tmp_path: Path) -> None:
    store = _store(tmp_path / "store", _ring("k1"))
    a = store.put_bytes(_content(3 * SEGMENT, seed=1)).digest
    b = store.put_bytes(_content(3 * SEGMENT, seed=2)).digest
    path_a, path_b = Path(store.object_path(a)), Path(store.object_path(b))
    original = path_a.read_bytes()
    record = SEGMENT + 28
    attacks = {
        "moved from another address": path_b.read_bytes(),  # same size, valid under b
        "last segment dropped": original[: 12 + 2 * record],
        "segment appended": original + original[12 : 12 + record],
        "segments reordered": original[:12]
        + original[12 + record : 12 + 2 * record]
        + original[12 : 12 + record]
        + original[12 + 2 * record :],
    }
    for name, forged in attacks.items():
        path_a.write_bytes(forged)
        with pytest.raises(ArtifactCorruptedError, match=a):
            store.get_bytes(a)
        with pytest.raises(ArtifactCorruptedError, match=a):
            store.get_file(a, tmp_path / name)
    path_a.write_bytes(original)
    assert store.get_bytes(a) == _content(3 * SEGMENT, seed=1)


# -- keys -----------------------------------------------------------------------------------


def test_a_missing_key_or_no_key_is_named(tmp_path: Path) -> None:
    writer = _store(tmp_path / "store", _ring("k-old"))
    digest = writer.put_bytes(b"model weights").digest
    other = _store(tmp_path / "store", _ring("k-other"))
    with pytest.raises(ConfigError, match=r"key 'k-old'.*holds: k-other") as caught:
        other.get_bytes(digest)
    assert "key file" in str(caught.value)
    with pytest.raises(ConfigError, match="k-old"):
        other.get_file(digest, tmp_path / "x")
    plain = open_artifact_store(str(tmp_path / "store"))
    with pytest.raises(ConfigError, match=r"encrypted \(with the key 'k-old'\).*ENCRYPTION_KEY"):
        plain.get_bytes(digest)
    with pytest.raises(ConfigError, match="no encryption key is configured"):
        plain.get_file(digest, tmp_path / "y")
    same_id = KeyRing((Key("k-old", os.urandom(32)),), "a forged key")
    with pytest.raises(ArtifactCorruptedError, match=digest):
        _store(tmp_path / "store", same_id).get_bytes(digest)  # right id, wrong bytes
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _key_file(tmp_path: Path, *lines: str, mode: int = 0o600) -> Path:
    path = tmp_path / "keys"
    path.write_text("".join(f"{line}\n" for line in lines))
    path.chmod(mode)
    return path


def test_key_file_first_line_is_current_and_older_lines_read(tmp_path: Path) -> None:
    new, old = new_key("k2"), new_key("k1")
    path = _key_file(tmp_path, "# rotated", new.line(), "", old.line())
    ring = load_key_ring({"MEGURI_ENCRYPTION_KEY_FILE": str(path)})
    assert ring is not None and ring.ids == ["k2", "k1"] and ring.current == new
    assert load_key_ring({}) is None  # encryption off
    encoded = base64.b64encode(old.secret).decode()
    from_env = load_key_ring({"MEGURI_ENCRYPTION_KEY": encoded})
    assert from_env is not None and from_env.current.secret == old.secret
    assert from_env.current.id == derived_id(old.secret)
    again = load_key_ring({"MEGURI_ENCRYPTION_KEY": encoded})
    assert again is not None and again.current.id == from_env.current.id  # the same id each time


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["k1:" + base64.b64encode(b"short").decode()], r"line 1 is not a key: .*32 random bytes"),
        (["k1:not base64!"], r"line 1 is not a key: .*base64"),
        (["# nothing"], "holds no key"),
        (["bad id:" + base64.b64encode(bytes(32)).decode()], "line 1: expected id:base64"),
        (["k1:" + base64.b64encode(bytes(32)).decode()] * 2, "line 2: .*appears twice"),
    ],
)
def test_malformed_key_files_name_the_line_not_the_key(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    path = _key_file(tmp_path, *lines)
    with pytest.raises(ConfigError, match=message) as caught:
        load_key_ring({}, path)
    for line in lines:
        secret = line.partition(":")[2]
        if len(secret) > 8:
            assert secret not in str(caught.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_key_files_open_to_others_are_refused(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path, new_key("k1").line(), mode=mode)
    with pytest.raises(ConfigError, match=rf"other users \(mode {mode:o}\).*chmod 600"):
        load_key_ring({"MEGURI_ENCRYPTION_KEY_FILE": str(path)})


def test_key_settings_conflicts_and_missing_files(tmp_path: Path) -> None:
    path = create_key_file(tmp_path / "new.keys", [new_key("k1")])
    assert (path.stat().st_mode & 0o777) == 0o600
    with pytest.raises(ConfigError, match="never overwritten"):
        create_key_file(path, [new_key("k2")])
    both = {"MEGURI_ENCRYPTION_KEY_FILE": str(path), "MEGURI_ENCRYPTION_KEY": "x"}
    with pytest.raises(ConfigError, match="Both"):
        load_key_ring(both)
    with pytest.raises(ConfigError, match="does not exist"):
        load_key_ring({"MEGURI_ENCRYPTION_KEY_FILE": str(tmp_path / "nope")})


# -- rotation -------------------------------------------------------------------------------


def test_rotation_reseals_every_object_and_resumes(artifacts_url: str) -> None:
    """On every backend (local folder, S3): each object rewritten in place, atomically."""
    old, new = new_key("k1"), new_key("k2")

    def store(*keys: Key) -> EncryptedArtifactStore:
        opened = open_artifact_store(artifacts_url, keys=KeyRing(keys, "test"))
        assert isinstance(opened, EncryptedArtifactStore)
        return opened

    legacy = open_artifact_store(artifacts_url).put_bytes(b"written before encryption").digest
    first = store(old)
    sizes = (10, SEGMENT + 3, 0)
    sealed = [first.put_bytes(_content(n, seed=n)).digest for n in sizes]
    assert first.get_bytes(legacy) == b"written before encryption"  # plaintext still reads
    rotated = store(new, old)
    seen: list[str] = []
    report = rotated.reencrypt(on_object=seen.append)
    assert (report.resealed, report.encrypted, report.current, report.failed) == (3, 1, 0, {})
    assert sorted(seen) == sorted([legacy, *sealed])
    assert {rotated.key_of(d) for d in seen} == {"k2"}
    again = rotated.reencrypt()
    assert (again.current, again.resealed, again.encrypted) == (4, 0, 0)
    only_new = store(new)
    for n, digest in zip(sizes, sealed, strict=True):
        assert only_new.get_bytes(digest) == _content(n, seed=n)
    assert only_new.get_bytes(legacy) == b"written before encryption"
    raw = only_new.fs.cat_file(only_new.object_path(legacy))
    assert b"written before encryption" not in raw
    objects = sorted(only_new.fs.find(only_new.root))
    assert objects == sorted(only_new.object_path(d) for d in seen)  # no temp object left
    assert only_new.gc_temp(older_than_s=0) == 0


def test_rotation_leaves_a_damaged_object_as_it_was(tmp_path: Path) -> None:
    old, new = new_key("k1"), new_key("k2")
    first = _store(tmp_path / "store", KeyRing((old,), "old"))
    good = first.put_bytes(_content(100)).digest
    bad = first.put_bytes(_content(3 * SEGMENT, seed=9)).digest
    _flip(Path(first.object_path(bad)), 12 + 2 * (SEGMENT + 28) + 50)  # the last segment
    damaged = _raw(first, bad)
    rotated = _store(tmp_path / "store", KeyRing((new, old), "both"))
    report = rotated.reencrypt()
    assert report.resealed == 1 and list(report.failed) == [bad] and not report.done
    assert "corrupted" in report.failed[bad]
    assert _raw(rotated, bad) == damaged  # the rewrite was abandoned before its rename
    assert rotated.key_of(good) == "k2"
    assert not list((tmp_path / "store").rglob(".tmp-*"))


# -- the plaintext rule ---------------------------------------------------------------------


def test_memory_folder_is_private_and_in_memory(tmp_path: Path) -> None:
    folder = memory_cache_folder(tmp_path)
    try:
        assert folder.parent.name == f"meguri-{os.getuid()}"
        assert (folder.parent.stat().st_mode & 0o777) == 0o700
        mounts = Path("/proc/self/mounts").read_text().split("\n")
        base = str(folder.parent.parent)
        assert any(f" {base} tmpfs " in f" {line} " for line in mounts)
        assert tmp_path not in folder.parents
    finally:
        shutil.rmtree(folder)
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o755)
    planted.chmod(0o755)
    with pytest.raises(ConfigError, match="not a private folder"):
        _ensure_private(planted)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(ConfigError, match="not a private folder"):
        _ensure_private(link)


@pytest.fixture
def encrypted_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MEGURI_ENCRYPTION_KEY_FILE set to a fresh key file, as an operator would."""
    for name in ("MEGURI_ARTIFACTS_URL", "MEGURI_STORE_URL", "MEGURI_ENCRYPTION_KEY"):
        monkeypatch.delenv(name, raising=False)
    path = create_key_file(tmp_path / "artifacts.keys", [new_key("k1")])
    monkeypatch.setenv("MEGURI_ENCRYPTION_KEY_FILE", str(path))
    return path


def _windows(data: bytes, width: int = 40) -> list[bytes]:
    """Three distinctive slices of ``data`` (or all of it when short). A slice of a sha256 in
    hex is moved on: digests are addresses, which the metadata store records by design."""
    if len(data) <= 3 * width:
        return [data]
    slices = []
    for target in (len(data) // 4, len(data) // 2, len(data) - 2 * width):
        starts = [*range(target, len(data) - width, width), *range(0, target, width)]
        windows = (data[start : start + width] for start in starts)
        slices.append(next(w for w in windows if not re.fullmatch(rb"[0-9a-f]+", w)))
    return slices


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


@contextlib.contextmanager
def _no_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Python's temporary folder made a regular file, so that creating anything in it fails
    (even as root, whom permissions would not stop), and ``TMPDIR`` (native code, child
    processes) an empty folder that must hold no file of ours after. Yields the latter."""
    blocker = tmp_path / "no-temp"
    blocker.write_bytes(b"")
    native = tmp_path / "native-tmp"
    native.mkdir()
    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(blocker))
        patch.setenv("TMPDIR", str(native))
        yield native
    assert {p.name for p in native.iterdir()} <= {".ses"}  # ONNX Runtime's session id only


def test_no_plaintext_of_data_or_model_is_left_in_the_workspace(
    tmp_path: Path, encrypted_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import meguri.data as md
    import meguri.datasets
    from meguri import registry
    from meguri.spec import parse_spec
    from meguri.store import open_workspace
    from meguri.testing.specs import quick_spec_text
    from meguri.train import train

    ws = open_workspace(tmp_path / "proj", project="enc", user="ann")
    assert isinstance(ws.artifacts, EncryptedArtifactStore)
    try:
        with _no_temporary_files(tmp_path, monkeypatch):  # ingest, prepare, package: in memory
            result = train(parse_spec(quick_spec_text("enc", folds=2)), workspace=ws)
            version = registry.register_model(result, "bc", workspace=ws)
        registry.promote("bc@1", workspace=ws)
        model = registry.load_model("bc@production", workspace=ws)
        cache = registry.download_package("bc@1", workspace=ws)
        assert (tmp_path / "proj") not in cache.parents and cache.is_dir()

        # Reading back works: predictions, and the dataset equals the bundled file.
        test = result.prepared.raw["test"].head(10)
        batch = {c.name: test.get_column(c.name).to_numpy() for c in model.signature.inputs}
        assert model.predict(batch).values.shape == (10,)
        raw_version = next(
            v
            for d in md.list_datasets(workspace=ws)
            for v in md.history(d.name, workspace=ws)
            if v.row_count == 569
        )
        bundled = Path(meguri.datasets.__file__).parent / "breast_cancer.parquet"
        stored = md.read(raw_version, workspace=ws).collect()
        assert stored.equals(pl.read_parquet(bundled).select(stored.columns))

        # What must not be on disk: every artifact's plaintext, model and data above all.
        store = ws.artifacts
        plaintexts = {d: store.get_bytes(d) for d in store.digests()}
        digests = {path: str(e["sha256"]) for path, e in version.files.items()}
        package = {path: plaintexts[digest] for path, digest in digests.items()}
        assert {"model.json", "pipeline.onnx"} <= set(package)
        assert package["pipeline.onnx"].startswith(b"\x08")  # an ONNX protobuf
        assert raw_version.data_digest in plaintexts
        markers = {(d, w) for d, data in plaintexts.items() for w in _windows(data)}
        markers |= {("model.json", package["model.json"])}
        workspace_files = _files(tmp_path / "proj")
        assert any(p.suffix == ".db" for p in workspace_files)
        contents = {str(p.relative_to(tmp_path)): p.read_bytes() for p in workspace_files}
        found = [(name, d[:12]) for name, data in contents.items() for d, m in markers if m in data]
        assert found == []

        # The same markers are found where the same artifacts sit in clear (the scan works).
        control = open_artifact_store(str(tmp_path / "control"))
        for data in plaintexts.values():
            control.put_bytes(data)
        blob = b"".join(p.read_bytes() for p in _files(tmp_path / "control"))
        assert all(marker in blob for _, marker in markers)
    finally:
        shutil.rmtree(memory_cache_folder(ws.root), ignore_errors=True)
        ws.close()

    # A wrong key, or none, is refused with the key's name; a changed byte is caught.
    monkeypatch.setenv("MEGURI_ENCRYPTION_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.delenv("MEGURI_ENCRYPTION_KEY_FILE")
    wrong = open_workspace(tmp_path / "proj", project="enc", user="ann")
    try:
        with pytest.raises(ConfigError, match=r"key 'k1'.*does not hold"):
            registry.load_model("bc@production", workspace=wrong)
    finally:
        shutil.rmtree(memory_cache_folder(wrong.root), ignore_errors=True)
        wrong.close()
    monkeypatch.delenv("MEGURI_ENCRYPTION_KEY")
    none = open_workspace(tmp_path / "proj", project="enc", user="ann")
    try:
        with pytest.raises(ConfigError, match=r"'k1'.*no encryption key is configured"):
            registry.load_model("bc@production", workspace=none)
        assert not _files(tmp_path / "proj" / ".meguri" / "cache")  # nothing half-fetched
    finally:
        none.close()
    onnx = Path(store.object_path(digests["pipeline.onnx"]))
    _flip(onnx, onnx.stat().st_size // 2)
    with pytest.raises(ArtifactCorruptedError, match="does not authenticate"):
        store.get_bytes(digests["pipeline.onnx"])


# -- temporary copies (ingest, packaging, load tests) ----------------------------------------


@pytest.mark.parametrize("lazy", [False, True], ids=["frame", "lazy"])
def test_dataset_files_on_their_way_to_the_store_stay_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lazy: bool
) -> None:
    from meguri.data._catalog_hash import content_hash, file_content_hash, parquet_file

    frame = pl.DataFrame({"id": range(5000), "text": [f"secret-{i}" for i in range(5000)]})
    store = _store(tmp_path / "store", _ring("k1"))
    with _no_temporary_files(tmp_path, monkeypatch):
        with parquet_file(frame.lazy() if lazy else frame) as written:
            path = written.path
            assert str(path).startswith("/proc/self/fd/")  # an anonymous in-memory file
            assert os.readlink(path).startswith("/memfd:")
            assert file_content_hash(path) == (content_hash(frame), 5000)
            stored = store.put_file(path)
        assert not path.exists()  # closed: the memory is freed
    assert pl.read_parquet(store.get_bytes(stored.digest)).equals(frame)
    with parquet_file(frame, private=False) as on_disk:  # asked for a file: a private folder
        assert (on_disk.path.parent.stat().st_mode & 0o777) == 0o700
        assert pl.read_parquet(on_disk.path).equals(frame)
    assert not on_disk.path.parent.exists()
    with parquet_file(frame, tmp_path) as scratch:  # a plain local store's scratch folder
        assert scratch.path.parent.parent == tmp_path


def test_load_test_bodies_never_touch_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meguri.deploy._checks_load import _private_files, load_test
    from meguri.serve import ServeSettings, create_app
    from meguri.serve._server import app_in_background
    from test_serve_support import breast_cancer, onnx_model

    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    body = f'{{"instances": {breast_cancer()[0][:2].tolist()}}}'.encode()
    app = create_app(onnx_model(), settings=ServeSettings())
    with app_in_background(app) as url, _no_temporary_files(tmp_path, monkeypatch):
        figures = load_test(
            f"{url}/invocations", body, headers={"content-type": "application/json"},
            duration_s=0.5, concurrency=2, generator="wrk",
        )  # fmt: skip
    assert figures.generator == "wrk" and figures.requests > 10 and figures.errors == 0
    # Without memfd_create, the files sit in a folder of mode 700, removed on exit.
    monkeypatch.delattr(os, "memfd_create")
    with _private_files() as make:
        path, fd = make("body", body)
        assert fd == -1 and Path(path).read_bytes() == body
        assert (Path(path).parent.stat().st_mode & 0o777) == 0o700
    assert not Path(path).exists() and not Path(path).parent.exists()


def test_uploads_to_the_platform_server_are_spooled_in_memory(
    tmp_path: Path, encrypted_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset and a run artifact uploaded over HTTP reach the sealed store without their
    plaintext touching a disk: the server spools them in its in-memory folder."""
    import httpx

    from meguri.serve._server import app_in_background
    from meguri.server import ServerSettings, create_app
    from meguri.store import open_workspace

    ws = open_workspace(tmp_path / "proj", project="enc", user="ann")
    ws.metadata.access.create_user("ed", by="ann")
    ws.metadata.access.set_role(ws.project.id, "ed", "editor", by="ann")
    token = ws.metadata.access.create_token("ed", name="t", by="ann")[1]
    marker = "upload-marker-" + "q" * 24
    csv = "a,b\n" + "".join(f"{i},{marker}{i}\n" for i in range(200))
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with (
            _no_temporary_files(tmp_path, monkeypatch),
            app_in_background(create_app(ServerSettings(secret_key="s" * 48), workspace=ws)) as url,
        ):
            sent = httpx.post(
                f"{url}/api/v1/projects/enc/datasets/uploaded/versions",
                content=csv.encode(),
                headers={**headers, "Content-Type": "text/csv"},
            )
            assert sent.status_code == 201, sent.text
        found = [
            p
            for p in (tmp_path / "proj").rglob("*")
            if p.is_file() and marker.encode() in p.read_bytes()
        ]
        assert found == []
    finally:
        ws.close()
