"""Attacks through the SDK's routes on the platform server (``MEGURI_SERVER``): a client with
the editor role uploads a "model" of its own making, file by file (blobs) and a registry record
(the store route), as the SDK registers a version. Whatever it claims, the package is refused
where it is loaded, and nothing of it runs or lands outside the package cache:

* a pickle (a ``__reduce__`` that would create a file when unpickled) named as the skops
  estimator, and one under a runtime meguri does not know;
* package file names that climb out of the package folder (``..``, absolute, backslashes).

No route accepts archives (a package is a set of content-addressed blobs placed by the registry
under names it checks), so there are no symlinks or hard links to follow."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

import meguri
from meguri import registry
from meguri.errors import PackageError
from meguri.serve._server import app_in_background
from meguri.server import ServerSettings, create_app
from meguri.store import Workspace, open_workspace
from meguri.store.metadata.repositories.models import NewModelVersion

SIGNATURE = {
    "inputs": [{"name": "x", "type": "double", "nullable": False}],
    "output": {"task": "binary", "labels": [0, 1]},
}


class _Boom:
    """Unpickling this creates the file ``path``: proof that something unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@dataclass
class Attack:
    server: Workspace
    client: Workspace
    run_id: str
    marker: Path


@pytest.fixture
def attack(tmp_path: Path) -> Iterator[Attack]:
    server = open_workspace(tmp_path / "server", project="demo", user="owner")
    server.metadata.access.create_user("eve", by="owner")
    server.metadata.access.set_role(server.project.id, "eve", "editor", by="owner")
    token = server.metadata.access.create_token("eve", name="t", by="owner")[1]
    app = create_app(ServerSettings(secret_key="s" * 48), workspace=server)
    with app_in_background(app) as url:
        client = open_workspace(tmp_path / "client", server=url, token=token, project="demo")
        with meguri.start_run("crafted", workspace=client) as run:
            pass
        try:
            yield Attack(server, client, run.id, tmp_path / "unpickled-marker")
        finally:
            client.close()
    server.close()


def _register(attack: Attack, name: str, files: dict[str, bytes], manifest: dict[str, Any]) -> str:
    """Upload ``files`` and ``model.json`` as blobs and record a version naming them."""
    client = attack.client
    entries = {}
    for path, data in files.items():
        stored = client.artifacts.put_bytes(data)
        entries[path] = {"sha256": stored.digest, "size": stored.size}
    document = {"format": "meguri.model", "format_version": 1, **manifest, "files": entries}
    head = client.artifacts.put_bytes(orjson.dumps(document))
    new = NewModelVersion(
        run_id=attack.run_id,
        package_digest=head.digest,
        files={"model.json": {"sha256": head.digest, "size": head.size}, **entries},
        task="binary",
        signature=SIGNATURE,
        metrics={},
        runtime=str(manifest.get("runtime")),
        created_by="eve",
    )
    version, _ = client.metadata.models.add_version(client.project.id, name, new)
    return version.ref


@pytest.mark.parametrize("runtime", ["skops", "pickle"])
def test_a_pickled_model_is_never_unpickled(attack: Attack, runtime: str) -> None:
    payload = pickle.dumps(_Boom(attack.marker))
    manifest = {
        "task": "binary",
        "runtime": runtime,
        "signature": SIGNATURE,
        "estimator": {"file": "estimator.skops"},
    }
    ref = _register(attack, f"evil-{runtime}", {"estimator.skops": payload}, manifest)
    for ws in (attack.server, attack.client):  # loaded where the server runs, and by a client
        with pytest.raises(PackageError):
            registry.load_model(ref, workspace=ws)
    assert not attack.marker.exists(), "the pickle was loaded"


@pytest.mark.parametrize("name", ["../../escaped.txt", "/tmp/escaped.txt", "a\\..\\escaped.txt"])
def test_package_file_names_cannot_leave_the_package(attack: Attack, name: str) -> None:
    ref = _register(attack, "climber", {name: b"planted"}, {"task": "binary", "runtime": "onnx"})
    with pytest.raises(PackageError, match="not a plain relative path"):
        registry.download_package(ref, workspace=attack.server)
    roots = [attack.server.root.parent, Path("/tmp")]
    planted = [p for root in roots for p in root.rglob("escaped.txt") if p.is_file()]
    assert planted == []
    assert not any("escaped" in p for _, _, names in os.walk(attack.server.root) for p in names)
