"""A wrong store URL, an unreachable server, an unwritable folder: each a one-line MeguriError
that names the fix, never a raw SQLAlchemy or driver traceback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from meguri.errors import ConfigError, MeguriError, MetadataStoreError
from meguri.store.metadata import open_metadata_store
from meguri.testing._metadata_backends import make_database_url

_RAW_MARKERS = ("[SQL:", "sqlalche.me", "Traceback", "psycopg.", "sqlite3.")


def _assert_one_line(err: MeguriError, *fix: str) -> None:
    message = str(err)
    assert "\n" not in message, message
    assert not any(marker in message for marker in _RAW_MARKERS), message
    for words in fix:
        assert words in message, message


@pytest.mark.parametrize("url", ["mysql://x", "not a url", "", "http://example.com/db", "sqlite"])
def test_wrong_url_names_the_supported_forms(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_metadata_store(url)
    _assert_one_line(info.value, "sqlite:///", "postgresql://")


def test_password_is_not_shown() -> None:
    with pytest.raises(ConfigError) as info:
        open_metadata_store("mysql://ana:s3cret@db.example.com/meguri")
    assert "s3cret" not in str(info.value)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_postgres_names_the_server_and_the_fix() -> None:
    url = f"postgresql://meguri:s3cret@127.0.0.1:{_closed_port()}/meguri"
    with pytest.raises(MetadataStoreError) as info:
        open_metadata_store(url)
    _assert_one_line(info.value, "127.0.0.1", "server is running", "MEGURI_STORE_URL")
    assert "s3cret" not in str(info.value)


@pytest.mark.postgres
def test_missing_postgres_database(postgres_url: str) -> None:
    url = make_database_url(postgres_url, "meguri_no_such_database")
    with pytest.raises(MetadataStoreError) as info:
        open_metadata_store(url)
    _assert_one_line(info.value, "meguri_no_such_database", "does not exist", "MEGURI_STORE_URL")


def test_folder_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError) as info:
        open_metadata_store(f"sqlite:///{blocker / 'sub' / 'meguri.db'}")
    _assert_one_line(info.value, str(blocker / "sub"), "MEGURI_STORE_URL")


def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "meguri.db"
    path.write_bytes(b"these bytes are not a SQLite database, " * 100)
    with pytest.raises(MetadataStoreError) as info:
        open_metadata_store(f"sqlite:///{path}")
    _assert_one_line(info.value, "not a database", "MEGURI_STORE_URL")


def test_database_path_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "meguri.db").mkdir()
    (tmp_path / "meguri.db" / "x").write_text("x")
    with pytest.raises(ConfigError) as info:
        open_metadata_store(f"sqlite:///{tmp_path / 'meguri.db'}")
    _assert_one_line(info.value, "is a folder", "MEGURI_STORE_URL")


# Root bypasses permission checks (CAP_DAC_OVERRIDE), so when the tests run as root the
# permission cases run in a child process that has dropped those capabilities (util-linux's
# setpriv), and as the current user otherwise. Either way the child meets a real EACCES.
_OPEN_AS_CHILD = textwrap.dedent(
    """
    import json, sys
    from meguri.errors import MeguriError
    from meguri.store.metadata import open_metadata_store
    try:
        open_metadata_store(sys.argv[1]).close()
        print(json.dumps({"error": None}))
    except MeguriError as err:
        print(json.dumps({"error": type(err).__name__, "message": str(err)}))
    """
)
_DROP = "-dac_override,-dac_read_search,-fowner"


def _unprivileged_prefix() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    return [setpriv, "--bounding-set", _DROP, "--inh-caps", _DROP]


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder without write permission (r-x for everyone)."""
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    yield tmp_path / "ro"
    (tmp_path / "ro").chmod(0o755)


def _open_unprivileged(url: str) -> dict[str, str]:
    command = [*_unprivileged_prefix(), sys.executable, "-c", _OPEN_AS_CHILD, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0 and done.stderr.startswith("setpriv"):
        pytest.skip(f"cannot drop root's capabilities here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    result: dict[str, str] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("where", ["in-folder", "new-sub-folder"])
def test_folder_without_write_permission(read_only_folder: Path, where: str) -> None:
    target = read_only_folder if where == "in-folder" else read_only_folder / "sub"
    result = _open_unprivileged(f"sqlite:///{target / 'meguri.db'}")
    assert result["error"] == "ConfigError", result
    assert "\n" not in result["message"]
    assert str(target if where == "in-folder" else target.parent) in result["message"]
    assert "MEGURI_STORE_URL" in result["message"]
