"""The supervisor of one environment's endpoint: worker processes and the rollout controller.

``python -m meguri.deploy._supervisor ROOT ENV`` (started detached by ``meguri deploy``) holds
``.meguri/deploy/<env>/supervisor.lock`` for its whole life (so one runs per environment),
binds the environment's port on 127.0.0.1 once, and starts ``workers`` processes of
:mod:`meguri.deploy._worker` that share that socket. Every 0.1 s it replaces a worker that
exited (killed or crashed); every 0.25 s it reads the deployment from the metadata store and
moves the current revision through its phases (:mod:`meguri.deploy._rollout`):

1. write the phase's routing table to ``targets.json`` under a new generation;
2. once every worker reports that generation, the phase is served (the swap time is recorded);
3. a baking phase is watched for ``bake_seconds``: a breach of the thresholds rolls back at once,
   adding a revision that serves the last good one (reason ``rollback: <why>``); otherwise the
   next phase follows, and after the last the revision is ``live``.

SIGTERM (or the deployment's state set to ``stopped``) stops the workers and the supervisor.

``--detach`` forks a *keeper* that runs the supervisor as its child and starts it again when it
dies any other way (``kill -9``, a crash): a few times, with growing pauses, never once the
deployment is stopped. The workers of a dead supervisor notice that their parent changed and
exit, freeing the port for the new supervisor's workers (:mod:`meguri.deploy._worker`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from meguri.deploy._rollout import (
    Evidence,
    Phase,
    evidence,
    judge,
    phases,
    step_reached,
    watched,
)
from meguri.errors import ConflictError, MeguriError
from meguri.serve._metrics import write_json
from meguri.store import Workspace, open_workspace
from meguri.store._workspace import STATE_DIR
from meguri.store.metadata import (
    Deployment,
    DeploymentRevision,
    DeploymentState,
    DeploymentTarget,
    RevisionState,
)
from meguri.store.metadata.repositories.deployments import NewRevision

__all__ = ["SUPERVISOR", "Supervisor", "main", "state_dir"]

SUPERVISOR = "meguri-supervisor"
log = logging.getLogger("meguri.deploy.supervisor")


def state_dir(root: Path, env: str) -> Path:
    """The folder of an environment's supervisor: lock, settings, targets, worker stats, log."""
    return root / STATE_DIR / "deploy" / env


def capture_dir(root: Path, env: str) -> Path:
    """Where an environment's servers capture predictions, system samples and feedback (and
    where monitoring reads them)."""
    return root / STATE_DIR / "capture" / env


class _Workers:
    """The worker processes on one inherited socket, replaced when they exit."""

    def __init__(self, state: Path, sock: socket.socket, count: int) -> None:
        self.state, self.sock, self.count = state, sock, count
        self.procs: list[subprocess.Popen[bytes]] = []
        self.restarts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        fd = self.sock.fileno()
        command = [sys.executable, "-m", "meguri.deploy._worker", str(self.state), str(fd)]
        return subprocess.Popen(command, pass_fds=(fd,))

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.count)]
        self.retiring: list[subprocess.Popen[bytes]] = []

    def resize(self, count: int) -> None:
        """Run ``count`` workers: start more, or stop the newest extra ones gracefully (SIGTERM:
        they finish the requests they hold, the others go on accepting)."""
        log.info("workers: %s -> %s", self.count, count)
        self.count = count
        while len(self.procs) < count:
            self.procs.append(self._spawn())
        while len(self.procs) > count:
            proc = self.procs.pop()
            proc.terminate()
            self.retiring.append(proc)

    def check(self) -> None:
        for proc in [p for p in self.retiring if p.poll() is not None]:
            self.retiring.remove(proc)
            (self.state / "stats" / f"{proc.pid}.json").unlink(missing_ok=True)
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                log.warning("worker %s exited (%s); starting another", proc.pid, proc.returncode)
                (self.state / "stats" / f"{proc.pid}.json").unlink(missing_ok=True)
                self.procs[i] = self._spawn()
                self.restarts += 1

    def reports(self) -> dict[int, dict[str, Any]]:
        found = {}
        for proc in self.procs:
            try:
                text = (self.state / "stats" / f"{proc.pid}.json").read_text(encoding="utf-8")
                found[proc.pid] = json.loads(text)
            except (OSError, ValueError):
                continue  # not written yet
        return found

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        deadline = time.monotonic() + 10
        for proc in [*self.procs, *self.retiring]:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


