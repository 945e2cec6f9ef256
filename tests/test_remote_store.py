"""The metadata store through the platform server (``RemoteMetadataStore`` and
``server/_r_store.py``), as different users: the access table, actors, ids across projects,
errors, limits. The contract suites run through the server too (``[server]``); this file
tests what only the server adds, against a real uvicorn server on loopback.
"""

from __future__ import annotations

import inspect
import math
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from meguri.errors import (
    ConfigError,
    ConflictError,
    DataError,
    MetadataStoreError,
    NotFoundError,
    QuerySyntaxError,
)
from meguri.serve._server import app_in_background
from meguri.server import ServerSettings, create_app
from meguri.server import _app as server_app
from meguri.server._r_store import router
from meguri.server._r_store_rules import EXCLUDED, RULES
from meguri.store import Workspace, open_workspace
from meguri.store.metadata import AlertState, CheckResult, DeploymentTarget, RunStatus
from meguri.store.metadata.repositories.datasets import NewDatasetVersion
from meguri.store.metadata.repositories.deployments import NewRevision
from meguri.store.metadata.repositories.models import NewModelVersion
from meguri.store.metadata.repositories.monitor import NewWindow
from meguri.store.remote import RemoteMetadataStore
from meguri.store.remote._codec import REPOSITORIES, method_codec, public_methods

USERS = {"root": None, "vera": "viewer", "ed": "editor", "ada": "admin", "out": None}
UPLOAD_LIMIT = 16 << 20


@dataclass
class Seeded:
    """What project ``b`` holds, created locally by its owner."""

    project_id: str
    experiment_id: str
    run_id: str
    model_id: str
    version_id: str
    dataset_version_id: str
    deployment_id: str
    revision_id: str
    window_id: str
    alert_id: str
    spec_id: str


@dataclass
class Env:
    ws: Workspace
    url: str
    tokens: dict[str, str]
    a: str  # the project every user but "out" holds a role on
    b: Seeded  # a project only root may see


def _seed(ws: Workspace) -> Seeded:
    meta = ws.metadata
    pid = meta.projects.ensure("b", "owner").id
    exp = meta.runs.ensure_experiment(pid, "exp", "owner")
    run = meta.runs.create_run(exp.id, created_by="owner")
    new = NewModelVersion(run.id, "a" * 64, {}, "binary_classification", {}, {}, "onnx", "owner")
    version, _ = meta.models.add_version(pid, "churn", new)
    data = NewDatasetVersion("c" * 64, {"x": "Int64"}, 1, 1, "d" * 64, "ingest", "owner")
    dsv, _ = meta.datasets.add_version(pid, "adult", data)
    dep = meta.deployments.ensure(pid, "prod", "churn", by="owner")
    target = DeploymentTarget(version.id, version.ref, "a" * 64, 100.0, "primary")
    rev = meta.deployments.add_revision(
        dep.id, NewRevision([target], "direct", "owner"), expected=0
    )
    [window] = meta.monitor.save_windows([NewWindow(pid, "prod", 0.0, 60.0, 3)])
    alert = meta.monitor.open_alert(
        pid, "prod", "drift", severity="warning", value=0.5, window_id=window.id
    )
    spec, _ = meta.specs.add(pid, content="a: 1", hash="h", created_by="owner")
    return Seeded(
        pid, exp.id, run.id, version.model_id, version.id, dsv.id, dep.id, rev.id,
        window.id, alert.id, spec.id,
    )  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    ws = open_workspace(tmp_path_factory.mktemp("remote"), project="a", user="owner")
    tokens = {}
    for name, role in USERS.items():
        ws.metadata.access.create_user(name, by="owner", is_admin=name == "root")
        if role is not None:
            ws.metadata.access.set_role(ws.project.id, name, role, by="owner")
        tokens[name] = ws.metadata.access.create_token(name, name="t", by="owner")[1]
    seeded = _seed(ws)
    settings = ServerSettings(secret_key="k" * 48, max_upload_bytes=UPLOAD_LIMIT)
    extra = [] if router in server_app._ROUTERS else [router]
    app = create_app(settings, workspace=ws, extra_routers=extra)
    with app_in_background(app) as url:
        yield Env(ws, url, tokens, ws.project.id, seeded)
    ws.close()


