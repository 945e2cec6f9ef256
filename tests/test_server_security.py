"""Path traversal in every path-taking field of the platform server, and storage locations
offered by clients: each attempt is sent as raw bytes on the socket (no client normalises the
path first), answered with a clear 4xx, and leaves no byte stored and no file written."""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from meguri.serve._server import app_in_background
from meguri.server import ServerSettings, create_app
from meguri.store import Workspace, open_workspace
from meguri.store.metadata import ArtifactRef

JSON = "application/json"
#: Names as they appear in the request line: raw, encoded, double-encoded, with backslashes,
#: absolute, through /proc, with the characters that cut URLs and paths elsewhere.
EVIL_NAMES = [
    "../../outside.txt",
    "a/../../../outside.txt",
    "%2e%2e/%2e%2e/outside.txt",
    "%2E%2E%2F%2E%2E%2Foutside.txt",
    "%252e%252e/%252e%252e/outside.txt",
    "..%2f..%2foutside.txt",
    "..%5c..%5coutside.txt",
    "..\\..\\outside.txt",
    "/etc/passwd",
    "//proc/self/root/etc/passwd",
    "%2fetc%2fpasswd",
    "C:%5cWindows%5cwin.ini",
    "a%23b.txt",
    "a;b.txt",
    "a%00.txt",
    ".",
    "",
]