class Supervisor:
    """Workers and rollout of one deployment (see the module docstring)."""

    def __init__(self, ws: Workspace, deployment: Deployment, state: Path) -> None:
        self.ws, self.state = ws, state
        self.repo = ws.metadata.deployments
        self.deployment = deployment
        self.environment: dict[str, Any] = {}
        self.environment_stamp = -1
        self._read_environment()
        self.revision: DeploymentRevision | None = None
        self.plan: list[Phase] = []
        self.phase = 0
        self.generation = 0
        self.applying_since: float | None = None
        self.baking_since: float | None = None
        self.baseline: dict[int, dict[str, Any]] = {}
        self.stopping = False
        self.workers: _Workers | None = None

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        sock = self._bind()
        self.repo.update(
            self.deployment.id, pid=os.getpid(), port=sock.getsockname()[1],
            state=DeploymentState.STARTING,
        )  # fmt: skip
        (self.state / "stats").mkdir(exist_ok=True)
        self._next_revision(self._current())
        self.workers = _Workers(self.state, sock, int(self.environment.get("workers", 1)))
        self.workers.start()
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        last_tick = 0.0
        try:
            while not self.stopping:
                self.workers.check()
                if time.monotonic() - last_tick >= 0.25:
                    last_tick = time.monotonic()
                    self._tick()
                time.sleep(0.1)
        finally:
            self.workers.stop()
            if self.stopping:  # a crash leaves the state for the keeper to act on
                self.repo.update(self.deployment.id, state=DeploymentState.STOPPED, clear_pid=True)

    def _bind(self, patience_s: float = 15.0) -> socket.socket:
        """Bind the environment's port; after a supervisor died, its workers may hold the port
        for a moment more (they exit once they see it gone), so a busy port is retried."""
        port = self.deployment.port or int(self.environment.get("port", 0))
        deadline = time.monotonic() + patience_s
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                if not port or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            sock.listen(4096)
            sock.set_inheritable(True)
            return sock

    def _current(self) -> DeploymentRevision:
        self.deployment = self.repo.get_by_id(self.deployment.id)
        if self.deployment.current_revision_id is None:
            raise ConflictError("the deployment has no revision to serve; deploy a version")
        return self.repo.get_revision(self.deployment.current_revision_id)

    def _read_environment(self) -> bool:
        """Load ``environment.json`` when it changed since the last read (``meguri deploy``
        rewrites it); True when it did."""
        path = self.state / "environment.json"
        stamp = path.stat().st_mtime_ns
        if stamp == self.environment_stamp:
            return False
        self.environment = json.loads(path.read_text(encoding="utf-8"))
        self.environment_stamp = stamp
        return True

    def _apply_environment(self) -> None:
        """Changed settings of a running endpoint take effect without a restart: the worker
        count at once, the serving settings (capture, limits, token) as a new generation of
        ``targets.json`` that the workers load beside the current one and switch to."""
        before = _serve_settings(self.environment)
        if not self._read_environment():
            return
        assert self.workers is not None
        workers = int(self.environment.get("workers", 1))
        if workers != self.workers.count:
            self.workers.resize(workers)
        if _serve_settings(self.environment) != before and self.plan:
            self.generation += 1
            write_json(self.state / "targets.json", self._targets(self.plan[self.phase]))

    def _tick(self) -> None:
        self._apply_environment()
        current = self._current()
        if self.deployment.state is DeploymentState.STOPPED:
            self.stopping = True
            return
        if self.revision is None or current.id != self.revision.id:
            self._next_revision(current)
        elif self.applying_since is not None:
            self._check_applied()
        elif self.baking_since is not None:
            self._check_baking()

    # -- phases -------------------------------------------------------------------------------
    def _next_revision(self, revision: DeploymentRevision) -> None:
        previous = self.revision
        if previous is not None and previous.id != revision.id:
            latest = self.repo.get_revision(previous.id)
            if latest.state.is_active:
                rollback = revision.reason.startswith("rollback")
                state = RevisionState.ROLLED_BACK if rollback else RevisionState.SUPERSEDED
                self.repo.set_revision_state(latest.id, state)
        self.revision, self.plan = revision, phases(revision)
        self.phase = step_reached(revision)
        self._apply()

    def _apply(self) -> None:
        self.generation += 1
        write_json(self.state / "targets.json", self._targets(self.plan[self.phase]))
        self.applying_since, self.baking_since = time.monotonic(), None

    def _targets(self, phase: Phase) -> dict[str, Any]:
        from meguri.registry import download_package

        settings = _serve_settings(self.environment)
        targets = [
            _target_doc(t, w, role, download_package(t.model_version_id, workspace=self.ws))
            for t, w, role in phase
        ]
        return {"generation": self.generation, "settings": settings, "targets": targets}

    def _check_applied(self) -> None:
        assert self.workers is not None and self.revision is not None
        reports = self.workers.reports()
        if len(reports) < len(self.workers.procs):
            return
        failed = [r["error"] for r in reports.values() if r.get("error")]
        if failed and all(r["generation"] != self.generation for r in reports.values()):
            self._roll_back(f"the new version failed to load: {failed[0]}", None)
            return
        if any(r["generation"] != self.generation for r in reports.values()):
            return
        swap = time.monotonic() - (self.applying_since or time.monotonic())
        self.applying_since = None
        detail = {f"swap_seconds_step{self.phase}": round(swap, 4)}
        if self.revision.strategy == "all_at_once" or self.revision.state is RevisionState.LIVE:
            self._go_live(detail)
            return
        self.revision = self.repo.set_revision_state(
            self.revision.id, RevisionState.BAKING, step=self.phase, detail=detail
        )
        self.repo.update(self.deployment.id, state=DeploymentState.BAKING)
        self.baking_since, self.baseline = time.monotonic(), reports

    def _check_baking(self) -> None:
        assert self.workers is not None and self.revision is not None
        key = watched(self.revision).model_version_id
        found = evidence(self.workers.reports(), self.baseline, key)
        thresholds: dict[str, Any] = dict(self.revision.settings.get("thresholds") or {})  # type: ignore[call-overload]
        bake = float(self.revision.settings.get("bake_seconds", 60.0))  # type: ignore[arg-type]
        done = time.monotonic() - (self.baking_since or 0.0) >= bake
        breach = judge(found, thresholds, final=done)
        if breach is not None:
            self._roll_back(breach, found)
        elif done and self.phase + 1 < len(self.plan):
            self.revision = self.repo.set_revision_state(
                self.revision.id,
                RevisionState.BAKING,
                step=self.phase + 1,
                detail={f"evidence_step{self.phase}": found.to_dict()},
            )
            self.phase += 1
            self._apply()
        elif done:
            self._go_live({f"evidence_step{self.phase}": found.to_dict()})

    def _go_live(self, detail: dict[str, Any]) -> None:
        assert self.revision is not None
        for older in self.repo.revisions(self.deployment.id):
            if older.state is RevisionState.LIVE and older.number < self.revision.number:
                self.repo.set_revision_state(older.id, RevisionState.SUPERSEDED)
        self.revision = self.repo.set_revision_state(
            self.revision.id, RevisionState.LIVE, step=self.phase, detail=detail
        )
        rolled = self.revision.reason.startswith("rollback")
        state = DeploymentState.ROLLED_BACK if rolled else DeploymentState.SERVING
        self.repo.update(self.deployment.id, state=state)
        self.baking_since = None

    def _roll_back(self, why: str, found: Evidence | None) -> None:
        assert self.revision is not None
        bad, good = self.revision, self._last_good()
        detected = time.monotonic() - (self.baking_since or self.applying_since or 0.0)
        detail: dict[str, Any] = {"rollback_reason": why, "detected_after_s": round(detected, 3)}
        if found is not None:
            detail["evidence"] = found.to_dict()
        self.repo.set_revision_state(bad.id, RevisionState.ROLLED_BACK, detail=detail)
        self.baking_since = self.applying_since = None
        if good is None:
            self.repo.update(self.deployment.id, state=DeploymentState.FAILED)
            return
        target = phases(good)[-1][0][0]
        new = NewRevision(
            [
                DeploymentTarget(
                    target.model_version_id, target.ref, target.package_digest, 100.0, "primary"
                )
            ],
            "all_at_once",
            SUPERVISOR,
            reason=f"rollback: {why}",
            settings={"rollback_of": bad.number, "to": good.number},
        )
        try:
            self.repo.add_revision(self.deployment.id, new, expected=bad.number)
        except ConflictError:
            log.warning("a newer revision arrived while rolling back revision %s", bad.number)
            return
        alias = bad.settings.get("alias")
        if isinstance(alias, str):
            self._alias_back(alias, watched(bad), target, f"rollback: {why}", bad.number)

    def _alias_back(
        self,
        alias: str,
        bad: DeploymentTarget,
        good: DeploymentTarget,
        reason: str,
        number: int,
    ) -> None:
        """A revision deployed by alias (``deploy cancer@production``) that is rolled back
        takes the alias back to the version the endpoint serves again, so the registry does
        not name a version that lost its rollout (and the next deploy of the alias does not
        bring it back). Only when the alias still points at the version that lost: one moved
        since is left where it is."""
        models = self.ws.metadata.models
        try:
            lost, kept = (
                models.get_version(bad.model_version_id),
                models.get_version(good.model_version_id),
            )
            if lost.model_id != kept.model_id or lost.id == kept.id:
                return
            detail = {"reason": reason, "environment": self.deployment.environment}
            models.set_alias(
                kept.id, alias, by=SUPERVISOR, kind="alias_rolled_back",
                detail={**detail, "revision": number}, only_from=lost.id,
            )  # fmt: skip
            log.warning("alias %r moved back from %s to %s (%s)", alias, lost.ref, kept.ref, reason)
        except MeguriError as exc:
            log.warning("alias %r left on %s: %s", alias, bad.ref, exc)

    def _last_good(self) -> DeploymentRevision | None:
        assert self.revision is not None
        good = (RevisionState.LIVE, RevisionState.SUPERSEDED)
        earlier = [
            r
            for r in self.repo.revisions(self.deployment.id)
            if r.number < self.revision.number and r.state in good
        ]
        return earlier[-1] if earlier else None


