"""A workspace: the stores of one project folder, resolved from arguments, environment and defaults.

Resolution order for each setting: explicit argument, then environment variable, then default.

=================  ======================  ==========================================
setting            environment             default
=================  ======================  ==========================================
metadata store     ``MEGURI_STORE_URL``    ``sqlite:///<root>/.meguri/meguri.db``
artifact store     ``MEGURI_ARTIFACTS_URL`` ``<root>/.meguri/artifacts``
project name       ``MEGURI_PROJECT``      ``project:`` in ``meguri.yaml``, else the folder name
user               ``MEGURI_USER``         the login name
platform server    ``MEGURI_SERVER``       none (the stores above)
API token          ``MEGURI_TOKEN``        none
=================  ======================  ==========================================

With a platform server (``server=`` or ``MEGURI_SERVER``, and a token), both stores are the
server's, over HTTP: every read and change goes through its access rules and is recorded as the
token's user (the ``user`` setting is then ignored). An explicit ``store_url`` wins over
``MEGURI_SERVER``, and the platform server itself never opens a remote workspace
(``remote=False``).

Encryption at rest of the artifacts is off unless a key is configured: the argument
``encryption_key_file``, else ``MEGURI_ENCRYPTION_KEY_FILE`` or ``MEGURI_ENCRYPTION_KEY`` (see
:mod:`meguri.store.artifacts._keys`). Processes started from this one (tuning workers,
servers) must see the same setting, which the environment variables give them for free.

The root is the nearest folder, from the current one upwards, holding ``meguri.yaml`` or
``.meguri/``; the current folder if there is none.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meguri.store.artifacts import ArtifactStore, load_key_ring, open_artifact_store
from meguri.store.metadata import MetadataStore, Project, open_metadata_store

SPEC_FILE = "meguri.yaml"
STATE_DIR = ".meguri"


@dataclass(frozen=True)
class Workspace:
    root: Path
    metadata: MetadataStore
    artifacts: ArtifactStore
    project: Project
    user: str

    def close(self) -> None:
        self.metadata.close()
        closing = getattr(self.artifacts, "close", None)  # an HTTP store's connections
        if closing is not None:
            closing()


def find_root(start: Path | None = None) -> Path:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / SPEC_FILE).is_file() or (folder / STATE_DIR).is_dir():
            return folder
    return here


def current_user() -> str:
    env = os.environ.get("MEGURI_USER")
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _project_from_spec(root: Path) -> str | None:
    path = root / SPEC_FILE
    if not path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None  # the spec loader reports a broken spec with line numbers
    name = data.get("project") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def open_workspace(
    root: str | Path | None = None,
    *,
    store_url: str | None = None,
    artifacts_url: str | None = None,
    project: str | None = None,
    user: str | None = None,
    encryption_key_file: str | None = None,
    server: str | None = None,
    token: str | None = None,
    remote: bool = True,
) -> Workspace:
    """Open (creating if needed) the stores of the project at ``root``.

    ``encryption_key_file`` (else ``MEGURI_ENCRYPTION_KEY_FILE`` or ``MEGURI_ENCRYPTION_KEY``)
    turns on encryption at rest of the artifacts. ``server`` and ``token`` (else
    ``MEGURI_SERVER`` and ``MEGURI_TOKEN``, unless ``store_url`` is given or ``remote`` is
    false) open the stores of that platform server instead (see the module docstring)."""
    base = Path(root).resolve() if root is not None else find_root()
    if remote and store_url is None:
        server = server or os.environ.get("MEGURI_SERVER") or None
        if server is not None:
            return _open_remote(base, server, token, project, artifacts_url, encryption_key_file)
    state = base / STATE_DIR
    store_url = (
        store_url or os.environ.get("MEGURI_STORE_URL") or f"sqlite:///{state / 'meguri.db'}"
    )
    name = project or os.environ.get("MEGURI_PROJECT") or _project_from_spec(base) or base.name
    who = user or current_user()
    artifacts = open_artifacts(
        base, artifacts_url=artifacts_url, encryption_key_file=encryption_key_file
    )
    metadata = open_metadata_store(store_url)
    return Workspace(
        root=base,
        metadata=metadata,
        artifacts=artifacts,
        project=metadata.projects.ensure(name, who),
        user=who,
    )


def _open_remote(
    base: Path,
    server: str,
    token: str | None,
    project: str | None,
    artifacts_url: str | None,
    encryption_key_file: str | None,
) -> Workspace:
    from meguri.errors import ConfigError
    from meguri.store.artifacts import HttpArtifactStore
    from meguri.store.remote import RemoteMetadataStore

    token = token or os.environ.get("MEGURI_TOKEN") or None
    if token is None:
        raise ConfigError(
            f"MEGURI_SERVER is set ({server}) but MEGURI_TOKEN is not: create an API token "
            "(`meguri users token create` on the server, or POST /api/v1/me/tokens once "
            "signed in) and "
            "export MEGURI_TOKEN, or unset MEGURI_SERVER to use local stores"
        )
    local = artifacts_url or os.environ.get("MEGURI_ARTIFACTS_URL")
    if local or encryption_key_file:
        raise ConfigError(
            "With MEGURI_SERVER the artifacts are the server's (it encrypts them if it is set "
            "to): drop artifacts_url/MEGURI_ARTIFACTS_URL and the encryption key setting here"
        )
    name = project or os.environ.get("MEGURI_PROJECT") or _project_from_spec(base) or base.name
    metadata = RemoteMetadataStore(server, token)
    try:
        who = metadata.caller()
        found = metadata.projects.ensure(name, who)
    except BaseException:
        metadata.close()
        raise
    artifacts = HttpArtifactStore(server, token, project=found.name)
    return Workspace(root=base, metadata=metadata, artifacts=artifacts, project=found, user=who)


def open_artifacts(
    root: str | Path | None = None,
    *,
    artifacts_url: str | None = None,
    encryption_key_file: str | None = None,
) -> ArtifactStore:
    """The artifact store of the project at ``root`` alone (what :func:`open_workspace` would
    open, without the metadata store: key rotation needs nothing else)."""
    base = Path(root).resolve() if root is not None else find_root()
    url = (
        artifacts_url
        or os.environ.get("MEGURI_ARTIFACTS_URL")
        or str(base / STATE_DIR / "artifacts")
    )
    return open_artifact_store(url, keys=load_key_ring(os.environ, encryption_key_file))


_default: Workspace | None = None


def init(root: str | Path | None = None, **settings: Any) -> Workspace:
    """Open the workspace at ``root`` and make it the SDK's default (see :func:`open_workspace`)."""
    global _default
    if _default is not None:
        _default.close()
    _default = open_workspace(root, **settings)
    return _default


def default_workspace() -> Workspace:
    """The workspace set by :func:`init`, or the one found from the current folder."""
    global _default
    if _default is None:
        _default = open_workspace()
    return _default
