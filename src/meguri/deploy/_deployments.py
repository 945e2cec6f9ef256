"""Deployments of registered model versions to local endpoints managed by meguri.

::

    revision = deploy("churn@3", env="staging")        # starts or updates the endpoint
    status("staging").url                                # http://127.0.0.1:PORT
    history("staging")                                   # every revision: who, what, why
    rollback("staging", reason="wrong threshold")        # back to the last good revision
    stop("staging")

Each environment has one deployment; each change is a numbered :class:`DeploymentRevision`.
The first deploy of an environment serves the version at once; later ones follow the
environment's strategy (``deploy.environments.<env>.strategy`` in ``meguri.yaml``: canary,
linear, shadow or all at once), watched and rolled back by the environment's supervisor
(:mod:`meguri.deploy._supervisor`), a detached process started here when none runs. Two deploys
at once on one environment: one wins, the other raises :class:`~meguri.errors.ConflictError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meguri.deploy._supervisor import capture_dir, state_dir
from meguri.errors import ConfigError, ConflictError, DeploymentError
from meguri.serve._metrics import write_json
from meguri.serve._server import token_problem
from meguri.spec._deploy import DeployEnvironment, StrategySpec
from meguri.store import Workspace
from meguri.store._workspace import SPEC_FILE, default_workspace
from meguri.store.metadata import (
    Deployment,
    DeploymentRevision,
    DeploymentState,
    DeploymentTarget,
    RevisionState,
)
from meguri.store.metadata.repositories.deployments import NewRevision

if TYPE_CHECKING:
    from meguri.spec import ProjectSpec

__all__ = [
    "DeploymentStatus",
    "deploy",
    "endpoint_token",
    "history",
    "rollback",
    "spec_environment",
    "status",
    "stop",
    "wait_settled",
]

_START_TIMEOUT = 120.0
#: Shortest bearer token accepted for an endpoint (a guessable one protects nothing).


@dataclass(frozen=True)
class DeploymentStatus:
    """An environment's deployment, its current revision and whether its supervisor runs."""

    deployment: Deployment
    revision: DeploymentRevision | None
    running: bool

    @property
    def url(self) -> str | None:
        port = self.deployment.port
        return f"http://127.0.0.1:{port}" if port and self.running else None


def _environment(ws: Workspace, env: str, override: DeployEnvironment | None) -> DeployEnvironment:
    if override is not None:
        return override
    if not (ws.root / SPEC_FILE).is_file():
        return DeployEnvironment()
    from meguri.spec import load_spec

    return spec_environment(load_spec(ws.root / SPEC_FILE), env)


def spec_environment(
    spec: ProjectSpec | None, env: str, *, declared: bool = True
) -> DeployEnvironment:
    """``deploy.environments.<env>`` of ``spec`` (the defaults when absent), its p99 threshold
    defaulting to ``requirements.non_functional.latency_p95_ms``. With ``declared``, a spec
    that lists environments but not ``env`` is a :class:`ConfigError`."""
    if spec is None:
        return DeployEnvironment()
    environments = spec.deploy.environments
    if declared and environments and env not in environments:
        raise ConfigError(
            f"deploy: environment {env!r} is not in the spec's deploy.environments "
            f"({', '.join(sorted(environments))}); add it to {SPEC_FILE} or pick one of those"
        )
    found = environments.get(env, DeployEnvironment())
    latency = spec.requirements.non_functional.latency_p95_ms
    if found.thresholds.max_p99_ms is None and latency is not None:
        thresholds = found.thresholds.model_copy(update={"max_p99_ms": latency})
        found = found.model_copy(update={"thresholds": thresholds})
    return found


