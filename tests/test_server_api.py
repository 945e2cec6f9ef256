"""The platform API over a real server (uvicorn in a thread, loopback): every resource read back
against what the stores hold, errors in one envelope, the OpenAPI document."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import polars as pl
import pytest

import meguri.data as md
from meguri.serve._server import app_in_background
from meguri.server import OPENAPI_PATH, Access, ServerSettings, access, create_app, route_table
from meguri.spec import save_spec_version
from meguri.store import Workspace, open_workspace
from meguri.store.metadata import CheckResult
from meguri.store.metadata.repositories.monitor import NewWindow
from meguri.testing.specs import quick_spec_text
from test_registry_support import package_run

SECRET = "s" * 48


@dataclass
class Env:
    ws: Workspace
    url: str
    http: httpx.Client
    tokens: dict[str, str]
    app: object

    def call(
        self, role: str, method: str, path: str, headers: dict[str, str] | None = None, **kw: object
    ) -> httpx.Response:
        sent = {**(headers or {}), "Authorization": f"Bearer {self.tokens[role]}"}
        return self.http.request(method, path, headers=sent, **kw)  # type: ignore[arg-type]


def add_user(ws: Workspace, name: str, role: str | None, *, admin: bool = False) -> str:
    """A user with ``role`` on the workspace's project; returns an API token's secret."""
    ws.metadata.access.create_user(name, by="owner", is_admin=admin)
    if role is not None:
        ws.metadata.access.set_role(ws.project.id, name, role, by="owner")
    return ws.metadata.access.create_token(name, name="test", by="owner")[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    ws = open_workspace(tmp_path_factory.mktemp("api"), project="demo", user="owner")
    tokens = {role: add_user(ws, role, role) for role in ("viewer", "editor", "admin")}
    tokens["root"] = add_user(ws, "root", None, admin=True)
    tokens["outsider"] = add_user(ws, "outsider", None)
    app = create_app(ServerSettings(secret_key=SECRET), workspace=ws)
    with app_in_background(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield Env(ws, url, http, tokens, app)
    ws.close()


def test_openapi_document_lists_every_route_with_the_role_it_needs(env: Env) -> None:
    doc = httpx.get(env.url + OPENAPI_PATH).json()  # public: no credentials
    operations = {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }
    assert ("GET", "/api/v1/projects/{project}/runs") in operations
    assert ("POST", "/api/2.0/mlflow/runs/log-batch") in operations
    assert all(op.get("x-meguri-access") in {a.value for a in Access} for op in operations.values())
    declared = {
        (m, r.path)
        for r in route_table(env.app.router.routes)
        for m in r.methods  # type: ignore[attr-defined]
    }
    assert set(operations) <= declared
    assert doc["components"]["securitySchemes"]["token"]["scheme"] == "bearer"


def test_projects_and_spec_versions_list_show_and_diff(env: Env) -> None:
    ws = env.ws
    first = quick_spec_text("demo")
    second = first.replace("folds: 2", "folds: 3")
    assert second != first
    save_spec_version(ws.metadata, ws.project.id, first, created_by="owner", message="one")
    save_spec_version(ws.metadata, ws.project.id, second, created_by="owner", message="two")
    listed = env.call("viewer", "GET", "/api/v1/projects/demo/specs").json()["versions"]
    assert [(v["number"], v["message"]) for v in listed][-2:] == [(1, "one"), (2, "two")]
    shown = env.call("viewer", "GET", "/api/v1/projects/demo/specs/1").json()
    assert shown["content"] == first
    diff = env.call(
        "viewer", "GET", "/api/v1/projects/demo/specs/diff", params={"a": "1", "b": "2"}
    )
    changes = diff.json()["changes"]
    assert any(c["path"].endswith("folds") and (c["old"], c["new"]) == (2, 3) for c in changes)
    assert "-" in diff.json()["unified"] and "+" in diff.json()["unified"]
    missing = env.call("viewer", "GET", "/api/v1/projects/demo/specs/99")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    project = env.call("viewer", "GET", "/api/v1/projects/demo").json()
    assert (project["name"], project["role"], project["spec_versions"]) == ("demo", "viewer", 2)
    mine = env.call("outsider", "GET", "/api/v1/projects").json()["projects"]
    assert mine == []  # no role: the project is not even listed


def test_datasets_upload_versions_schema_rows_data_profile_and_lineage(env: Env) -> None:
    csv = b"a,b\n1,x\n2,y\n3,z\n"
    up = env.call(
        "editor",
        "POST",
        "/api/v1/projects/demo/datasets/toy/versions",
        content=csv,
        headers={"Content-Type": "text/csv"},
    )
    assert up.status_code == 201, up.text
    assert (up.json()["version"], up.json()["rows"], up.json()["created_by"]) == (1, 3, "editor")
    base = "/api/v1/projects/demo/datasets/toy"
    schema = env.call("viewer", "GET", f"{base}/versions/1/schema").json()["columns"]
    assert [c["name"] for c in schema] == ["a", "b"]
    rows = env.call("viewer", "GET", f"{base}/versions/latest/rows", params={"limit": 2}).json()
    assert rows["rows"] == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}] and rows["total"] == 3
    data = env.call("viewer", "GET", f"{base}/versions/1/data").content
    assert pl.read_parquet(io.BytesIO(data)).equals(pl.read_csv(io.BytesIO(csv)))
    assert env.call("viewer", "GET", f"{base}/versions/1/profile").status_code == 404
    md.attach("toy@1", "profile", orjson.dumps({"columns": {"a": {"mean": 2.0}}}), workspace=env.ws)
    profile = env.call("viewer", "GET", f"{base}/versions/1/profile").json()
    assert profile["columns"]["a"]["mean"] == 2.0
    derived = md.save_version(
        "toy_clean",
        pl.DataFrame({"a": [1, 2]}),
        parents=["toy@1"],
        operation="clean",
        workspace=env.ws,
    )
    graph = env.call("viewer", "GET", "/api/v1/projects/demo/datasets/toy_clean/versions/1/lineage")
    assert graph.json()["edges"] == [{"parent": up.json()["id"], "child": derived.id}]
    listed = env.call("viewer", "GET", "/api/v1/projects/demo/datasets", params={"column": "b"})
    assert [d["name"] for d in listed.json()["datasets"]] == ["toy"]
    refused = env.call(
        "viewer", "POST", f"{base}/versions", content=csv, headers={"Content-Type": "text/csv"}
    )
    assert refused.status_code == 403
    odd = env.call(
        "editor", "POST", f"{base}/versions", content=b"x", headers={"Content-Type": "x/y"}
    )
    assert odd.status_code == 415
    assert len(md.history("toy", workspace=env.ws)) == 1


def test_runs_search_pages_history_logging_and_artifacts(env: Env) -> None:
    ids = []
    for i in range(5):
        made = env.call(
            "editor",
            "POST",
            "/api/v1/projects/demo/runs",
            json={"experiment": "search", "params": {"i": str(i)}},
        )
        assert made.status_code == 201
        run_id = made.json()["id"]
        points = [{"key": "m", "value": float(i), "step": s} for s in range(3)]
        logged = env.call(
            "editor",
            "POST",
            f"/api/v1/projects/demo/runs/{run_id}/log",
            json={"metrics": points, "tags": {"k": "v"}},
        )
        assert logged.status_code == 200
        ids.append(run_id)
    query = {
        "filter": "metrics.m >= 2",
        "order_by": "metrics.m desc",
        "experiment": "search",
        "limit": 2,
    }
    page = env.call("viewer", "GET", "/api/v1/projects/demo/runs", params=query).json()
    assert [r["id"] for r in page["runs"]] == [ids[4], ids[3]] and page["next_offset"] == 2
    rest = env.call(
        "viewer", "GET", "/api/v1/projects/demo/runs", params={**query, "offset": 2}
    ).json()
    assert [r["id"] for r in rest["runs"]] == [ids[2]] and rest["next_offset"] is None
    history = env.call(
        "viewer", "GET", f"/api/v1/projects/demo/runs/{ids[1]}/metrics", params={"key": "m"}
    ).json()
    assert (history["steps"], history["values"]) == ([0, 1, 2], [1.0, 1.0, 1.0])
    bad = env.call("viewer", "GET", "/api/v1/projects/demo/runs", params={"filter": "m >>> 1"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_query"
    clash = env.call(
        "editor",
        "POST",
        f"/api/v1/projects/demo/runs/{ids[0]}/log",
        json={"params": {"i": "changed"}},
    )
    assert clash.status_code == 409 and "immutable" in clash.json()["error"]["message"]
    put = env.call(
        "editor",
        "PUT",
        f"/api/v1/projects/demo/runs/{ids[0]}/artifacts/plots/a.txt",
        content=b"hello",
    )
    assert put.status_code == 201 and put.json()["digest"] == hashlib.sha256(b"hello").hexdigest()
    listed = env.call("viewer", "GET", f"/api/v1/projects/demo/runs/{ids[0]}/artifacts").json()
    assert [a["name"] for a in listed["artifacts"]] == ["plots/a.txt"]
    got = env.call("viewer", "GET", f"/api/v1/projects/demo/runs/{ids[0]}/artifacts/plots/a.txt")
    assert got.content == b"hello" and got.headers["x-content-type-options"] == "nosniff"
    ended = env.call(
        "editor", "POST", f"/api/v1/projects/demo/runs/{ids[0]}/end", json={"status": "finished"}
    )
    assert ended.json()["status"] == "finished"
    assert env.ws.metadata.runs.get_run(ids[0]).created_by == "editor"


def test_models_register_gates_promotion_aliases_card_and_files(env: Env) -> None:
    onnx = b"not really onnx"
    run_id = package_run(env.ws, files={"estimator.onnx": onnx})
    made = env.call(
        "editor", "POST", "/api/v1/projects/demo/models", json={"run_id": run_id, "name": "churn"}
    )
    assert made.status_code == 201 and made.json()["ref"] == "churn@1"
    base = "/api/v1/projects/demo/models/churn"
    gates = env.call("viewer", "GET", f"{base}/versions/1/gates").json()
    assert gates["passed"] is False and "no success-criterion" in gates["problems"]
    assert env.call("editor", "POST", f"{base}/versions/1/promote", json={}).status_code == 403
    blocked = env.call("admin", "POST", f"{base}/versions/1/promote", json={})
    assert blocked.status_code == 409 and blocked.json()["error"]["code"] == "gate_failed"
    model = env.ws.metadata.models.get_model(env.ws.project.id, "churn")
    assert env.ws.metadata.models.find_alias(model.id, "production") is None
    forced = env.call(
        "admin", "POST", f"{base}/versions/1/promote", json={"override_reason": "pilot"}
    )
    assert forced.status_code == 200 and forced.json()["aliases"] == ["production"]
    sneaky = env.call("editor", "PUT", f"{base}/aliases/production", json={"version": 1})
    assert sneaky.status_code == 422  # production moves by promotion only
    staged = env.call("editor", "PUT", f"{base}/aliases/staging", json={"version": 1})
    assert sorted(staged.json()["aliases"]) == ["production", "staging"]
    events = env.call("viewer", "GET", f"{base}/events").json()["events"]
    assert [e["kind"] for e in events if e["kind"] == "gate_override"] == ["gate_override"]
    card = env.call("viewer", "GET", f"{base}/versions/production/card")
    assert card.status_code == 200 and "churn" in card.text
    file = env.call("viewer", "GET", f"{base}/versions/1/files/estimator.onnx")
    assert file.content == onnx
    assert env.call("viewer", "GET", f"{base}/versions/7").status_code == 404
    assert env.call("viewer", "GET", "/api/v1/projects/demo/models/nope").status_code == 404


def test_deployments_monitor_windows_alerts_and_checks_read_back(env: Env) -> None:
    ws, now = env.ws, time.time()
    assert env.call("viewer", "GET", "/api/v1/projects/demo/deployments").json() == {
        "deployments": []
    }
    assert env.call("viewer", "GET", "/api/v1/projects/demo/deployments/prod").status_code == 404
    ws.metadata.monitor.save_windows(
        [
            NewWindow(
                ws.project.id,
                "prod",
                now - 7200 + 3600 * i,
                now - 3600 + 3600 * i,
                10 + i,
                figures={"drift.share": 0.1 * i},
                details={"drift": {"x": i}},
            )
            for i in range(2)
        ]
    )
    got = env.call("viewer", "GET", "/api/v1/projects/demo/monitor/prod/windows").json()
    assert [w["rows"] for w in got["windows"]] == [10, 11] and "details" not in got["windows"][0]
    series = env.call(
        "viewer",
        "GET",
        "/api/v1/projects/demo/monitor/prod/series",
        params={"figure": "drift.share"},
    ).json()
    assert [p["value"] for p in series["points"]] == [0.0, 0.1]
    one = env.call(
        "viewer", "GET", f"/api/v1/projects/demo/monitor/prod/windows/{got['windows'][1]['id']}"
    )
    assert one.json()["details"] == {"drift": {"x": 1}}
    scraped = env.call("viewer", "GET", "/api/v1/projects/demo/metrics")
    assert scraped.headers["content-type"].startswith("text/plain")
    assert 'meguri_monitor_figure{project="demo",environment="prod",figure="drift.share"} 0.1' in (
        scraped.text
    )
    assert env.call("viewer", "GET", "/api/v1/projects/demo/alerts").json() == {"alerts": []}
    ws.metadata.checks.record(
        [
            CheckResult(
                "",
                ws.project.id,
                None,
                "auc",
                "test",
                "roc_auc",
                ">=",
                0.8,
                0.9,
                True,
                "run",
                "run-x",
                0.0,
                "owner",
            )
        ]
    )
    checks = env.call("viewer", "GET", "/api/v1/projects/demo/checks/run/run-x").json()["checks"]
    assert [(c["criterion_id"], c["passed"]) for c in checks] == [("auc", True)]
    posted = env.call(
        "editor",
        "POST",
        "/api/v1/projects/demo/monitor/nowhere/feedback",
        json={"records": [{"request_id": "r1", "label": 1}]},
    )
    assert 400 <= posted.status_code < 500 and "error" in posted.json()


def test_roles_and_audit_are_managed_by_admins(env: Env) -> None:
    assert env.call("editor", "GET", "/api/v1/projects/demo/roles").status_code == 403
    roles = env.call("admin", "GET", "/api/v1/projects/demo/roles").json()["roles"]
    assert roles == {"admin": "admin", "editor": "editor", "viewer": "viewer"}
    events = env.call("admin", "GET", "/api/v1/projects/demo/audit").json()["events"]
    assert {"role.set"} <= {e["action"] for e in events}
    assert env.call("admin", "GET", "/api/v1/audit/verify").status_code == 403
    verified = env.call("root", "GET", "/api/v1/audit/verify").json()
    assert verified["ok"] is True and verified["checked"] >= 5


def test_errors_are_one_envelope_and_never_a_trace(env: Env) -> None:
    @env.app.get("/api/v1/boom", openapi_extra=access(Access.AUTHENTICATED))  # type: ignore[attr-defined]
    def boom() -> None:
        raise RuntimeError("database password is hunter2")

    answer = env.call("viewer", "GET", "/api/v1/boom")
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal"
    assert "hunter2" not in answer.text and "Traceback" not in answer.text
    invalid = env.call("editor", "POST", "/api/v1/projects/demo/runs", json={"experiment": 5})
    assert invalid.status_code == 422 and invalid.json()["error"]["code"] == "invalid_request"
    missing = env.call("viewer", "GET", "/api/v1/projects/demo/runs/run-nope")
    assert missing.status_code == 404 and "run-nope" in missing.json()["error"]["message"]


def test_secret_file_is_created_private_and_refused_when_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEGURI_SECRET_KEY", raising=False)
    monkeypatch.delenv("MEGURI_SECRET_KEY_FILE", raising=False)
    ws = open_workspace(tmp_path, project="p", user="owner")
    try:
        create_app(ServerSettings(), workspace=ws)
        secret = tmp_path / ".meguri" / "secret"
        assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_text().strip()) >= 32
        secret.chmod(0o644)
        with pytest.raises(Exception, match="chmod 600"):
            create_app(ServerSettings(), workspace=ws)
    finally:
        ws.close()


def test_the_server_package_exports_exactly_its_all() -> None:
    import meguri.server

    public = {name for name in dir(meguri.server) if not name.startswith("_")}
    assert public == set(meguri.server.__all__)
