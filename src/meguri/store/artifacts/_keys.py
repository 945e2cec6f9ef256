"""Encryption keys for artifacts at rest: where they come from and how their files are kept.

A key is 32 random bytes (AES-256) with a short id that sealed objects name in their header,
so a reader knows which key opens an object and a rotation can tell what is left to redo.

Where the keys come from, first found:

* ``MEGURI_ENCRYPTION_KEY_FILE``: a file with one key per line, ``id:base64``. The first line
  is the current key (new objects are sealed with it); the lines below are older keys, kept
  so that objects sealed before a rotation stay readable until ``meguri keys rotate`` has
  re-sealed them. Blank lines and ``#`` comments are ignored.
* ``MEGURI_ENCRYPTION_KEY``: one key, base64; its id is derived from the key itself (so the
  same key always has the same id, and no id needs to travel beside it).

Setting both is refused (which one wins would be a guess). A key file that other users could
read or write is refused as ssh refuses such private keys: a key that others can read protects
nothing, and one they can write lets them choose the key. Messages about a key file name the
line, never its content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import stat
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from meguri.errors import ConfigError
from meguri.store.artifacts._atomic import _fsync_folder

__all__ = [
    "KEY_BYTES",
    "KEY_FILE_VARIABLE",
    "KEY_VARIABLE",
    "Key",
    "KeyRing",
    "create_key_file",
    "key_from_environment",
    "load_key_ring",
    "new_key",
    "read_key_file",
    "replace_key_file",
]

KEY_FILE_VARIABLE = "MEGURI_ENCRYPTION_KEY_FILE"
KEY_VARIABLE = "MEGURI_ENCRYPTION_KEY"
KEY_BYTES = 32
"""AES-256: the key length AES-GCM is used with here."""

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ID_RULE = "1 to 64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
_PRIVATE_FIX = "chmod 600 {path}"


@dataclass(frozen=True, slots=True)
class Key:
    """One key: its id (stored in every object it seals) and its secret bytes."""

    id: str
    secret: bytes = field(repr=False)

    def line(self) -> str:
        """The key as a key-file line, ``id:base64``."""
        return f"{self.id}:{base64.b64encode(self.secret).decode('ascii')}"


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The keys a store may use: ``keys[0]`` seals, any of them opens.

    ``source`` says where they came from (for messages: which file to fix); ``path`` is the
    key file they were read from, if any (so that a process handing its workspace to
    another can hand over the same key setting)."""

    keys: tuple[Key, ...]
    source: str
    path: Path | None = None

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError(f"No encryption key in {self.source}: add one line id:base64.")

    @property
    def current(self) -> Key:
        return self.keys[0]

    @property
    def ids(self) -> list[str]:
        return [key.id for key in self.keys]

    def get(self, key_id: str) -> Key | None:
        return next((key for key in self.keys if key.id == key_id), None)


def check_key_id(key_id: str) -> str:
    if not _ID.fullmatch(key_id):
        raise ConfigError(f"Key id {key_id!r} is not valid: use {_ID_RULE}.")
    return key_id


def new_key(key_id: str | None = None) -> Key:
    """A fresh random key; its id ``k<date>-<random>`` unless one is given."""
    if key_id is None:
        key_id = f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"
    return Key(check_key_id(key_id), secrets.token_bytes(KEY_BYTES))


def derived_id(secret: bytes) -> str:
    """The id of a key given without one: a hash of the key (48 bits, domain-separated)."""
    return "env-" + hashlib.sha256(b"meguri key id\x00" + secret).hexdigest()[:12]


def key_from_environment(value: str) -> KeyRing:
    """The one key in ``MEGURI_ENCRYPTION_KEY`` (base64 of 32 bytes)."""
    secret = _decode(value.strip(), f"{KEY_VARIABLE}")
    return KeyRing((Key(derived_id(secret), secret),), KEY_VARIABLE)


def _decode(text: str, where: str) -> bytes:
    try:
        secret = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        secret = b""
    if len(secret) != KEY_BYTES:
        raise ConfigError(
            f"{where} is not a key: expected {KEY_BYTES} random bytes written in base64 "
            "(44 characters). Create one with `meguri keys generate --out FILE`."
        )
    return secret


