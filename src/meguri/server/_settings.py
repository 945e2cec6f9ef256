"""Settings of the platform server and the one secret it signs session cookies with.

The secret is never a default built into the code: it comes from ``settings.secret_key``, else
the environment (``MEGURI_SECRET_KEY``: the value; ``MEGURI_SECRET_KEY_FILE``: a file holding
it), else the file ``<root>/.meguri/secret``, which the first start creates with 32 random
bytes and mode 0600. A secret file that others may read is refused: whoever reads it can forge
any session.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from meguri.errors import ConfigError

__all__ = ["ServerSettings", "load_secret"]

SECRET_FILE = "secret"
_MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class ServerSettings:
    """How the platform server runs.

    ``root``, ``store_url``, ``artifacts_url``, ``project``: the workspace it serves (see
    :func:`meguri.store.open_workspace`; ``project`` is the default one, used by routes without
    a ``{project}`` and by the MLflow subset). ``allowed_hosts``: the ``Host`` header values
    (without port) accepted; anything else is refused with 400, which defeats DNS rebinding.
    ``public_origins``: origins (``https://ml.example.com``) accepted on cookie-authenticated
    writes besides the request's own host. ``secure_cookies``: set ``Secure`` on cookies
    always (True), never (False) or when the request came over https (None).
    """

    root: Path | None = None
    store_url: str | None = None
    artifacts_url: str | None = None
    project: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    public_origins: tuple[str, ...] = ()
    secret_key: str | None = field(default=None, repr=False)
    secure_cookies: bool | None = None
    session_ttl_s: float = 12 * 3600.0
    login_max_failures: int = 5
    login_window_s: float = 60.0
    max_upload_bytes: int = 1 << 30

    def hosts(self) -> frozenset[str]:
        """The accepted Host names: the allowed ones and the address bound to, if specific."""
        names = {h.lower() for h in self.allowed_hosts}
        if self.host not in ("0.0.0.0", "::", ""):
            names.add(self.host.lower())
        return frozenset(names)


def load_secret(settings: ServerSettings, state_dir: Path) -> bytes:
    """The signing secret (see the module docstring), created on first start if needed."""
    if settings.secret_key:
        return _checked(settings.secret_key.encode(), "settings.secret_key")
    value = os.environ.get("MEGURI_SECRET_KEY")
    if value:
        return _checked(value.encode(), "MEGURI_SECRET_KEY")
    named = os.environ.get("MEGURI_SECRET_KEY_FILE")
    path = Path(named) if named else state_dir / SECRET_FILE
    if not path.exists() and not named:
        _create(path)
    return _checked(_read_private(path), str(path))


def _checked(secret: bytes, where: str) -> bytes:
    secret = secret.strip()
    if len(secret) < _MIN_SECRET_BYTES:
        raise ConfigError(
            f"The server secret from {where} is {len(secret)} bytes; use at least "
            f"{_MIN_SECRET_BYTES} random bytes, e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`"
        )
    return secret


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it first: read theirs
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48) + "\n")


def _read_private(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the server secret {path}: {exc.strerror}. Create it with 32+ random "
            "bytes and mode 0600, or set MEGURI_SECRET_KEY"
        ) from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"The server secret {path} can be read by other users (mode {oct(mode & 0o777)}); "
            f"restrict it with `chmod 600 {path}`"
        )
    return content
