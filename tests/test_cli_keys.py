"""``meguri keys generate|rotate|status`` on a real project folder and key file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from meguri.cli import _keys
from meguri.errors import ConfigError
from meguri.store._workspace import open_artifacts
from meguri.store.artifacts import EncryptedArtifactStore, load_key_ring, open_artifact_store

OBJECTS = [b"model.json of churn", b"x" * (3 << 20), b""]


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()
    _keys.register(root)
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (the current one) whose store holds OBJECTS under a first key, and
    one object written before encryption was turned on."""
    for name in ("MEGURI_ARTIFACTS_URL", "MEGURI_ENCRYPTION_KEY", "MEGURI_ENCRYPTION_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "proj"
    (folder / ".meguri").mkdir(parents=True)
    monkeypatch.chdir(folder)
    open_artifact_store(str(folder / ".meguri" / "artifacts")).put_bytes(b"legacy in clear")
    return folder


def _invoke(app: typer.Typer, *args: str) -> tuple[int, str, BaseException | None]:
    """Exit code, output (lines as printed) and the exception of ``meguri ARGS``."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output, result.exception


def _flat(text: str) -> str:
    """``text`` with its line wrapping undone (the console wraps at its width)."""
    return " ".join(text.split())


def _generate(app: typer.Typer, path: Path, key_id: str = "k1") -> None:
    code, out, exc = _invoke(app, "keys", "generate", "--out", str(path), "--id", key_id)
    assert (code, exc) == (0, None), out


def _store(key_file: Path) -> EncryptedArtifactStore:
    store = open_artifacts(encryption_key_file=str(key_file))
    assert isinstance(store, EncryptedArtifactStore)
    return store


def test_generate_writes_a_private_key_file_once(app: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "keys"
    code, out, _ = _invoke(app, "keys", "generate", "--out", str(path))
    assert code == 0 and "MEGURI_ENCRYPTION_KEY_FILE" in out
    assert (path.stat().st_mode & 0o777) == 0o600
    ring = load_key_ring({}, path)
    assert ring is not None and len(ring.keys) == 1 and ring.current.id in out
    assert path.read_text().split(":")[1].strip() not in out  # the secret is never printed
    before = path.read_bytes()
    code, _, exc = _invoke(app, "keys", "generate", "--out", str(path))
    assert code == 1 and isinstance(exc, ConfigError) and "never overwritten" in str(exc)
    assert path.read_bytes() == before
    code, _, exc = _invoke(app, "keys", "generate", "--out", str(tmp_path / "k2"), "--id", "a b")
    assert isinstance(exc, ConfigError) and not (tmp_path / "k2").exists()


def test_rotate_reencrypts_everything_then_drops_the_old_key(
    app: typer.Typer, project: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys"
    _generate(app, key_file)
    digests = [_store(key_file).put_bytes(data).digest for data in OBJECTS]
    legacy = hashlib.sha256(b"legacy in clear").hexdigest()

    code, out, exc = _invoke(app, "keys", "rotate", "--key-file", str(key_file))
    assert (code, exc) == (0, None), out
    ring = load_key_ring({}, key_file)
    assert ring is not None and len(ring.keys) == 2 and ring.ids[1] == "k1"
    new_id = ring.current.id
    assert f"3 re-encrypted with {new_id}, 1 encrypted (were in clear)" in _flat(out)
    assert "--resume --remove-old" in out
    store = _store(key_file)
    assert {store.key_of(d) for d in [*digests, legacy]} == {new_id}

    code, out, exc = _invoke(
        app, "keys", "rotate", "--key-file", str(key_file), "--resume", "--remove-old"
    )
    assert (code, exc) == (0, None), out
    assert f"4 already under {new_id}" in _flat(out) and "now holds only" in _flat(out)
    ring = load_key_ring({}, key_file)
    assert ring is not None and ring.ids == [new_id]
    store = _store(key_file)
    assert [store.get_bytes(d) for d in digests] == OBJECTS
    assert store.get_bytes(legacy) == b"legacy in clear"
    assert (key_file.stat().st_mode & 0o777) == 0o600


def test_an_interrupted_rotation_resumes(app: typer.Typer, project: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    _generate(app, key_file)
    for data in OBJECTS:
        _store(key_file).put_bytes(data)
    code, _, _ = _invoke(app, "keys", "rotate", "--key-file", str(key_file), "--resume")
    assert code == 0  # (encrypts the legacy object; now every object is under k1)
    key_file.write_text(_keys_line("k2") + key_file.read_text())  # a new key on top

    seen: list[str] = []

    def stop_after_two(digest: str) -> None:
        seen.append(digest)
        if len(seen) == 2:
            raise KeyboardInterrupt  # as Ctrl-C would, between two objects

    with pytest.raises(KeyboardInterrupt):
        _store(key_file).reencrypt(on_object=stop_after_two)
    code, out, exc = _invoke(app, "keys", "rotate", "--key-file", str(key_file), "--resume")
    assert (code, exc) == (0, None), out
    assert "2 re-encrypted with k2" in _flat(out) and "2 already under k2" in _flat(out)


def _keys_line(key_id: str) -> str:
    from meguri.store.artifacts._keys import new_key

    return new_key(key_id).line() + "\n"


def test_rotate_reports_damaged_objects_and_keeps_the_old_key(
    app: typer.Typer, project: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys"
    _generate(app, key_file)
    bad = _store(key_file).put_bytes(b"will be damaged").digest
    path = Path(_store(key_file).object_path(bad))
    sealed = path.read_bytes()
    path.write_bytes(sealed[:-1] + bytes([sealed[-1] ^ 0x01]))  # one bit of the last tag
    code, out, _ = _invoke(app, "keys", "rotate", "--key-file", str(key_file), "--remove-old")
    assert code == 1
    flat = _flat(out)
    assert f"sha256:{bad}" in flat and "1 failed" in flat and "Keep the old keys" in flat
    ring = load_key_ring({}, key_file)
    assert ring is not None and ring.ids[1:] == ["k1"]  # not removed


def test_status_counts_objects_per_key(app: typer.Typer, project: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    _generate(app, key_file)
    for data in OBJECTS:
        _store(key_file).put_bytes(data)
    code, out, exc = _invoke(app, "keys", "status", "--key-file", str(key_file))
    assert (code, exc) == (0, None), out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    assert " 3 " in lines["k1"] and "current" in lines["k1"]
    assert " 1 " in lines["(plaintext)"]
    assert "in clear" not in out
    key_file.write_text(_keys_line("k9"))
    key_file.chmod(0o600)
    stale = project / ".meguri" / "cache" / "models" / ("0" * 64)
    stale.mkdir(parents=True)
    (stale / "model.json").write_text("{}")
    code, out, _ = _invoke(app, "keys", "status", "--key-file", str(key_file))
    assert "MISSING" in out  # k1's objects can no longer be read with this file
    assert "holds model packages in clear" in _flat(out)


def test_rotate_refuses_a_key_file_others_can_read(
    app: typer.Typer, project: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys"
    _generate(app, key_file)
    key_file.chmod(0o644)
    before = key_file.read_bytes()
    code, _, exc = _invoke(app, "keys", "rotate", "--key-file", str(key_file))
    assert code == 1 and isinstance(exc, ConfigError) and "chmod 600" in str(exc)
    assert key_file.read_bytes() == before
