"""Deployments for real: a detached supervisor, worker processes on loopback, trained models.

Each test deploys to its own environment and stops it at the end. The figures the tests measure
(swap time, requests failed during a swap and during a worker's replacement, time to roll back)
are printed with ``-s``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from meguri import registry
from meguri.deploy import deploy, history, rollback, status, stop, wait_settled
from meguri.errors import ConfigError, ConflictError
from meguri.spec import parse_spec
from meguri.spec._deploy import DeployEnvironment, DeployThresholds, StrategySpec
from meguri.store import Workspace, open_workspace
from meguri.store.metadata import RevisionState
from meguri.testing.specs import quick_spec_text
from meguri.train import train


def _spec(seed: int) -> object:
    text = quick_spec_text("dep")
    return parse_spec(text.replace("  seed: 42\n", f"  seed: {seed}\n", 1))


@dataclass
class Trained:
    ws: Workspace
    columns: list[str]
    rows: list[list[float]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    root = tmp_path_factory.mktemp("deploy")
    ws = open_workspace(root, project="dep", user="ann")
    first = train(_spec(42), workspace=ws)  # type: ignore[arg-type]
    registry.register_model(first, "bc", workspace=ws)
    registry.register_model(train(_spec(7), workspace=ws), "bc", workspace=ws)  # type: ignore[arg-type]
    test = first.prepared.raw["test"].head(5)
    version = registry.get_model_version("bc@1", workspace=ws)
    columns = [str(c["name"]) for c in version.signature["inputs"]]  # type: ignore[index, union-attr]
    rows = test.select(columns).rows()
    yield Trained(ws, columns, [list(map(float, r)) for r in rows])
    ws.close()


def _environment(
    workers: int = 1,
    thresholds: dict[str, float] | None = None,
    auth_token_env: str | None = None,
    max_body_bytes: int = 8 * 1024 * 1024,
    **strategy: object,
) -> DeployEnvironment:
    return DeployEnvironment(
        workers=workers,
        capture_rate=0.0,
        strategy=StrategySpec(**strategy),  # type: ignore[arg-type]
        thresholds=DeployThresholds(**(thresholds or {})),  # type: ignore[arg-type]
        auth_token_env=auth_token_env,
        max_body_bytes=max_body_bytes,
    )


@dataclass
class Load:
    """Clients sending v2 requests until stopped, counting answers per version and failures."""

    url: str
    trained: Trained
    versions: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def body(self) -> dict[str, object]:
        rows = self.trained.rows
        inputs = [
            {"name": c, "shape": [len(rows)], "datatype": "FP64", "data": [r[i] for r in rows]}
            for i, c in enumerate(self.trained.columns)
        ]
        return {"inputs": inputs}

    def run(self) -> None:
        body = self.body()
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                try:
                    response = client.post("/v2/models/bc/infer", json=body)
                except httpx.HTTPError as err:
                    self.failures.append(type(err).__name__)
                    continue
                if response.status_code != 200:
                    self.failures.append(str(response.status_code))
                    continue
                version = response.json()["model_version"]
                self.versions[version] = self.versions.get(version, 0) + 1

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.run) for _ in range(3)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    @property
    def total(self) -> int:
        return sum(self.versions.values()) + len(self.failures)


def _wait(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _url(env: str, ws: Workspace) -> str:
    found = status(env, workspace=ws).url
    assert found is not None
    return found


def test_deploy_serves_then_a_canary_splits_and_goes_live(trained: Trained) -> None:
    ws, env = trained.ws, "staging"
    settings = _environment(kind="canary", steps=[50, 100], bake_seconds=1.5)
    try:
        first = deploy("bc@1", env=env, workspace=ws, environment=settings)
        assert (first.number, first.strategy, first.state) == (1, "all_at_once", RevisionState.LIVE)
        url = _url(env, ws)
        with Load(url, trained) as load:
            second = deploy("bc@2", env=env, workspace=ws, environment=settings, reason="retrain")
            assert second.state is RevisionState.BAKING and second.strategy == "canary"
            _wait(lambda: load.versions.get("2", 0) > 20 and load.versions.get("1", 0) > 20)
            settled = wait_settled(env, workspace=ws, timeout=30)
        assert load.failures == []
        assert (settled.number, settled.state, settled.reason) == (2, RevisionState.LIVE, "retrain")
        assert [r.state for r in history(env, workspace=ws)] == [
            RevisionState.SUPERSEDED,
            RevisionState.LIVE,
        ]
        answer = httpx.post(f"{url}/v2/models/bc/infer", json=load.body()).json()
        assert answer["model_version"] == "2"
        print(f"\ncanary: {load.versions} answered, swap {settled.detail}")
    finally:
        stop(env, workspace=ws)
    assert status(env, workspace=ws).url is None


def test_a_breaching_canary_is_rolled_back_within_its_bake(trained: Trained) -> None:
    ws, env = trained.ws, "canary-breach"
    settings = _environment(
        kind="canary",
        steps=[50, 100],
        bake_seconds=20,
        thresholds={"max_schema_violation_rate": 0.1},
    )
    try:
        registry.set_alias("bc@1", "champion", workspace=ws)
        deploy("bc@champion", env=env, workspace=ws, environment=settings)
        url = _url(env, ws)
        bad = {"inputs": [{"name": "nope", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
        started = time.monotonic()
        registry.set_alias("bc@2", "champion", workspace=ws)
        with Load(url, trained), httpx.Client(base_url=url) as client:
            canary = deploy("bc@champion", env=env, workspace=ws, environment=settings)
            for _ in range(200):  # inputs the signature refuses: schema violations
                client.post("/v2/models/bc/infer", json=bad)
            settled = wait_settled(env, workspace=ws, timeout=20)
        elapsed = time.monotonic() - started
        assert elapsed < 20, "rolled back within the bake period"
        assert settled.number == 3 and settled.state is RevisionState.LIVE
        assert settled.reason.startswith("rollback: schema violation rate")
        assert settled.target("primary").ref == "bc@1"  # type: ignore[union-attr]
        rolled = ws.metadata.deployments.get_revision(canary.id)
        assert rolled.state is RevisionState.ROLLED_BACK
        assert str(rolled.detail["rollback_reason"]).startswith("schema violation rate")
        # deployed by alias: the alias went back with the endpoint, and says so in its history
        assert registry.get_model_version("bc@champion", workspace=ws).ref == "bc@1"
        model_id = registry.get_model_version("bc@1", workspace=ws).model_id
        back = [e for e in ws.metadata.models.events(model_id) if e.kind == "alias_rolled_back"]
        assert len(back) == 1 and back[0].created_by == "meguri-supervisor"
        assert str(back[0].detail["reason"]).startswith("rollback: schema violation rate")
        assert back[0].detail["environment"] == env
        print(f"\nrollback: {elapsed:.2f} s after the canary's deploy; {rolled.detail}")
    finally:
        stop(env, workspace=ws)


#: A preparation step that fails at serving time on inputs never seen in training: DuckDB's
#: ``error()`` raises inside the model's own transform, so the endpoint answers 500 for them.
TRAP = (
    '    - sql: {query: "SELECT *, CASE WHEN mean_radius > 1000 '
    "THEN error('broken on purpose') ELSE 0.0 END AS trap FROM data\"}\n"
)


def test_a_canary_whose_model_raises_on_some_inputs_is_rolled_back(trained: Trained) -> None:
    """The issue's reliability case: a deliberately broken model (it raises on some inputs)
    deployed as a canary is rolled back automatically within the baking period."""
    ws, env = trained.ws, "canary-raises"
    text = quick_spec_text("dep").replace("  prepare:\n", "  prepare:\n" + TRAP, 1)
    broken = registry.register_model(train(parse_spec(text), workspace=ws), "bc", workspace=ws)
    settings = _environment(kind="canary", steps=[50, 100], bake_seconds=20)
    try:
        deploy("bc@1", env=env, workspace=ws, environment=settings)
        url = _url(env, ws)
        load = Load(url, trained)
        trap = load.body()
        radius = trained.columns.index("mean_radius")
        trap["inputs"][radius]["data"] = [5000.0] * len(trained.rows)  # type: ignore[index]
        started = time.monotonic()
        with load, httpx.Client(base_url=url) as client:
            canary = deploy(f"bc@{broken.version}", env=env, workspace=ws, environment=settings)
            codes = [client.post("/v2/models/bc/infer", json=trap).status_code for _ in range(100)]
            settled = wait_settled(env, workspace=ws, timeout=20)
        elapsed = time.monotonic() - started
        assert 500 in codes and set(codes) <= {200, 500}, "the canary raised on the trap rows"
        assert elapsed < 20, "rolled back within the bake period"
        assert settled.state is RevisionState.LIVE and settled.reason.startswith("rollback: ")
        assert "error rate" in settled.reason
        assert settled.target("primary").ref == "bc@1"  # type: ignore[union-attr]
        rolled = ws.metadata.deployments.get_revision(canary.id)
        assert rolled.state is RevisionState.ROLLED_BACK
        answer = httpx.post(f"{url}/v2/models/bc/infer", json=trap)
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
        print(f"\nraising canary rolled back {elapsed:.2f} s after its deploy; {rolled.detail}")
    finally:
        stop(env, workspace=ws)


def test_kill_9_of_a_worker_is_replaced_with_few_errors(trained: Trained) -> None:
    ws, env = trained.ws, "workers"
    try:
        deploy("bc@1", env=env, workspace=ws, environment=_environment(workers=2))
        supervisor = psutil.Process(status(env, workspace=ws).deployment.pid)
        workers = supervisor.children()
        assert len(workers) == 2
        with Load(_url(env, ws), trained) as load:
            time.sleep(0.5)
            os.kill(workers[0].pid, signal.SIGKILL)
            killed = time.monotonic()
            _wait(lambda: workers[0].pid not in {p.pid for p in supervisor.children()})
            _wait(lambda: len(supervisor.children()) == 2)
            respawned = time.monotonic()
            time.sleep(2.0)  # the new worker loads and serves
        rate = len(load.failures) / load.total
        print(f"\nkill -9: {len(load.failures)} of {load.total} failed ({rate:.3%}), "
              f"respawned within {respawned - killed:.2f} s")  # fmt: skip
        assert rate < 0.01 and load.total > 200
    finally:
        stop(env, workspace=ws)


def test_metrics_of_a_two_worker_endpoint_sum_both_workers(trained: Trained) -> None:
    """Whichever worker answers a scrape, the endpoint's counters are both workers' sums."""
    ws, env = trained.ws, "scraped"
    try:
        deploy("bc@1", env=env, workspace=ws, environment=_environment(workers=2))
        url, body = _url(env, ws), Load("", trained).body()

        def scrapes() -> list[tuple[str, str]]:
            time.sleep(1.3)  # workers share their numbers every second (routes: 0.5 s)
            found = []
            for _ in range(6):
                with httpx.Client(base_url=url) as client:  # a new connection: either worker
                    text = client.get("/metrics").text
                assert "meguri_workers 2" in text, text
                found.append((_value(text, SERVED), _value(text, ROUTED)))
            return found

        before = scrapes()
        assert len(set(before)) == 1, before
        answered_by = set()
        for _ in range(20):
            with httpx.Client(base_url=url, timeout=10) as client:
                response = client.post("/v2/models/bc/infer", json=body)
                assert response.status_code == 200, response.text
                answered_by.add(response.headers["x-request-id"][:12])  # a prefix per process
        assert len(answered_by) == 2
        a, b = before[0]
        assert scrapes() == [(str(int(a or 0) + 20), str(int(b or 0) + 20))] * 6
    finally:
        stop(env, workspace=ws)


SERVED = 'meguri_requests_total{endpoint="/v2/models/{name}/infer",status="200"}'
ROUTED = 'meguri_route_requests_total{model_version="bc@1",role="primary"}'


def _value(text: str, series: str) -> str | None:
    return next(
        (line.split()[-1] for line in text.splitlines() if line.startswith(series + " ")), None
    )


def test_kill_9_of_the_supervisor_is_recovered_by_its_keeper(trained: Trained) -> None:
    """The supervisor itself dies: its keeper starts a new one on the same port, the old
    workers leave, and the endpoint answers again; a later stop is final."""
    ws, env = trained.ws, "supervisor-killed"
    try:
        deploy("bc@1", env=env, workspace=ws, environment=_environment(workers=2))
        url, old = _url(env, ws), psutil.Process(status(env, workspace=ws).deployment.pid)
        old_workers = old.children()
        os.kill(old.pid, signal.SIGKILL)
        killed = time.monotonic()

        def recovered() -> bool:
            now = status(env, workspace=ws).deployment.pid
            if now in (None, old.pid):
                return False
            try:
                return httpx.get(f"{url}/v2/models/bc/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(recovered, timeout=60)
        back = time.monotonic() - killed
        _wait(lambda: not any(w.is_running() and w.status() != "zombie" for w in old_workers))
        new = psutil.Process(status(env, workspace=ws).deployment.pid)
        assert _url(env, ws) == url and len(new.children()) == 2
        answer = httpx.post(f"{url}/v2/models/bc/infer", json=Load(url, trained).body())
        assert answer.status_code == 200
        print(f"\nsupervisor kill -9: serving again after {back:.2f} s")
    finally:
        stop(env, workspace=ws)
    time.sleep(1.0)  # a stopped endpoint is not brought back
    assert status(env, workspace=ws).url is None


def test_swap_under_load_drops_nothing_and_concurrent_deploys_conflict(
    trained: Trained,
) -> None:
    ws, env = trained.ws, "swap"
    settings = _environment(kind="all_at_once", workers=2)
    try:
        deploy("bc@1", env=env, workspace=ws, environment=settings)
        with Load(_url(env, ws), trained) as load:
            swapped = deploy("bc@2", env=env, workspace=ws, environment=settings)
            _wait(lambda: load.versions.get("2", 0) > 50)
        assert load.failures == [] and swapped.state is RevisionState.LIVE
        print(f"\nswap under load: 0 of {load.total} failed; {swapped.detail}")
        outcomes: list[object] = []
        start = threading.Barrier(2)

        def race(ref: str) -> None:
            start.wait()
            try:
                outcomes.append(deploy(ref, env=env, workspace=ws, environment=settings).number)
            except ConflictError as err:
                outcomes.append(err)

        threads = [threading.Thread(target=race, args=(ref,)) for ref in ("bc@1", "bc@1")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(isinstance(o, ConflictError) for o in outcomes) == 1, outcomes
        assert 3 in outcomes
        back = rollback(env, reason="manual", workspace=ws)
        assert back.reason == "rollback: manual" and back.target("primary").ref == "bc@2"  # type: ignore[union-attr]
    finally:
        stop(env, workspace=ws)


def test_token_and_limits_per_environment_change_without_a_restart(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``auth_token_env`` and ``max_body_bytes`` of an environment hold on its endpoint; a
    later deploy with other settings (workers, token, limit) is applied by the running
    supervisor (same process, same port), and the token is never written in clear."""
    ws, env = trained.ws, "guarded"
    first, second = "first-secret-" + "a" * 20, "second-secret-" + "b" * 20
    monkeypatch.setenv("GUARD_TOKEN", first)
    settings = _environment(auth_token_env="GUARD_TOKEN", max_body_bytes=4096)
    body = Load("", trained).body()
    try:
        deploy("bc@1", env=env, workspace=ws, environment=settings)
        url, pid = _url(env, ws), status(env, workspace=ws).deployment.pid

        def post(token: str | None, payload: object = body) -> int:
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            return httpx.post(
                f"{url}/v2/models/bc/infer", json=payload, headers=headers
            ).status_code

        padded = {**body, "parameters": {"pad": "x" * 5000}}
        assert (post(None), post("wrong-" + first), post(first), post(first, padded)) == (
            401, 401, 200, 413,
        )  # fmt: skip
        assert httpx.get(f"{url}/ping").status_code == 200  # health checks stay open
        state = Path(ws.root, ".meguri", "deploy", env)
        assert all(
            first not in f.read_text(errors="ignore") for f in state.rglob("*") if f.is_file()
        )

        monkeypatch.setenv("GUARD_TOKEN", second)
        wider = _environment(workers=2, auth_token_env="GUARD_TOKEN", max_body_bytes=65536)
        deploy("bc@1", env=env, workspace=ws, environment=wider)
        _wait(lambda: post(second) == 200 and post(first) == 401)
        assert post(second, padded) == 200
        supervisor = psutil.Process(pid)
        _wait(lambda: len(supervisor.children()) == 2)
        assert status(env, workspace=ws).deployment.pid == pid and _url(env, ws) == url

        moved = wider.model_copy(update={"port": _free_port()})
        with pytest.raises(ConflictError, match="deploy stop --env guarded"):
            deploy("bc@1", env=env, workspace=ws, environment=moved)
        monkeypatch.delenv("GUARD_TOKEN")
        count = len(history(env, workspace=ws))
        with pytest.raises(ConfigError, match=r"\$GUARD_TOKEN.*is not set"):
            deploy("bc@2", env=env, workspace=ws, environment=wider)
        assert len(history(env, workspace=ws)) == count  # nothing recorded
    finally:
        stop(env, workspace=ws)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_state_folder_is_inside_the_workspace(trained: Trained) -> None:
    assert Path(trained.ws.root, ".meguri", "deploy").is_dir()


def test_status_of_an_endpoint_deployed_from_elsewhere_is_not_running_here(
    trained: Trained,
) -> None:
    """Another checkout of the store (or a client of the platform server) deployed it: this
    machine has no state folder for it, and says so instead of failing."""
    ws = trained.ws
    ws.metadata.deployments.ensure(ws.project.id, "elsewhere", "bc", by="ann")
    assert not Path(ws.root, ".meguri", "deploy", "elsewhere").exists()
    found = status("elsewhere", workspace=ws)
    assert found.url is None and not found.running