@pytest.fixture
def as_user(env: Env) -> Iterator[Callable[..., RemoteMetadataStore]]:
    opened: list[RemoteMetadataStore] = []

    def open_as(name: str, keep_actors: bool = False) -> RemoteMetadataStore:
        opened.append(RemoteMetadataStore(env.url, env.tokens[name], keep_actors=keep_actors))
        return opened[-1]

    yield open_as
    for store in opened:
        store.close()


def _post(env: Env, who: str, path: str, **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {env.tokens[who]}"}
    return httpx.post(env.url + "/api/v1/store/" + path, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


def test_every_public_method_is_ruled_or_excluded() -> None:
    offered = {f"{r}.{m}" for r, cls in REPOSITORIES.items() for m in public_methods(cls)}
    assert offered - RULES.keys() - EXCLUDED.keys() == set(), "add a rule or an exclusion"
    assert (RULES.keys() | EXCLUDED.keys()) - offered == set(), "a rule names no method"
    assert RULES.keys() & EXCLUDED.keys() == set() and all(EXCLUDED.values())
    for label, rule in RULES.items():
        codec = method_codec(*label.split("."))
        codec.prepare()  # every argument and result type has a validator
        parameters = codec.signature.parameters
        for path in (*rule.actors, *(ref.path for ref in rule.refs)):
            assert path.split(".")[0].removesuffix("[]") in parameters, (label, path)
        assert all(path.count(".") <= 1 for path in rule.actors), label


def test_proxies_have_the_real_signatures(as_user: Callable[..., RemoteMetadataStore]) -> None:
    store = as_user("root")
    for name, cls in REPOSITORIES.items():
        for method in public_methods(cls):
            real = inspect.signature(getattr(cls, method))
            remote = inspect.signature(getattr(getattr(store, name), method))
            expected = list(real.parameters.values())
            if not isinstance(inspect.getattr_static(cls, method), staticmethod):
                expected = expected[1:]
            assert list(remote.parameters.values()) == expected, f"{name}.{method}"
            assert remote.return_annotation == real.return_annotation


def test_roles_decide_reads_writes_and_admin_acts(
    env: Env, as_user: Callable[..., RemoteMetadataStore]
) -> None:
    vera, ed, ada = as_user("vera"), as_user("ed"), as_user("ada")
    experiment = ed.runs.ensure_experiment(env.a, "roles", "ed")
    run = ed.runs.create_run(experiment.id, created_by="ed")
    assert vera.runs.get_run(run.id) == run  # a viewer reads
    with pytest.raises(ConfigError, match=r"needs the editor role.*your role there is viewer"):
        vera.runs.log_batch(run.id, params={"lr": "0.1"})
    ed.runs.log_batch(run.id, params={"lr": "0.1"})
    new = NewModelVersion(run.id, "e" * 64, {}, "regression", {}, {}, "onnx", "ed")
    version, created = ed.models.add_version(env.a, "roles", new)  # an editor registers
    assert created and ed.models.set_alias(version.id, "staging", by="ed").alias == "staging"
    admin_acts: list[Callable[[RemoteMetadataStore], object]] = [
        lambda s: s.models.set_alias(version.id, "production", by="x", kind="promoted"),
        lambda s: s.models.archive_version(version.id, by="x"),
        lambda s: s.models.remove_alias(version.model_id, "staging", by="x"),
        lambda s: s.deployments.ensure(env.a, "staging", "roles", by="x"),
    ]
    for admin_only in admin_acts:
        with pytest.raises(ConfigError, match=r"needs the admin role.*your role there is editor"):
            admin_only(ed)
    promoted = ada.models.set_alias(version.id, "production", by="ada", kind="promoted")
    assert promoted.version_id == version.id
    assert ada.models.archive_version(version.id, by="ada").status.value == "archived"
    with pytest.raises(ConfigError, match=r"Only a platform admin may call runs.fail_stale_runs"):
        ada.runs.fail_stale_runs(3600)
    with pytest.raises(ConfigError, match=r"Only a platform admin may call access.create_user"):
        ada.access.create_user("eve", by="ada")


def test_ids_of_other_projects_read_as_missing(
    env: Env, as_user: Callable[..., RemoteMetadataStore]
) -> None:
    vera, b = as_user("vera"), env.b
    probes: list[tuple[Callable[[str], object], str]] = [
        (vera.runs.get_run, b.run_id),
        (vera.models.get_version, b.version_id),
        (vera.datasets.get_version, b.dataset_version_id),
        (vera.deployments.get_by_id, b.deployment_id),
        (vera.deployments.get_revision, b.revision_id),
        (vera.monitor.get_window, b.window_id),
        (vera.monitor.get_alert, b.alert_id),
        (vera.specs.get, b.spec_id),
        (vera.runs.get_experiment, b.experiment_id),
        (vera.datasets.latest_versions, b.project_id),
    ]
    for read, foreign in probes:
        missing = foreign[:-4] + "zzzz"
        with pytest.raises(NotFoundError) as seen:
            read(foreign)
        with pytest.raises(NotFoundError) as absent:
            read(missing)
        assert str(seen.value).replace(foreign, "ID") == str(absent.value).replace(missing, "ID")
    assert vera.models.find_alias(b.model_id, "production") is None  # as for a missing model
    assert vera.models.find_model(b.project_id, "churn") is None
    assert vera.projects.find("b") is None and vera.projects.find("a") is not None
    with pytest.raises(NotFoundError, match="project named 'b'"):
        vera.projects.get("b")
    assert [p.name for p in vera.projects.list()] == ["a"]
    assert vera.runs.search([b.experiment_id]) == [] and vera.runs.count([b.experiment_id]) == 0
    assert vera.datasets.get_versions([b.dataset_version_id]) == {}
    with pytest.raises(NotFoundError, match=r"No run matches"):
        vera.runs.resolve_run_id(b.run_id)
    assert as_user("root").runs.resolve_run_id(b.run_id) == b.run_id
    ed = as_user("ed")  # a write naming another project's entity is refused the same way
    mine = ed.runs.ensure_experiment(env.a, "cross", "ed")
    with pytest.raises(NotFoundError, match=b.run_id):
        ed.runs.create_run(mine.id, created_by="ed", parent_run_id=b.run_id)
    with pytest.raises(NotFoundError, match=b.run_id):
        ed.runs.log_batch(b.run_id, params={"x": "1"})
    assert "x" not in env.ws.metadata.runs.get_run(b.run_id).params


def test_actors_are_the_caller_unless_a_platform_admin_keeps_them(
    env: Env, as_user: Callable[..., RemoteMetadataStore]
) -> None:
    ed = as_user("ed")
    head = env.ws.metadata.audit.head()[0]
    experiment = ed.runs.ensure_experiment(env.a, "actors", "mallory")
    run = ed.runs.create_run(experiment.id, created_by="mallory")
    assert (experiment.created_by, run.created_by) == ("ed", "ed")
    check = CheckResult("", env.a, None, "auc", "test", "auc", ">=", 0.5, 0.9, True, "run",
                        run.id, 0.0, "mallory")  # fmt: skip
    assert ed.checks.record([check])[0].created_by == "ed"
    data = NewDatasetVersion("f" * 64, {"x": "Int64"}, 1, 1, "f" * 64, "ingest", "mallory")
    version, _ = ed.datasets.add_version(env.a, "actors", data)
    ed.datasets.set_tag(version.dataset_id, "k", "v", by="mallory")
    ed.datasets.set_digest(version.id, "profile", "0" * 64)  # no actor given: still the caller
    actors = {e.actor for e in env.ws.metadata.audit.events(after_seq=head)}
    assert actors == {"ed"}
    with pytest.raises(ConfigError, match="Only a platform admin may keep the actors"):
        as_user("ed", keep_actors=True).projects.list()
    root_kept, root = as_user("root", keep_actors=True), as_user("root")
    assert root_kept.runs.create_run(experiment.id, created_by="replayed").created_by == "replayed"
    assert root.runs.create_run(experiment.id, created_by="replayed").created_by == "root"


def test_errors_keep_their_class_and_message(
    env: Env, as_user: Callable[..., RemoteMetadataStore]
) -> None:
    remote, local = as_user("ed"), env.ws.metadata
    with pytest.raises(NotFoundError) as far:
        remote.datasets.get(env.a, "nothing")
    with pytest.raises(NotFoundError) as near:
        local.datasets.get(env.a, "nothing")
    assert str(far.value) == str(near.value)
    run = remote.runs.create_run(remote.runs.ensure_experiment(env.a, "err", "ed").id,
                                 created_by="ed")  # fmt: skip
    remote.runs.log_batch(run.id, params={"lr": "0.1"})
    with pytest.raises(ConflictError, match=r"'lr' of run .* is already '0.1'"):
        remote.runs.log_batch(run.id, params={"lr": "0.2"})
    with pytest.raises(QuerySyntaxError, match="Unknown run attribute"):
        remote.runs.search([run.experiment_id], filter="attributes.nope = 'x'")
    window = NewWindow(env.a, "prod", 0.0, 60.0, 1, figures={"requests": "many"})  # type: ignore[dict-item]
    with pytest.raises(DataError, match=r"windows\[0\]\.figures\['requests'\]"):
        remote.monitor.save_windows([window])
    with pytest.raises(DataError, match=r"windows\[0\]\.details\['x'\].*cannot be sent"):
        remote.monitor.save_windows([replace(window, figures={}, details={"x": object()})])
    data = NewDatasetVersion("9" * 64, {"x": "Int64"}, 1, 1, "9" * 64, "ingest", "ed")
    version, _ = remote.datasets.add_version(env.a, "errors", data)
    with pytest.raises(ValueError, match="kind must be one of"):  # the repository's own check
        remote.datasets.set_digest(version.id, "html", "0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="argument"):
        remote.runs.get_run()  # type: ignore[call-arg]
    with pytest.raises(ConflictError, match=r"The store refused runs.create_run: .*FOREIGN KEY"):
        as_user("root").runs.create_run("exp-missing", created_by="root")  # not a 500


def test_a_store_failure_shows_its_message_to_platform_admins_only(
    env: Env, as_user: Callable[..., RemoteMetadataStore]
) -> None:
    ed, root = as_user("ed"), as_user("root")
    run = ed.runs.create_run(ed.runs.ensure_experiment(env.a, "fail", "ed").id, created_by="ed")
    head = env.ws.metadata.audit.head()
    with env.ws.metadata.db.write() as conn:
        conn.exec_driver_sql("DELETE FROM audit_head")  # no event can be recorded now
    try:
        with pytest.raises(MetadataStoreError, match=r"incident [0-9a-f]{12}"):
            ed.runs.log_batch(run.id, params={"a": "1"})
        with pytest.raises(MetadataStoreError, match="head row"):
            root.runs.log_batch(run.id, params={"a": "1"})
    finally:
        with env.ws.metadata.db.write() as conn:
            conn.exec_driver_sql("INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)", head)
    assert "a" not in ed.runs.get_run(run.id).params and env.ws.metadata.audit.verify().ok


def test_projects_and_access_a_user_may_use_for_themself(
    env: Env, as_user: Callable[..., RemoteMetadataStore]
) -> None:
    ed = as_user("ed")
    assert ed.projects.ensure("a", "ed").id == env.a  # existing, with a role: returned
    for name in ("b", "brand-new"):  # hidden or new: only a platform admin creates
        with pytest.raises(ConfigError, match=f"Project '{name}' does not exist or you hold"):
            ed.projects.ensure(name, "ed")
    assert env.ws.metadata.projects.find("brand-new") is None
    assert as_user("root").projects.ensure("brand-new", "x").created_by == "root"
    assert ed.access.get_user("ed").name == "ed" and ed.access.user_roles("ed") == {env.a: "editor"}
    assert ed.access.role_of(env.a, "ed") == "editor"
    with pytest.raises(ConfigError, match="platform admin"):
        ed.access.get_user("vera")
    with pytest.raises(ConfigError, match="needs the admin role"):
        ed.access.set_role(env.a, "vera", "admin", by="ed")
    mine = env.ws.metadata.access.create_token("ed", name="spare", by="owner")[0]
    theirs = env.ws.metadata.access.create_token("vera", name="spare", by="owner")[0]
    assert [t.name for t in ed.access.list_tokens("ed")] == ["t", "spare"]
    assert ed.access.revoke_token(mine.id, by="x").revoked_at is not None
    with pytest.raises(NotFoundError, match="You have no API token"):
        ed.access.revoke_token(theirs.id, by="x")
    with pytest.raises(ConfigError, match=r"not offered over HTTP.*password sign-in"):
        ed.access.create_token("ed", name="more", by="ed")
    with pytest.raises(MetadataStoreError, match="not available from a remote store"):
        ed.audit.record(None, [])  # type: ignore[arg-type]
    ada = as_user("ada")  # a project admin reads the project's audit log, not the platform's
    assert {e.project_id for e in ada.audit.events(project_id=env.a)} == {env.a}
    assert list(ada.audit.iter_events(project_id=env.a)) == ada.audit.events(project_id=env.a)
    with pytest.raises(ConfigError, match="platform admin"):
        ada.audit.events()
    with pytest.raises(ConfigError, match="needs the admin role"):
        ed.audit.events(project_id=env.a)


def test_refusals_over_raw_http_are_clear_4xx(env: Env) -> None:
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("access/verify_password", {"json": {"name": "ed", "password": "x" * 12}}, 403),
        ("runs/_write_points", {"json": {}}, 404),
        ("nothing/here", {"json": {}}, 404),
        ("runs/get_run", {"content": b"{not json"}, 422),
        ("runs/get_run", {"json": {"run_id": "r", "extra": 1}}, 422),
        ("runs/get_run", {"json": ["run_id"]}, 422),
        ("runs/log_batch", {"content": b"[" * (UPLOAD_LIMIT + 1)}, 413),
    ]
    for path, body, status in cases:
        answer = _post(env, "ed", path, **body)
        assert answer.status_code == status, (path, answer.text)
        assert set(answer.json()["error"]) == {"code", "message"}
    assert (
        _post(env, "ed", "runs/get_run", json={"run_id": "r", "extra": 1})
        .json()["error"]["message"]
        .count("extra")
        == 1
    )
    no_token = httpx.post(env.url + "/api/v1/store/projects/list", json={}, timeout=30)
    assert no_token.status_code == 401


def test_bad_token_and_unreachable_server_name_the_fix(env: Env, tmp_path: Path) -> None:
    with RemoteMetadataStore(env.url, "mgr_" + "x" * 43) as forged:
        with pytest.raises(ConfigError, match=r"refused the API token.*MEGURI_TOKEN"):
            forged.projects.list()
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with RemoteMetadataStore(f"http://127.0.0.1:{port}", "t", timeout=5) as gone:
        with pytest.raises(MetadataStoreError, match=f"Cannot reach .*:{port}.*MEGURI_SERVER"):
            gone.projects.list()
        with pytest.raises(MetadataStoreError, match="database is not reachable from here"):
            gone.db  # noqa: B018


def test_a_large_log_batch_round_trips_exactly(
    env: Env, as_user: Callable[..., RemoteMetadataStore]
) -> None:
    ed = as_user("ed")
    run = ed.runs.create_run(ed.runs.ensure_experiment(env.a, "big", "ed").id, created_by="ed")
    rng = np.random.default_rng(7)
    n = 150_000
    values = rng.normal(size=n)
    values[[3, 77, 1000]] = [math.nan, math.inf, -math.inf]
    now = time.time()
    points = [("loss", float(v), int(i), now + i * 1e-3) for i, v in enumerate(values)]
    started = time.perf_counter()
    ed.runs.log_batch(run.id, points, params={"n": str(n)}, tags={"size": "big"})
    history = ed.runs.metric_history(run.id, "loss")
    elapsed = time.perf_counter() - started
    local = env.ws.metadata.runs.metric_history(run.id, "loss")
    assert len(history) == n and history.key == "loss"
    assert history.steps.dtype == np.int64 and history.values.dtype == np.float64
    assert np.array_equal(history.steps, np.arange(n))
    assert np.array_equal(history.values, values, equal_nan=True)
    assert np.array_equal(history.values, local.values, equal_nan=True)
    assert np.array_equal(history.timestamps, local.timestamps)
    assert ed.runs.get_run(run.id).metrics["loss"].step == n - 1
    assert elapsed < 30, elapsed


def test_status_enums_and_nested_records_come_back_typed(
    env: Env, as_user: Callable[..., RemoteMetadataStore]
) -> None:
    ada = as_user("ada")
    run = ada.runs.create_run(ada.runs.ensure_experiment(env.a, "typed", "ada").id,
                              created_by="ada")  # fmt: skip
    ada.runs.end_run(run.id, RunStatus.FINISHED, reason="done")
    assert ada.runs.get_run(run.id).status is RunStatus.FINISHED
    [window] = ada.monitor.save_windows([NewWindow(env.a, "typed", 0.0, 60.0, 2,
                                                   figures={"drift": math.nan})])  # fmt: skip
    assert window.figures == {"drift": None}  # the repository's own NaN rule
    alert = ada.monitor.open_alert(env.a, "typed", "r", severity="s", value=1.0,
                                   window_id=window.id)  # fmt: skip
    resolved = ada.monitor.update_alert(alert.id, state=AlertState.RESOLVED)
    assert resolved.state is AlertState.RESOLVED and resolved.value == 1.0  # UNSET kept it
    assert re.fullmatch(r"al-.+", resolved.id)