@dataclass
class Env:
    ws: Workspace
    root: Path
    url: str
    token: str
    run_id: str
    experiment_id: str

    def send(
        self, method: str, path: str, body: bytes | None = None, kind: str = "text/plain"
    ) -> tuple[int, bytes]:
        """One request with ``path`` put on the request line exactly as given."""
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {self.token}", "Content-Type": kind}
            conn.request(method, path, body=body, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("sec")
    ws = open_workspace(root / "project", project="demo", user="owner")
    ws.metadata.access.create_user("ed", by="owner")
    ws.metadata.access.set_role(ws.project.id, "ed", "editor", by="owner")
    token = ws.metadata.access.create_token("ed", name="t", by="owner")[1]
    experiment = ws.metadata.runs.ensure_experiment(ws.project.id, "e", "owner")
    run = ws.metadata.runs.create_run(experiment.id, created_by="owner")
    app = create_app(ServerSettings(secret_key="k" * 48), workspace=ws)
    with app_in_background(app) as url:
        yield Env(ws, root, url, token, run.id, experiment.id)
    ws.close()


def stored(env: Env) -> tuple[object, ...]:
    """Everything an upload could have written: the run's artifact records, the blobs of the
    artifact store, and any file named like the target outside the store."""
    blobs = sorted(str(p) for p in (env.root / "project" / ".meguri" / "artifacts").rglob("*"))
    stray = sorted(str(p) for p in env.root.rglob("outside.txt"))
    return (env.ws.metadata.runs.list_artifacts(env.run_id), blobs, stray)


def refused(status: int, body: bytes) -> bool:
    """A clear refusal: a 4xx with an error document, never a 5xx or a success."""
    if not 400 <= status < 500:
        return False
    doc = orjson.loads(body)
    return "error" in doc or "error_code" in doc


@pytest.mark.parametrize("name", EVIL_NAMES)
def test_run_artifact_names_cannot_leave_the_run(env: Env, name: str) -> None:
    before = stored(env)
    base = f"/api/v1/projects/demo/runs/{env.run_id}/artifacts/"
    status, body = env.send("PUT", base + name, b"pwned")
    assert refused(status, body), (name, status, body)
    status, body = env.send("GET", base + name)
    assert refused(status, body), (name, status, body)
    assert stored(env) == before


@pytest.mark.parametrize("name", EVIL_NAMES)
def test_mlflow_artifact_paths_cannot_leave_the_run(env: Env, name: str) -> None:
    before = stored(env)
    base = f"/api/2.0/mlflow-artifacts/artifacts/{env.experiment_id}/{env.run_id}/artifacts/"
    for method, body in (("PUT", b"pwned"), ("GET", None)):
        status, answer = env.send(method, base + name, body)
        assert refused(status, answer), (method, name, status, answer)
    folder = f"{env.experiment_id}/{env.run_id}/artifacts/{name}"
    listing = f"/api/2.0/mlflow-artifacts/artifacts?path={folder}"
    status, answer = env.send("GET", listing)
    assert (status == 200 and orjson.loads(answer) == {"files": []}) or refused(status, answer)
    assert stored(env) == before


@pytest.mark.parametrize(
    "prefix",
    [
        "../../{exp}/{run}/artifacts/x.txt",
        "{exp}/../{exp}/{run}/artifacts/x.txt",
        "other-exp/{run}/artifacts/x.txt",
        "{exp}/{run}/../x.txt",
        "{exp}/{run}/artifactsx/x.txt",
        "{exp}/run-of-nobody/artifacts/x.txt",
    ],
)
def test_mlflow_artifact_paths_name_only_runs_of_the_project(env: Env, prefix: str) -> None:
    before = stored(env)
    path = prefix.format(exp=env.experiment_id, run=env.run_id)
    status, body = env.send("PUT", "/api/2.0/mlflow-artifacts/artifacts/" + path, b"pwned")
    assert refused(status, body), (path, status, body)
    assert stored(env) == before


def _register(env: Env) -> None:
    onnx = b"weights"
    files = {"estimator.onnx": {"sha256": hashlib.sha256(onnx).hexdigest(), "size": len(onnx)}}
    manifest = {
        "format": "meguri.model",
        "format_version": 1,
        "task": "regression",
        "signature": {},
        "metrics": {},
        "runtime": "onnx",
        "lineage": {},
        "files": files,
    }
    for path, data in {"estimator.onnx": onnx, "model.json": orjson.dumps(manifest)}.items():
        blob = env.ws.artifacts.put_bytes(data)
        env.ws.metadata.runs.add_artifact(
            env.run_id, ArtifactRef(f"model/{path}", blob.digest, blob.size, "x", 1.0)
        )
    from meguri.registry import register_model

    register_model(env.run_id, "m", workspace=env.ws)


@pytest.mark.parametrize("name", EVIL_NAMES[:-2])
def test_other_path_fields_refuse_traversal(env: Env, name: str) -> None:
    if env.ws.metadata.models.find_model(env.ws.project.id, "m") is None:
        _register(env)
    before = stored(env)
    for method, path in (
        ("GET", f"/api/v1/projects/demo/models/m/versions/1/files/{name}"),
        ("GET", f"/api/v1/projects/demo/models/m/versions/1/files/../model.json/{name}"),
        ("GET", f"/api/v1/projects/demo/specs/{name}"),
        ("GET", f"/api/v1/projects/demo/documents/{name}"),
        ("GET", f"/api/v1/projects/demo/datasets/{name}/versions/1/data"),
        ("POST", f"/api/v1/projects/demo/datasets/{name}/versions"),
    ):
        status, body = env.send(method, path, b"a\n1\n" if method == "POST" else None)
        assert refused(status, body), (method, path, status, body)
    assert stored(env) == before
    assert env.ws.metadata.datasets.list(env.ws.project.id) == []


def test_client_supplied_storage_locations_are_refused_or_ignored(env: Env) -> None:
    before = stored(env)
    for location in ("file:///tmp/evil", "s3://bucket/evil", "../../evil", "/etc"):
        body = orjson.dumps({"name": f"exp {location[:4]}", "artifact_location": location})
        status, answer = env.send("POST", "/api/2.0/mlflow/experiments/create", body, JSON)
        assert status == 400 and "artifact_location" in orjson.loads(answer)["message"]
    names = [e.name for e in env.ws.metadata.runs.list_experiments(env.ws.project.id)]
    assert not any(n.startswith("exp ") for n in names)
    offered = {
        "experiment_id": env.experiment_id,
        "artifact_uri": "file:///tmp/evil",
        "artifact_location": "/tmp/evil",
    }
    status, answer = env.send("POST", "/api/2.0/mlflow/runs/create", orjson.dumps(offered), JSON)
    assert status == 200
    info = orjson.loads(answer)["run"]["info"]
    assert (
        info["artifact_uri"] == f"mlflow-artifacts:/{env.experiment_id}/{info['run_id']}/artifacts"
    )
    status, _ = env.send(
        "PUT",
        f"/api/2.0/mlflow-artifacts/artifacts/{env.experiment_id}/{info['run_id']}/artifacts/f.txt",
        b"content",
    )
    assert status == 200
    digest = hashlib.sha256(b"content").hexdigest()
    blobs = [p for p in (env.root / "project" / ".meguri" / "artifacts").rglob("*") if p.is_file()]
    assert any(p.name.endswith(digest[2:]) or digest in str(p) for p in blobs)
    assert not any(p.name == "f.txt" for p in env.root.rglob("*"))
    assert stored(env)[2] == before[2] == []


def test_a_second_host_header_is_refused(env: Env) -> None:
    parts = urlsplit(env.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("GET", "/api/v1/me", skip_host=True)
        conn.putheader("Host", parts.netloc)
        conn.putheader("Host", "rebound.example")
        conn.putheader("Authorization", f"Bearer {env.token}")
        conn.endheaders()
        answer = conn.getresponse()
        assert answer.status == 400 and b"bad_host" in answer.read()
    finally:
        conn.close()
