"""The MLflow tracking and registry subset, driven by the real ``mlflow`` client against a real
server: what a script or notebook does lands in meguri (read back through meguri's own API and
stores) and reads back through mlflow; registry aliases move by meguri's gated rules."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import requests

mlflow = pytest.importorskip("mlflow")

from mlflow import MlflowClient  # noqa: E402
from mlflow.data.http_dataset_source import HTTPDatasetSource  # noqa: E402
from mlflow.entities import ViewType  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from meguri import registry  # noqa: E402
from meguri.serve._server import app_in_background  # noqa: E402
from meguri.server import ServerSettings, create_app  # noqa: E402
from meguri.store import Workspace, open_workspace  # noqa: E402
from meguri.store.metadata import CheckResult  # noqa: E402
from meguri.train import search_runs  # noqa: E402
from test_registry_support import package_run  # noqa: E402


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
    for name, role in (("ana", "editor"), ("vic", "viewer"), ("adm", "admin")):
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
    assert experiment is not None
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


# -- lifecycle: rename, untag, inputs, delete and restore -------------------------------------


def _http(env: Env, user: str) -> httpx.Client:
    return httpx.Client(base_url=env.url, headers={"Authorization": f"Bearer {env.tokens[user]}"})


def _notebook() -> tuple[str, str]:
    """A notebook: a run logged with a dataset input, renamed by its tag, a tag set then
    removed; and another run beside it."""
    mlflow.set_experiment("notebook")
    features = np.arange(12.0).reshape(4, 3)
    dataset = mlflow.data.from_numpy(
        features,
        source=HTTPDatasetSource("https://example.org/churn.csv"),  # type: ignore[no-untyped-call]
        name="churn-train",
    )
    with mlflow.start_run(run_name="draft") as run:
        mlflow.log_params({"model": "lgbm", "depth": 6})
        mlflow.log_metric("roc_auc", 0.9)
        mlflow.log_input(dataset, context="training")
        mlflow.log_input(dataset, context="training")  # the same input again: recorded once
        mlflow.set_tags({"team": "risk", "stage": "dev"})
        MlflowClient().delete_tag(run.info.run_id, "stage")
        mlflow.set_tag("mlflow.runName", "baseline")
    with mlflow.start_run(run_name="other"):
        mlflow.log_metric("roc_auc", 0.8)
    return str(run.info.run_id), dataset.digest


def test_a_notebook_renames_untags_and_logs_dataset_inputs(env: Env, as_user: object) -> None:
    as_user("ana")  # type: ignore[operator]
    run_id, digest = _notebook()
    stored = env.ws.metadata.runs.get_run(run_id)
    ours = {k: v for k, v in stored.tags.items() if not k.startswith("mlflow.")}
    assert (stored.name, ours) == ("baseline", {"team": "risk"})
    assert "mlflow.runName" not in stored.tags  # the name is kept once, on the run
    [ref] = stored.inputs["mlflow_dataset"]
    assert ref.startswith(f"churn-train@{digest}#")
    client = MlflowClient()
    got = client.get_run(run_id)
    assert got.info.run_name == "baseline" and got.data.tags["mlflow.runName"] == "baseline"
    assert "stage" not in got.data.tags and got.info.lifecycle_stage == "active"
    assert got.inputs is not None
    [given] = got.inputs.dataset_inputs
    assert (given.dataset.name, given.dataset.digest) == ("churn-train", digest)
    assert json.loads(given.dataset.source) == {"url": "https://example.org/churn.csv"}
    assert json.loads(str(given.dataset.profile))["features_shape"] == [4, 3]
    assert [(t.key, t.value) for t in given.tags] == [("mlflow.data.context", "training")]
    client.update_run(run_id, name="baseline-v2")
    assert env.ws.metadata.runs.get_run(run_id).name == "baseline-v2"
    experiment = client.get_experiment_by_name("notebook")
    assert experiment is not None
    found = client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'baseline-v2'")
    assert [r.info.run_id for r in found] == [run_id]
    assert found[0].inputs is not None
    assert found[0].inputs.dataset_inputs[0].dataset.digest == digest
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        client.delete_tag(run_id, "stage")
    events = env.ws.metadata.audit.events(project_id=env.ws.project.id)
    actions = [(e.action, e.actor) for e in events if e.subject_id == run_id]
    assert ("run.tag_deleted", "ana") in actions
    assert actions.count(("run.renamed", "ana")) == 2


def test_deleted_runs_leave_every_search_until_restored(env: Env, as_user: object) -> None:
    as_user("ana")  # type: ignore[operator]
    client = MlflowClient()
    experiment = client.create_experiment("deleting")
    kept, doomed = (
        client.create_run(experiment, run_name=n).info.run_id for n in ("kept", "doomed")
    )
    client.delete_run(doomed)
    assert client.get_run(doomed).info.lifecycle_stage == "deleted"

    def names(view: int) -> list[str]:
        return sorted(r.info.run_name for r in client.search_runs([experiment], run_view_type=view))

    assert names(ViewType.ACTIVE_ONLY) == ["kept"]
    assert names(ViewType.DELETED_ONLY) == ["doomed"]
    assert names(ViewType.ALL) == ["doomed", "kept"]
    with pytest.raises(MlflowException, match="active"):
        client.log_metric(doomed, "m", 1.0)  # MLflow writes only to active runs
    with pytest.raises(requests.HTTPError, match="active"):  # nor artifacts
        client.log_text(doomed, "late", "notes.txt")
    assert env.ws.metadata.runs.list_artifacts(doomed) == []
    # meguri's own faces do not show it either: the SDK's search, the API's list.
    ours = [r.id for r in search_runs(experiment="deleting", workspace=env.ws)]
    assert ours == [kept]
    with _http(env, "vic") as http:
        listed = http.get("/api/v1/projects/demo/runs", params={"experiment": "deleting"})
    assert [r["id"] for r in listed.json()["runs"]] == [kept]
    client.restore_run(doomed)
    assert names(ViewType.ACTIVE_ONLY) == ["doomed", "kept"]
    client.log_metric(doomed, "m", 1.0)
    assert env.ws.metadata.runs.get_run(doomed).metrics["m"].value == 1.0
    as_user("vic")  # type: ignore[operator]
    with pytest.raises(MlflowException, match="PERMISSION_DENIED"):
        MlflowClient().delete_run(kept)
    as_user("ana", f"{env.url}/projects/other")  # type: ignore[operator]
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        MlflowClient().delete_run(kept)  # an editor elsewhere: this project's runs are not there
    assert not env.ws.metadata.runs.get_run(kept).deleted


def test_experiments_rename_tag_delete_and_restore(env: Env, as_user: object) -> None:
    as_user("ana")  # type: ignore[operator]
    client = MlflowClient()
    experiment = client.create_experiment("exp-draft", tags={"team": "risk"})
    run = client.create_run(experiment).info.run_id
    client.set_experiment_tag(experiment, "goal", "auc")
    client.delete_experiment_tag(experiment, "team")
    client.rename_experiment(experiment, "exp-final")
    got = client.get_experiment(experiment)
    assert (got.name, got.tags, got.lifecycle_stage) == ("exp-final", {"goal": "auc"}, "active")
    found = client.search_experiments(filter_string="name LIKE 'exp-%'")
    assert [e.name for e in found] == ["exp-final"]
    client.delete_experiment(experiment)
    assert client.get_experiment(experiment).lifecycle_stage == "deleted"
    assert client.get_run(run).info.lifecycle_stage == "deleted"
    deleted = client.search_experiments(view_type=ViewType.DELETED_ONLY)
    assert [e.name for e in deleted] == ["exp-final"]
    assert "exp-final" not in [e.name for e in client.search_experiments()]
    assert "exp-final" not in [
        e.name for e in env.ws.metadata.runs.list_experiments(env.ws.project.id)
    ]
    with pytest.raises(MlflowException, match="deleted"):
        mlflow.set_experiment("exp-final")
    with pytest.raises(MlflowException, match="already exists"):
        client.create_experiment("exp-final")
    client.restore_experiment(experiment)
    assert client.get_run(run).info.lifecycle_stage == "active"
    with pytest.raises(MlflowException, match="default experiment"):
        client.delete_experiment("0")


def test_logged_model_metadata_is_json_only(env: Env, as_user: object) -> None:
    as_user("ana")  # type: ignore[operator]
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("models-meta")).info.run_id
    model = {"artifact_path": "model", "flavors": {"python_function": {}}, "run_id": run_id}
    with _http(env, "ana") as http:
        done = http.post(
            "/api/2.0/mlflow/runs/log-model",
            json={"run_id": run_id, "model_json": json.dumps(model)},
        )
        bad = http.post(
            "/api/2.0/mlflow/runs/log-model", json={"run_id": run_id, "model_json": "[1, 2]"}
        )
    assert done.status_code == 200
    assert json.loads(client.get_run(run_id).data.tags["mlflow.log-model.history"]) == [model]
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException, match="meguri models register"):
        client.create_logged_model(client.get_run(run_id).info.experiment_id)


# -- the model registry -----------------------------------------------------------------------


def _check(ws: Workspace, run_id: str, value: float) -> None:
    result = CheckResult("", ws.project.id, None, "auc-min", "test", "roc_auc", ">=", 0.9,
                         value, value >= 0.9, "run", run_id, 0.0, "owner")  # fmt: skip
    ws.metadata.checks.record([result])


@pytest.fixture(scope="module")
def churn(env: Env) -> list[str]:
    """Model ``churn``: version 1 fails its gate (auc 0.8), version 2 passes (auc 0.95)."""
    runs = [package_run(env.ws, seed) for seed in ("a", "b")]
    for run_id, auc in zip(runs, (0.8, 0.95), strict=True):
        registry.register_model(run_id, "churn", workspace=env.ws, tags={"auc": str(auc)})
        _check(env.ws, run_id, auc)
    return runs


def test_registry_reads_through_mlflow(
    env: Env, as_user: object, churn: list[str], tmp_path: Path
) -> None:
    as_user("vic")  # type: ignore[operator]
    client = MlflowClient()
    model = client.get_registered_model("churn")
    assert (model.name, [v.version for v in model.latest_versions]) == ("churn", ["2"])
    assert [m.name for m in client.search_registered_models("name LIKE 'ch%'")] == ["churn"]
    assert list(client.search_registered_models("name = 'nope'")) == []
    one = client.get_model_version("churn", "1")
    assert (one.run_id, one.status, one.current_stage, one.tags) == (
        churn[0],
        "READY",
        "None",
        {"auc": "0.8"},
    )
    assert [v.version for v in client.search_model_versions("name = 'churn'")] == ["2", "1"]
    assert [v.version for v in client.search_model_versions(f"run_id = '{churn[1]}'")] == ["2"]
    assert [v.version for v in client.search_model_versions("tags.auc = '0.95'")] == ["2"]
    # The source is the package the training run logged, downloadable as MLflow artifacts.
    folder = Path(mlflow.artifacts.download_artifacts(one.source, dst_path=str(tmp_path)))
    assert (folder / "estimator.onnx").read_bytes() == b"a"
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        client.get_model_version("churn", "9")
    as_user("ana")  # type: ignore[operator]
    with pytest.raises(MlflowException, match="meguri models register"):
        MlflowClient().create_registered_model("new-model")
    with pytest.raises(MlflowException, match="meguri models register"):
        MlflowClient().create_model_version("churn", f"runs:/{churn[0]}/model", churn[0])
    assert [v.version for v in registry.list_versions("churn", workspace=env.ws)] == [1, 2]


def test_aliases_move_by_meguri_rules_and_production_runs_the_gates(
    env: Env, as_user: object, churn: list[str]
) -> None:
    models = env.ws.metadata.models
    model_id = models.get_model(env.ws.project.id, "churn").id
    as_user("vic")  # type: ignore[operator]
    with pytest.raises(MlflowException, match="PERMISSION_DENIED"):  # a viewer moves nothing
        MlflowClient().set_registered_model_alias("churn", "staging", "1")
    as_user("ana")  # type: ignore[operator]
    with pytest.raises(MlflowException, match=r"PERMISSION_DENIED.*admin role"):
        MlflowClient().set_registered_model_alias("churn", "production", "2")  # a promotion
    MlflowClient().set_registered_model_alias("churn", "staging", "1")  # as the REST API allows
    as_user("adm")  # type: ignore[operator]
    client = MlflowClient()
    client.set_registered_model_alias("churn", "staging", "1")
    assert client.get_model_version_by_alias("churn", "staging").version == "1"
    assert client.get_model_version("churn", "1").current_stage == "Staging"
    with pytest.raises(
        MlflowException, match=r"auc-min \(test roc_auc = 0\.8, needs >= 0\.9\)"
    ) as gate:
        client.set_registered_model_alias("churn", "production", "1")
    assert gate.value.error_code == "INVALID_STATE"
    assert models.find_alias(model_id, "production") is None  # nothing moved
    client.set_registered_model_alias("churn", "production", "2")
    assert models.find_alias(model_id, "production").version == 2  # type: ignore[union-attr]
    with pytest.warns(FutureWarning, match="stages"):  # MLflow deprecates stages for aliases
        latest = client.get_latest_versions("churn", stages=["Production"])
    assert [v.version for v in latest] == ["2"]
    events = [(e.kind, e.created_by) for e in models.events(model_id)]
    assert ("promoted", "adm") in events and ("alias_set", "adm") in events
    with pytest.raises(MlflowException, match="not valid"):
        client.set_registered_model_alias("churn", "Champion", "2")  # meguri's alias names
    client.delete_registered_model_alias("churn", "staging")
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        client.get_model_version_by_alias("churn", "staging")
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        client.delete_registered_model_alias("churn", "staging")
    assert {a.alias for a in models.aliases(model_id)} == {"production"}
