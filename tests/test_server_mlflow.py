"""The MLflow tracking subset, driven by the real ``mlflow`` client against a real server: what
a script logs lands in meguri (read back through meguri's own API and stores) and reads back
through mlflow."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from meguri.serve._server import app_in_background  # noqa: E402
from meguri.server import ServerSettings, create_app  # noqa: E402
from meguri.store import Workspace, open_workspace  # noqa: E402


@dataclass
class Env:
    ws: Workspace
    url: str
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    ws = open_workspace(tmp_path_factory.mktemp("mlflow"), project="demo", user="owner")
    other = ws.metadata.projects.ensure("other", "owner")
    access = ws.metadata.access
    tokens = {}
    for name, role in (("ana", "editor"), ("vic", "viewer")):
        access.create_user(name, by="owner")
        access.set_role(ws.project.id, name, role, by="owner")
        tokens[name] = access.create_token(name, name="mlflow", by="owner")[1]
    access.set_role(other.id, "ana", "editor", by="owner")
    app = create_app(ServerSettings(secret_key="k" * 48), workspace=ws)
    with app_in_background(app) as url:
        yield Env(ws, url, tokens)
    ws.close()


@pytest.fixture
def as_user(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Point the mlflow client at the server as a user (``as_user("ana")``)."""

    def use(name: str, uri: str | None = None) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", env.tokens[name])
        mlflow.set_tracking_uri(uri or env.url)

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    yield use
    if mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def _script(workdir: Path) -> str:
    """What an existing MLflow training script does, unchanged."""
    notes = workdir / "notes.txt"
    notes.write_text("learning rate schedule: cosine\n")
    mlflow.set_experiment("churn-mlflow")
    with mlflow.start_run(run_name="baseline") as run:
        mlflow.log_param("learning_rate", 0.1)
        mlflow.log_params({"depth": 6, "model": "lgbm"})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"roc_auc": 0.91, "accuracy": 0.87}, step=5)
        mlflow.set_tag("team", "risk")
        mlflow.log_artifact(str(notes))
        mlflow.log_artifact(str(notes), artifact_path="reports/2026")
        return str(run.info.run_id)


def test_a_script_using_mlflow_logs_into_meguri_unchanged(
    env: Env, as_user: object, tmp_path: Path
) -> None:
    as_user("ana")  # type: ignore[operator]
    run_id = _script(tmp_path)
    # In meguri, through its own API:
    headers = {"Authorization": f"Bearer {env.tokens['ana']}"}
    with httpx.Client(base_url=env.url, headers=headers) as http:
        run = http.get(f"/api/v1/projects/demo/runs/{run_id}").json()
        history = http.get(f"/api/v1/projects/demo/runs/{run_id}/metrics", params={"key": "loss"})
        notes = http.get(f"/api/v1/projects/demo/runs/{run_id}/artifacts/reports/2026/notes.txt")
    assert (run["name"], run["status"], run["created_by"]) == ("baseline", "finished", "ana")
    assert run["experiment"] == "churn-mlflow"
    assert run["params"] == {"learning_rate": "0.1", "depth": "6", "model": "lgbm"}
    assert run["metrics"]["roc_auc"] == 0.91 and run["tags"]["team"] == "risk"
    assert history.json()["steps"] == [0, 1, 2, 3, 4]
    assert history.json()["values"] == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert notes.text == "learning rate schedule: cosine\n"
    names = [a.name for a in env.ws.metadata.runs.list_artifacts(run_id)]
    assert names == ["notes.txt", "reports/2026/notes.txt"]
    # And back through mlflow:
    client = MlflowClient()
    experiment = client.get_experiment_by_name("churn-mlflow")
    found = client.search_runs(
        [experiment.experiment_id],
        "metrics.roc_auc > 0.9 and params.model = 'lgbm'",
        order_by=["metrics.roc_auc DESC"],
    )
    assert [r.info.run_id for r in found] == [run_id]
    assert found[0].data.params["depth"] == "6" and found[0].info.status == "FINISHED"
    points = client.get_metric_history(run_id, "loss")
    assert [(p.step, p.value) for p in points] == [(s, 1.0 / (s + 1)) for s in range(5)]
    listed = sorted((f.path, f.is_dir) for f in client.list_artifacts(run_id))
    assert listed == [("notes.txt", False), ("reports", True)]
    local = client.download_artifacts(run_id, "reports/2026/notes.txt", str(tmp_path / "dl"))
    assert Path(local).read_text() == "learning rate schedule: cosine\n"
    none = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    assert list(none) == []


def test_mlflow_errors_surface_as_mlflow_exceptions(env: Env, as_user: object) -> None:
    as_user("ana")  # type: ignore[operator]
    client = MlflowClient()
    assert client.get_experiment_by_name("never-made") is None
    experiment_id = client.create_experiment("errors")
    with pytest.raises(MlflowException, match="already exists"):
        client.create_experiment("errors")
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "p", "1")
    with pytest.raises(MlflowException, match="immutable"):
        client.log_param(run.info.run_id, "p", "2")
    with pytest.raises(MlflowException, match="INVALID_PARAMETER_VALUE"):
        client.search_runs([experiment_id], "metrics.x >>> 1")
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        client.get_run("run-does-not-exist")
    as_user("vic")  # type: ignore[operator]
    with pytest.raises(MlflowException, match="PERMISSION_DENIED"):
        MlflowClient().log_metric(run.info.run_id, "m", 1.0)
    assert MlflowClient().get_run(run.info.run_id).data.params == {"p": "1"}
    assert env.ws.metadata.runs.get_run(run.info.run_id).metrics == {}


def test_tracking_uri_with_a_project_prefix_logs_into_that_project(
    env: Env, as_user: object
) -> None:
    as_user("ana", f"{env.url}/projects/other")  # type: ignore[operator]
    mlflow.set_experiment("elsewhere")
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 2.0)
    other = env.ws.metadata.projects.get("other")
    experiment = env.ws.metadata.runs.find_experiment(other.id, "elsewhere")
    assert experiment is not None
    assert env.ws.metadata.runs.get_run(run.info.run_id).experiment_id == experiment.id
    assert env.ws.metadata.runs.find_experiment(env.ws.project.id, "elsewhere") is None


def test_metric_history_pages_and_keeps_nan(env: Env, as_user: object) -> None:
    as_user("ana")  # type: ignore[operator]
    client = MlflowClient()
    run = client.create_run(client.create_experiment("paging"))
    values = [math.nan if i == 3 else float(i) for i in range(30)]
    for step, value in enumerate(values):
        client.log_metric(run.info.run_id, "x", value, step=step)
    headers = {"Authorization": f"Bearer {env.tokens['ana']}"}
    with httpx.Client(base_url=env.url, headers=headers) as http:
        query = {"run_id": run.info.run_id, "metric_key": "x", "max_results": 20}
        first = http.get("/api/2.0/mlflow/metrics/get-history", params=query).json()
        token = first["next_page_token"]
        second = http.get(
            "/api/2.0/mlflow/metrics/get-history", params={**query, "page_token": token}
        ).json()
    assert len(first["metrics"]) == 20 and "next_page_token" not in second
    assert [m["step"] for m in first["metrics"] + second["metrics"]] == list(range(30))
    assert first["metrics"][3]["value"] == "NaN"
    got = [p.value for p in client.get_metric_history(run.info.run_id, "x")]
    assert math.isnan(got[3]) and got[:3] + got[4:] == values[:3] + values[4:]