def _serve_settings(environment: dict[str, Any]) -> dict[str, Any]:
    """The :class:`~meguri.serve.ServeSettings` fields an environment sets for its workers."""
    settings: dict[str, Any] = {
        "capture_rate": float(environment.get("capture_rate", 0.0)),
        "capture_url": environment.get("capture_url"),
        "auth_token_sha256": environment.get("auth_token_sha256"),
    }
    for key in ("max_body_bytes", "max_rows"):
        if key in environment:
            settings[key] = int(environment[key])
    if not settings["capture_url"] or not settings["capture_rate"]:
        settings.update(capture_rate=0.0, capture_url=None)
    return settings


def _target_doc(target: DeploymentTarget, weight: float, role: str, folder: Path) -> dict[str, Any]:
    name, version = target.ref.split("@", 1)
    return {
        "key": target.model_version_id,
        "label": target.ref,
        "folder": str(folder),
        "digest": target.package_digest,
        "name": name,
        "version": version,
        "weight": weight,
        "role": role,
    }


#: Restarts the keeper allows within ``_RESTART_WINDOW_S`` before it gives up.
_MAX_RESTARTS = 5
_RESTART_WINDOW_S = 300.0


def keep(root: Path, env: str) -> None:
    """Run the supervisor as a child and start it again when it dies by a signal or an error
    (exit status 0 is a deliberate stop, or another supervisor holding the lock). Gives up
    after :data:`_MAX_RESTARTS` restarts in :data:`_RESTART_WINDOW_S`, and never restarts a
    deployment whose state is ``stopped``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    command = [sys.executable, "-m", "meguri.deploy._supervisor", str(root), env]
    restarts: list[float] = []
    while True:
        code = subprocess.run(command, stdin=subprocess.DEVNULL, check=False).returncode
        if code == 0:
            return
        now = time.monotonic()
        restarts = [t for t in restarts if t > now - _RESTART_WINDOW_S]
        if len(restarts) >= _MAX_RESTARTS:
            log.error("supervisor of %s died %s times in %.0f s; not restarting it", env,
                      len(restarts) + 1, _RESTART_WINDOW_S)  # fmt: skip
            return
        if _stopped(root, env):
            return
        pause = 0.2 * 2 ** len(restarts)
        log.warning("supervisor of %s exited (%s); starting it again in %.1f s", env, code, pause)
        time.sleep(pause)
        restarts.append(now)


def _stopped(root: Path, env: str) -> bool:
    ws = open_workspace(root)
    try:
        found = ws.metadata.deployments.find(ws.project.id, env)
        return found is None or found.state is DeploymentState.STOPPED
    finally:
        ws.close()


def main(argv: list[str]) -> None:
    """Run the supervisor of environment ``argv[1]`` of the project at ``argv[0]``; exits at
    once when another supervisor holds the environment's lock. ``--detach`` first: fork a keeper
    (:func:`keep`) and return at once."""
    if argv and argv[0] == "--detach":  # fork: the caller's process returns at once
        if os.fork() > 0:
            os._exit(0)
        keep(Path(argv[1]), argv[2])
        return
    root, env = Path(argv[0]), argv[1]
    state = state_dir(root, env)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    lock = os.open(state / "supervisor.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another supervisor serves environment %s", env)
        return
    ws = open_workspace(root)
    try:
        Supervisor(ws, ws.metadata.deployments.get(ws.project.id, env), state).run()
    finally:
        ws.close()
        os.close(lock)


if __name__ == "__main__":
    main(sys.argv[1:])