def endpoint_token(settings: DeployEnvironment, env: str) -> str | None:
    """The bearer token the endpoint of ``env`` requires, read from the variable its
    ``auth_token_env`` names (None when it names none). A variable that is unset or too short
    to be a secret is a :class:`ConfigError` naming it."""
    name = settings.auth_token_env
    if name is None:
        return None
    token = os.environ.get(name, "")
    problem = token_problem(token)
    if problem is not None:
        raise ConfigError(
            f"deploy: environment {env!r} requires a bearer token from ${name} "
            f"(deploy.environments.{env}.auth_token_env), which {problem}; export a long "
            f"random one, e.g. `export {name}=$(openssl rand -hex 32)`"
        )
    return token


def _strategy(settings: DeployEnvironment, strategy: str | StrategySpec | None) -> StrategySpec:
    if strategy is None:
        return settings.strategy
    if isinstance(strategy, StrategySpec):
        return strategy
    return StrategySpec(kind=strategy, bake_seconds=settings.strategy.bake_seconds)


def _targets(
    new: DeploymentTarget, current: DeploymentRevision | None, kind: str
) -> tuple[list[DeploymentTarget], str]:
    """The targets of a deploy of ``new`` over the ``current`` live revision."""
    if current is None or kind == "all_at_once":
        return [new], "all_at_once"
    from meguri.deploy._rollout import phases

    old = phases(current)[-1][0][0]
    if old.model_version_id == new.model_version_id:
        return [new], "all_at_once"
    role = "shadow" if kind == "shadow" else "canary"
    old = DeploymentTarget(old.model_version_id, old.ref, old.package_digest, 100.0, "primary")
    return [
        old,
        DeploymentTarget(new.model_version_id, new.ref, new.package_digest, 0.0, role),
    ], kind


def deploy(
    ref: str,
    *,
    env: str,
    workspace: Workspace | None = None,
    strategy: str | StrategySpec | None = None,
    reason: str | None = None,
    environment: DeployEnvironment | None = None,
    wait: bool = True,
    timeout: float = _START_TIMEOUT,
) -> DeploymentRevision:
    """Deploy model version ``ref`` (``NAME@VERSION``, ``NAME@ALIAS``) to ``env``.

    ``strategy`` and ``environment`` override ``meguri.yaml``'s settings for the environment.
    Returns the new revision once every worker serves its first phase (``wait``); the rest of
    its rollout goes on in the supervisor (see :func:`wait_settled`). Raises
    :class:`ConflictError` while another rollout of ``env`` is going on or when another deploy
    won the race."""
    from meguri.registry import download_package, get_model_version, ref_alias

    ws = workspace or default_workspace()
    version = get_model_version(ref, workspace=ws)
    download_package(version.id, workspace=ws)  # fetched (and cached) before the revision
    settings = _environment(ws, env, environment)
    endpoint_token(settings, env)  # refused before any revision is recorded
    plan = _strategy(settings, strategy)
    repo = ws.metadata.deployments
    deployment = repo.ensure(ws.project.id, env, version.name, by=ws.user)
    current = _abandon_if_stopped(ws, env, _current(ws, deployment))
    if current is not None and current.state.is_active:
        raise ConflictError(
            f"deploy: revision {current.number} of {env!r} is still rolling out ({current.state}); "
            f"wait for it (`meguri deploy status --env {env}`) or roll it back"
        )
    _check_port(ws, env, deployment, settings)
    live = current if current is not None and current.state is RevisionState.LIVE else None
    new = DeploymentTarget(version.id, version.ref, version.package_digest, 100.0, "primary")
    targets, kind = _targets(new, live, plan.kind)
    record = {
        "steps": plan.resolved_steps,
        "bake_seconds": plan.bake_seconds,
        "thresholds": settings.thresholds.model_dump(),
    }
    alias = ref_alias(ref)
    if alias is not None:
        record["alias"] = alias  # a rollback of this revision takes the alias back too
    revision = repo.add_revision(
        deployment.id,
        NewRevision(targets, kind, ws.user, reason or "deploy", record),
        expected=deployment.current_number,
    )
    _ensure_supervisor(ws, env, settings)
    return _wait_served(ws, env, revision, timeout) if wait else revision


