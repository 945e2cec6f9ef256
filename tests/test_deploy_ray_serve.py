"""Ray Serve for real, in local mode: a trained and registered model deployed from the spec's
environment, asked over loopback through Ray Serve's HTTP proxy, its answers compared with
``load_model``'s; then the exported ``serve run`` config, validated by Ray's own schema and
deployed from its ``import_path`` and ``args``."""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

import meguri
from meguri import registry
from meguri.cli import _models
from meguri.deploy._ray_serve import (
    APP_BUILDER,
    DEPLOYMENT_NAME,
    TARGET_ONGOING_REQUESTS,
    build_app,
    ray_serve_app,
)
from meguri.errors import ConfigError, PackageIntegrityError
from meguri.spec import parse_spec
from meguri.spec._versions import save_spec_version
from meguri.store import Workspace
from meguri.testing.specs import quick_spec_text
from meguri.train import train

# ray without its serve extra fails on grpc: skip then too.
serve = pytest.importorskip("ray.serve", exc_type=ImportError)
ray = pytest.importorskip("ray")


def spec_text() -> str:
    """The bundled example (production: 2 workers; staging: 1), trained with linear only,
    2 folds and scaling only, to be quick."""
    return quick_spec_text("k8s", scale_only=True)


@dataclass(frozen=True)
class Served:
    ws: Workspace
    ref: str
    url: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The model trained and registered; ``meguri.yaml`` in the workspace sets production to
    2 workers capturing every request; Ray started on loopback with Serve's proxy."""
    ws = meguri.open_workspace(tmp_path_factory.mktemp("ray-serve"), project="k8s")
    text = spec_text().replace("      capture_rate: 0.5\n", "      capture_rate: 1.0\n")
    spec_version, _ = save_spec_version(ws.metadata, ws.project.id, text, created_by=ws.user)
    result = train(parse_spec(text), workspace=ws, spec_version_id=spec_version.id)
    version = registry.register_model(result, "cancer", workspace=ws)
    (ws.root / "meguri.yaml").write_text(text)
    port = _free_port()
    owns = not ray.is_initialized()  # another module may have left Ray running: reuse it
    if owns:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")  # fmt: skip
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield Served(ws, version.ref, f"http://127.0.0.1:{port}")
    finally:
        serve.shutdown()
        if owns:
            ray.shutdown()
        ws.close()


def _rows(model: Any, count: int = 20) -> tuple[list[str], np.ndarray]:
    """``count`` rows of the bundled breast-cancer data, in the signature's column order."""
    import pyarrow.parquet as pq

    from meguri.datasets import path

    names = [c.name for c in model.signature.inputs]
    table = pq.read_table(path("breast_cancer"), columns=names).slice(0, count)
    return names, np.column_stack([table.column(n).to_numpy() for n in names]).astype(float)


def _check_predictions(url: str, ws: Workspace, ref: str) -> None:
    model = registry.load_model(ref, workspace=ws)
    names, rows = _rows(model)
    expected = model.predict({n: rows[:, i] for i, n in enumerate(names)})
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/ping").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        doc = {"dataframe_split": {"columns": names, "data": rows.tolist()}}
        body = client.post("/invocations?probabilities=true", json=doc).json()
        v2 = {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP64",
                          "data": rows.tolist()}]}  # fmt: skip
        out = client.post("/v2/models/cancer/infer", json=v2).json()
    assert body["predictions"] == expected.values.tolist()
    assert expected.probabilities is not None
    assert np.array_equal(np.array(body["probabilities"]), expected.probabilities)
    assert len(set(body["predictions"])) == 2  # the rows hold both classes
    assert out["outputs"][0]["data"] == expected.values.tolist()


def test_ray_serve_answers_like_load_model(served: Served) -> None:
    ws = served.ws
    app = ray_serve_app(served.ref, env="production", workspace=ws)
    serve.run(app, name="cancer-production", route_prefix="/")
    try:
        _check_predictions(served.url, ws, served.ref)
        status = serve.status().applications["cancer-production"]
        assert status.deployments[DEPLOYMENT_NAME].replica_states == {"RUNNING": 2}
    finally:
        serve.delete("cancer-production")  # replicas shut down: capture flushes
    files = list((ws.root / ".meguri" / "capture" / "production").glob("model=*/*/*/*.parquet"))
    assert files, "each replica writes what it captured when it stops"


def test_the_exported_config_deploys(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.serve.schema import ServeDeploySchema

    for name in [k for k in os.environ if k.startswith("MEGURI_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(served.ws.root)
    cli = typer.Typer()
    _models.register(cli)
    out = tmp_path / "ray"
    args = ["models", "export", served.ref, "--format", "ray-serve", "--env", "staging"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    config = yaml.safe_load((out / "serve_config.yaml").read_text())
    ServeDeploySchema.model_validate(config)  # Ray's own schema of `serve deploy` files
    [application] = config["applications"]
    assert application["import_path"] == APP_BUILDER
    assert application["args"]["package"] == str((out / "model").resolve())
    # staging: 1 worker, the budget allows 2: Ray Serve autoscales between them
    assert application["deployments"][0]["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": TARGET_ONGOING_REQUESTS,
    }
    assert "num_replicas" not in application["deployments"][0]
    assert application["args"]["max_body_bytes"] == 8 * 1024 * 1024
    module, attr = application["import_path"].split(":")
    builder = getattr(importlib.import_module(module), attr)
    serve.run(builder(application["args"]), name=application["name"], route_prefix="/")
    try:
        _check_predictions(served.url, served.ws, served.ref)
    finally:
        serve.delete(application["name"])


def test_bad_args_and_a_changed_package_are_refused(served: Served, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown keys replica"):
        build_app({"package": "p", "digest": "d", "name": "n", "version": "1", "replica": 2})
    with pytest.raises(ConfigError, match="needs package, digest"):
        build_app({"package": "p"})
    from meguri.deploy._ray_serve import ModelReplica

    folder = registry.download_package(served.ref, tmp_path / "pkg", workspace=served.ws)
    version = registry.get_model_version(served.ref, workspace=served.ws)
    (folder / "transform.json").write_text("{}")
    args = {"package": str(folder), "digest": version.package_digest, "name": "cancer",
            "version": "1"}  # fmt: skip
    with pytest.raises(PackageIntegrityError, match=r"transform\.json"):
        ModelReplica(args)


def test_a_replica_takes_its_limits_and_its_token_from_where_it_runs(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meguri.deploy._ray_serve import ModelReplica

    folder = registry.download_package(served.ref, tmp_path / "pkg", workspace=served.ws)
    version = registry.get_model_version(served.ref, workspace=served.ws)
    args = {"package": str(folder), "digest": version.package_digest, "name": "cancer",
            "version": "1", "max_body_bytes": 4096,
            "auth_token_env": "RAY_ENDPOINT_TOKEN"}  # fmt: skip
    monkeypatch.delenv("RAY_ENDPOINT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"\$RAY_ENDPOINT_TOKEN, which is not set"):
        ModelReplica(args).__serve_build_asgi_app__()
    monkeypatch.setenv("RAY_ENDPOINT_TOKEN", "short")  # the local deployments' minimum too
    with pytest.raises(ConfigError, match=r"which holds fewer than 16 characters where"):
        ModelReplica(args).__serve_build_asgi_app__()
    monkeypatch.setenv("RAY_ENDPOINT_TOKEN", "t" * 32)
    app = ModelReplica(args).__serve_build_asgi_app__()
    assert app.settings.max_body_bytes == 4096 and app.settings.auth_token == "t" * 32
