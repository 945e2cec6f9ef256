"""The SDK against a platform server (``MEGURI_SERVER`` + ``MEGURI_TOKEN``): a real server on
loopback, a client workspace in another folder, and the phases run unchanged through HTTP.

The contract suites already run every repository method and every artifact operation through the
server (``[server]`` / ``[served-…]`` cases); this checks the wiring a user relies on:
``open_workspace`` picks the server from the environment, acts as the token's user under the
server's access rules, and tracking, data, training, the registry and the CLI work over it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import meguri
from meguri import registry
from meguri.cli import _runs
from meguri.errors import ConfigError
from meguri.serve._server import app_in_background
from meguri.server import ServerSettings, create_app
from meguri.spec import parse_spec
from meguri.store import Workspace, open_workspace
from meguri.store.remote import RemoteMetadataStore
from meguri.testing.specs import quick_spec_text
from meguri.train import train


@dataclass
class Platform:
    ws: Workspace
    url: str
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    ws = open_workspace(tmp_path_factory.mktemp("server"), project="demo", user="owner")
    tokens = {}
    for name, role in (("ann", "editor"), ("vic", "viewer")):
        ws.metadata.access.create_user(name, by="owner")
        ws.metadata.access.set_role(ws.project.id, name, role, by="owner")
        tokens[name] = ws.metadata.access.create_token(name, name="sdk", by="owner")[1]
    app = create_app(ServerSettings(secret_key="s" * 48), workspace=ws)
    with app_in_background(app) as url:
        yield Platform(ws, url, tokens)
    ws.close()


@pytest.fixture
def client_env(platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project folder whose environment points at the server as ann (an editor)."""
    for name in [k for k in os.environ if k.startswith("MEGURI_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MEGURI_SERVER", platform.url)
    monkeypatch.setenv("MEGURI_TOKEN", platform.tokens["ann"])
    monkeypatch.setenv("MEGURI_PROJECT", "demo")
    monkeypatch.setenv("MEGURI_USER", "mallory")  # ignored: the server says who the token is
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_phases_run_through_the_server_as_the_token_user(
    platform: Platform, client_env: Path
) -> None:
    remote = open_workspace(client_env)
    try:
        assert isinstance(remote.metadata, RemoteMetadataStore)
        assert (remote.user, remote.project.id) == ("ann", platform.ws.project.id)
        assert not (client_env / ".meguri" / "meguri.db").exists()  # nothing stored here
        with meguri.start_run("remote-run", workspace=remote) as run:
            run.log_metrics({"loss": 0.5}, step=0)
            run.log_text("notes", "notes.txt")
        result = train(parse_spec(quick_spec_text("demo")), workspace=remote)
        version = registry.register_model(result, "bc", workspace=remote)
        model = registry.load_model(version.ref, workspace=remote)
        assert model.name == "bc"
    finally:
        remote.close()
    # the server's own stores hold it all, recorded as ann
    server = platform.ws
    stored = server.metadata.runs.get_run(run.id)
    assert stored.created_by == "ann" and stored.metrics["loss"].value == 0.5
    assert server.metadata.models.get_version(version.id).created_by == "ann"
    assert server.artifacts.exists(version.package_digest)
    actors = {e.actor for e in server.metadata.audit.events(project_id=server.project.id)}
    assert "ann" in actors and "mallory" not in actors


def test_the_cli_reads_the_server_and_a_viewer_cannot_write(
    platform: Platform, client_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = typer.Typer()
    _runs.register(cli)
    listed = CliRunner().invoke(cli, ["runs", "list"])
    assert listed.exit_code == 0, listed.output
    assert "remote-run" in listed.output
    monkeypatch.setenv("MEGURI_TOKEN", platform.tokens["vic"])
    viewer = open_workspace(client_env)
    try:
        assert viewer.user == "vic"
        with pytest.raises(ConfigError, match="editor"):
            meguri.start_run("not-allowed", workspace=viewer)
    finally:
        viewer.close()


def test_settings_that_cannot_work_are_named(
    platform: Platform, client_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEGURI_TOKEN")
    with pytest.raises(ConfigError, match="MEGURI_TOKEN is not"):
        open_workspace(client_env)
    monkeypatch.setenv("MEGURI_TOKEN", "mgr_forged")
    with pytest.raises(ConfigError, match="refused the API token"):
        open_workspace(client_env)
    monkeypatch.setenv("MEGURI_TOKEN", platform.tokens["ann"])
    monkeypatch.setenv("MEGURI_ARTIFACTS_URL", str(client_env / "elsewhere"))
    with pytest.raises(ConfigError, match="the artifacts are the server's"):
        open_workspace(client_env)
    local = open_workspace(client_env, store_url=f"sqlite:///{client_env / 'own.db'}")
    try:  # an explicit store URL wins over MEGURI_SERVER
        assert not isinstance(local.metadata, RemoteMetadataStore)
    finally:
        local.close()