def _check_port(
    ws: Workspace, env: str, deployment: Deployment, settings: DeployEnvironment
) -> None:
    """A running endpoint keeps its port (its workers share the socket it bound): asking for
    another one is refused with the way to get it, rather than silently ignored."""
    wanted, bound = settings.port, deployment.port
    if wanted and bound and wanted != bound and _supervisor_running(state_dir(ws.root, env)):
        raise ConflictError(
            f"deploy: the endpoint of {env!r} listens on port {bound}; to move it to port "
            f"{wanted}, `meguri deploy stop --env {env}` first (the next deploy binds {wanted})"
        )


def _current(ws: Workspace, deployment: Deployment) -> DeploymentRevision | None:
    if deployment.current_revision_id is None:
        return None
    return ws.metadata.deployments.get_revision(deployment.current_revision_id)


def _abandon_if_stopped(
    ws: Workspace, env: str, current: DeploymentRevision | None
) -> DeploymentRevision | None:
    """A revision still marked as rolling out while no supervisor runs (the endpoint was
    stopped, or its supervisor died, mid-rollout) is marked failed: nothing is rolling it out."""
    if current is None or not current.state.is_active:
        return current
    if _supervisor_running(state_dir(ws.root, env)):
        return current
    return ws.metadata.deployments.set_revision_state(
        current.id,
        RevisionState.FAILED,
        detail={"abandoned": "no supervisor was running its rollout (endpoint stopped)"},
    )


def _ensure_supervisor(
    ws: Workspace, env: str, settings: DeployEnvironment, *, replace: bool = True
) -> None:
    """Write the environment's settings and start its supervisor unless one runs. A running
    supervisor applies changed settings (workers, capture, limits, token) as they come; with
    ``replace`` false (a rollback) the settings of a running endpoint are left as they are. The
    token is written as its sha256 only."""
    state = state_dir(ws.root, env)
    state.mkdir(parents=True, exist_ok=True)
    if not replace and _supervisor_running(state):
        return
    token = endpoint_token(settings, env)
    capture = str(capture_dir(ws.root, env))
    document = {
        **settings.model_dump(mode="json", exclude={"auth_token_env"}),
        "capture_url": capture,
        "auth_token_sha256": None if token is None else hashlib.sha256(token.encode()).hexdigest(),
    }
    write_json(state / "environment.json", document)
    if _supervisor_running(state):
        return
    child_env = {**os.environ, "MEGURI_PROJECT": ws.project.name, "MEGURI_USER": ws.user}
    key_file = getattr(getattr(ws.artifacts, "keys", None), "path", None)
    if ws.artifacts.encrypts_at_rest and key_file is not None:  # opened with a key file
        child_env["MEGURI_ENCRYPTION_KEY_FILE"] = str(key_file)  # workers seal captures too
    with open(state / "supervisor.log", "ab") as log:
        subprocess.run(  # the supervisor forks itself away and this returns at once
            [sys.executable, "-m", "meguri.deploy._supervisor", "--detach", str(ws.root), env],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=child_env,
            start_new_session=True, cwd=ws.root, check=True,
        )  # fmt: skip


