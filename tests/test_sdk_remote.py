"""The SDK against a platform server (``MEGURI_SERVER`` + ``MEGURI_TOKEN``): a real server on
loopback, a client workspace in another folder, and the phases run unchanged through HTTP.

The contract suites already run every repository method and every artifact operation through the
server (``[server]`` / ``[served-…]`` cases); this checks the wiring a user relies on:
``open_workspace`` picks the server from the environment, acts as the token's user under the
server's access rules, and tracking, data, training (tuning in parallel workers included), the
registry and the CLI work over it."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
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
from meguri.store.metadata import RunStatus
from meguri.store.remote import RemoteMetadataStore
from meguri.testing.specs import quick_spec_text
from meguri.train import train, tune
from meguri.train._optuna_journal import journal_storage
from meguri.train._tune import _WorkspaceRef

X_SPACE = [{"name": "x", "kind": "float", "low": -3.0, "high": 3.0}]


def parabola(params: dict[str, Any], trial: optuna.Trial | None) -> float:
    """Maximum 0 at x = 1 (module-level: worker processes unpickle it)."""
    return -((float(params["x"]) - 1.0) ** 2)


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
        text = quick_spec_text("demo").replace(
            "  cv_folds: 2\n", "  cv_folds: 2\n  search: {trials: 2}\n"
        )
        result = train(parse_spec(text), workspace=remote)  # model.search tunes over HTTP
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
    trials = server.metadata.runs.search(
        [server.metadata.runs.get_run(result.run_id).experiment_id],
        filter=f"tags.`optuna.study` like '{result.run_id}%'",
    )
    assert len(trials) == 2 and {t.parent_run_id for t in trials} == {result.run_id}
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


def test_tuning_runs_through_the_server_in_worker_processes(
    platform: Platform, client_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # opened with an explicit token, none in the environment: tune() hands it to its workers
    monkeypatch.delenv("MEGURI_TOKEN")
    remote = open_workspace(client_env, token=platform.tokens["ann"])
    try:
        first = tune(
            parabola, X_SPACE, study_name="remote", workspace=remote, n_trials=4, parallelism=2
        )
        more = tune(parabola, X_SPACE, study_name="remote", workspace=remote, n_trials=2)
    finally:
        remote.close()
    assert "MEGURI_TOKEN" not in os.environ  # lent to the workers only while they started
    assert [t.number for t in first.trials] == [0, 1, 2, 3]
    assert [t.number for t in more.trials] == [4, 5]  # the second call continued the study
    server = platform.ws.metadata
    runs = {t.number: server.runs.get_run(str(t.run_id)) for t in (*first.trials, *more.trials)}
    for trial in (*first.trials, *more.trials):
        run = runs[trial.number]
        assert (run.name, run.created_by) == (f"remote/trial-{trial.number}", "ann")
        assert run.status is RunStatus.FINISHED and run.tags["optuna.trial"] == str(trial.number)
        assert run.metrics["objective"].value == trial.value == parabola(trial.params, None)
    workers = {runs[t.number].pid for t in first.trials}
    assert len(workers) == 2 and os.getpid() not in workers  # two processes reopened it
    assert {runs[t.number].pid for t in more.trials} == {os.getpid()}
    # the study is the server's: its own store replays the same six trials
    study = optuna.load_study(
        study_name="remote", storage=journal_storage(server, platform.ws.project.id)
    )
    assert [t.value for t in study.trials] == [t.value for t in (*first.trials, *more.trials)]


def test_a_tuning_worker_reopens_by_server_url_and_its_own_token(
    platform: Platform, client_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = open_workspace(client_env)
    try:
        ref = _WorkspaceRef.of(remote)
    finally:
        remote.close()
    data = pickle.dumps(ref)
    assert platform.tokens["ann"].encode() not in data
    assert (ref.server, ref.store_url, ref.user) == (platform.url, None, "ann")
    worker = pickle.loads(data).open()  # MEGURI_TOKEN is ann's
    try:
        assert isinstance(worker.metadata, RemoteMetadataStore) and worker.user == "ann"
        assert worker.project.id == platform.ws.project.id
    finally:
        worker.close()
    monkeypatch.setenv("MEGURI_TOKEN", platform.tokens["vic"])
    with pytest.raises(ConfigError, match=r"belongs to 'vic'.*runs as 'ann'"):
        ref.open()
    monkeypatch.delenv("MEGURI_TOKEN")
    with pytest.raises(ConfigError, match="MEGURI_TOKEN is not in its environment"):
        ref.open()