def parse_keys(text: str, where: str) -> tuple[Key, ...]:
    """The keys of key-file text (``where`` names the file in messages)."""
    keys: list[Key] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, encoded = line.partition(":")
        key_id = key_id.strip()
        if not sep or not _ID.fullmatch(key_id):
            raise ConfigError(
                f"{where}, line {number}: expected id:base64 with an id of {_ID_RULE}."
            )
        if any(key.id == key_id for key in keys):
            raise ConfigError(f"{where}, line {number}: the key id {key_id!r} appears twice.")
        keys.append(Key(key_id, _decode(encoded.strip(), f"{where}, line {number}")))
    if not keys:
        raise ConfigError(
            f"{where} holds no key: add a line id:base64, or create the file with "
            "`meguri keys generate --out FILE`."
        )
    return tuple(keys)


def read_key_file(path: str | Path) -> KeyRing:
    """The keys in the file at ``path``; ConfigError if it is missing, public or malformed."""
    location = Path(path).expanduser().absolute()
    try:
        with location.open("rb") as handle:
            check_private(location, os.fstat(handle.fileno()))  # the file read, not a swap
            data = handle.read()
    except FileNotFoundError:
        raise ConfigError(
            f"The encryption key file {location} does not exist: fix {KEY_FILE_VARIABLE}, "
            "or create a key with `meguri keys generate --out FILE`."
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"The encryption key file {location} is a folder: name a file.") from None
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the encryption key file {location}: {exc.strerror or exc}."
        ) from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"{location} is not a key file: expected lines id:base64.") from None
    return KeyRing(parse_keys(text, str(location)), f"the key file {location}", location)


def check_private(path: Path, info: os.stat_result) -> None:
    """Refuse a key file that is not a regular file, or that other users may read or write."""
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"The encryption key file {path} is not a regular file.")
    if os.name == "posix" and info.st_mode & 0o077:
        raise ConfigError(
            f"The encryption key file {path} is accessible to other users (mode "
            f"{stat.S_IMODE(info.st_mode):o}); a key others can read protects nothing. "
            f"Make it private: {_PRIVATE_FIX.format(path=path)}."
        )


def load_key_ring(environ: Mapping[str, str], key_file: str | Path | None = None) -> KeyRing | None:
    """The keys configured by ``key_file``, else the environment; None when encryption is off."""
    if key_file is not None:
        return read_key_file(key_file)
    file_value, key_value = environ.get(KEY_FILE_VARIABLE), environ.get(KEY_VARIABLE)
    if file_value and key_value:
        raise ConfigError(
            f"Both {KEY_FILE_VARIABLE} and {KEY_VARIABLE} are set: unset one (a key file "
            "holds older keys too, so it is the one to keep while rotating)."
        )
    if file_value:
        return read_key_file(file_value)
    if key_value:
        return key_from_environment(key_value)
    return None


def create_key_file(path: str | Path, keys: Sequence[Key]) -> Path:
    """Write ``keys`` to a new file at ``path`` (mode 600); ConfigError if it exists."""
    location = Path(path).expanduser()
    try:
        fd = os.open(location, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(
            f"{location} already exists; a key file is never overwritten (its keys may be "
            "the only way to read your artifacts). Choose another path."
        ) from None
    except OSError as exc:
        raise ConfigError(f"Cannot create {location}: {exc.strerror or exc}.") from None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(_text(keys))
        out.flush()
        os.fsync(out.fileno())
    return location


def replace_key_file(path: str | Path, keys: Sequence[Key]) -> None:
    """Replace the key file at ``path`` with ``keys`` in one step (temp file, mode 600, rename).

    A crash leaves the old file or the new one, never half of either."""
    location = Path(path).expanduser()
    temp = location.with_name(f".{location.name}.tmp-{uuid.uuid4().hex}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(_text(keys))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, location)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_folder(location.parent)


def _text(keys: Iterable[Key]) -> str:
    return "".join(f"{key.line()}\n" for key in keys)