def _supervisor_running(state: Path) -> bool:
    """True while a supervisor holds the environment's lock (on this machine: an endpoint
    deployed from another checkout of the store has no state folder here)."""
    if not state.is_dir():
        return False
    fd = os.open(state / "supervisor.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock if this call took it
    return False


def _wait_served(
    ws: Workspace, env: str, revision: DeploymentRevision, timeout: float
) -> DeploymentRevision:
    deadline = time.monotonic() + timeout
    repo = ws.metadata.deployments
    while time.monotonic() < deadline:
        found = repo.get_revision(revision.id)
        if found.state is not RevisionState.PENDING:
            return found
        time.sleep(0.1)
    log = state_dir(ws.root, env) / "supervisor.log"
    raise DeploymentError(
        f"deploy: revision {revision.number} of {env!r} was not served within {timeout:g} s; "
        f"see {log} for the supervisor's log"
    )


def wait_settled(
    env: str, *, workspace: Workspace | None = None, timeout: float = _START_TIMEOUT
) -> DeploymentRevision:
    """Wait until the current revision of ``env`` has finished rolling out (live, rolled back
    or failed) and return it; a rollback's own revision is waited for too."""
    ws = workspace or default_workspace()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = _current(ws, ws.metadata.deployments.get(ws.project.id, env))
        # A rolled-back revision is current only until its rollback revision is written.
        settled = current is not None and not current.state.is_active
        if settled and current is not None and current.state is not RevisionState.ROLLED_BACK:
            return current
        time.sleep(0.1)
    raise DeploymentError(f"deploy: the rollout of {env!r} did not settle within {timeout:g} s")


def status(env: str, *, workspace: Workspace | None = None) -> DeploymentStatus:
    """The deployment of ``env`` now."""
    ws = workspace or default_workspace()
    deployment = ws.metadata.deployments.get(ws.project.id, env)
    running = _supervisor_running(state_dir(ws.root, env)) if deployment.pid else False
    return DeploymentStatus(deployment, _current(ws, deployment), running)


def history(env: str, *, workspace: Workspace | None = None) -> list[DeploymentRevision]:
    """Every revision of ``env``, oldest first."""
    ws = workspace or default_workspace()
    deployment = ws.metadata.deployments.get(ws.project.id, env)
    return ws.metadata.deployments.revisions(deployment.id)


def rollback(
    env: str,
    *,
    reason: str,
    to: int | None = None,
    workspace: Workspace | None = None,
    wait: bool = True,
    timeout: float = _START_TIMEOUT,
) -> DeploymentRevision:
    """Serve again the version of revision ``to`` (default: the last good revision before the
    current one) at once, as a new revision whose reason is ``rollback: <reason>``."""
    ws = workspace or default_workspace()
    repo = ws.metadata.deployments
    deployment = repo.get(ws.project.id, env)
    good = _rollback_target(repo.revisions(deployment.id), deployment.current_number, to)
    from meguri.deploy._rollout import phases

    target = phases(good)[-1][0][0]
    primary = DeploymentTarget(
        target.model_version_id, target.ref, target.package_digest, 100.0, "primary"
    )
    settings: dict[str, Any] = {"rollback_of": deployment.current_number, "to": good.number}
    revision = repo.add_revision(
        deployment.id,
        NewRevision([primary], "all_at_once", ws.user, f"rollback: {reason}", settings),
        expected=deployment.current_number,
    )
    _ensure_supervisor(ws, env, _environment(ws, env, None), replace=False)
    return _wait_served(ws, env, revision, timeout) if wait else revision


def _rollback_target(
    revisions: list[DeploymentRevision], current: int, to: int | None
) -> DeploymentRevision:
    good = (RevisionState.LIVE, RevisionState.SUPERSEDED)
    if to is not None:
        found = next((r for r in revisions if r.number == to), None)
        if found is None or found.state not in good:
            raise ConflictError(
                f"rollback: revision {to} is not one that served fully (live or superseded); "
                "`meguri deploy history` lists them"
            )
        return found
    earlier = [r for r in revisions if r.number < current and r.state in good]
    if not earlier:
        raise ConflictError("rollback: no earlier revision served fully; deploy a version instead")
    return earlier[-1]


def stop(env: str, *, workspace: Workspace | None = None, timeout: float = 15.0) -> Deployment:
    """Stop the endpoint of ``env``: its supervisor stops the workers and exits."""
    ws = workspace or default_workspace()
    repo = ws.metadata.deployments
    deployment = repo.get(ws.project.id, env)
    repo.update(deployment.id, state=DeploymentState.STOPPED, by=ws.user)
    state = state_dir(ws.root, env)
    if deployment.pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(deployment.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while state.is_dir() and _supervisor_running(state) and time.monotonic() < deadline:
        time.sleep(0.05)
    _abandon_if_stopped(ws, env, _current(ws, deployment))
    return repo.update(deployment.id, state=DeploymentState.STOPPED, clear_pid=True, by=ws.user)
