"""The process-wide side of tracking: one background thread that flushes buffers and beats
heartbeats for every open run, and the exit paths (interpreter exit, SIGTERM) that end them."""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from meguri.store.metadata import RunStatus

if TYPE_CHECKING:
    from meguri.train._tracking import ActiveRun

log = logging.getLogger("meguri.tracking")


class _Lifecycle:
    def __init__(self) -> None:
        self._runs: list[ActiveRun] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat = 10.0
        self._flush = 1.0
        self._hooks_installed = False
        self._crashed = False
        self.terminating = False
        self._main_depth = 0  # > 0 while the main thread writes to a store
        self._pending_exit: int | None = None

    def track(self, run: ActiveRun, heartbeat_interval: float, flush_interval: float) -> None:
        with self._lock:
            self._runs.append(run)
            self._heartbeat = (
                min(heartbeat_interval, self._heartbeat)
                if len(self._runs) > 1
                else heartbeat_interval
            )
            self._flush = min(flush_interval, self._heartbeat)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="meguri-tracking", daemon=True
                )
                self._thread.start()
        self._install_hooks()

    def forget(self, run: ActiveRun) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._runs.remove(run)

    def latest(self) -> ActiveRun | None:
        with self._lock:
            return self._runs[-1] if self._runs else None

    def _snapshot(self) -> list[ActiveRun]:
        with self._lock:
            return list(self._runs)

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._flush)
            self._wake.clear()
            now = time.time()
            for run in self._snapshot():
                try:
                    run.tick(now, self._heartbeat)
                except Exception as err:  # the store is busy or gone: keep the points, retry
                    log.warning("meguri: could not write run %s yet (%s); will retry", run.id, err)

    # -- exit paths -----------------------------------------------------------------------------

    def _install_hooks(self) -> None:
        if self._hooks_installed:
            return
        self._hooks_installed = True
        atexit.register(self._at_exit)
        previous_hook = sys.excepthook

        def excepthook(t: type[BaseException], e: BaseException, tb: TracebackType | None) -> None:
            self._crashed = True
            previous_hook(t, e, tb)

        sys.excepthook = excepthook
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGTERM)
            if previous != signal.SIG_IGN:
                signal.signal(signal.SIGTERM, lambda s, f: self._on_sigterm(s, f, previous))

    def end_all(self, status: RunStatus, reason: str | None) -> None:
        for run in reversed(self._snapshot()):
            try:
                run.end(status, reason)
            except Exception as err:
                log.error("meguri: could not end run %s: %s", run.id, err)

    def _at_exit(self) -> None:
        if self.terminating:
            self.end_all(RunStatus.KILLED, TERMINATED)
        elif self._crashed:
            self.end_all(RunStatus.FAILED, "the program stopped on an uncaught exception")
        else:
            self.end_all(RunStatus.FINISHED, None)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A store write that SIGTERM must not cut in half: the exit waits until it ends."""
        main = threading.current_thread() is threading.main_thread()
        self._main_depth += main
        try:
            yield
        finally:
            self._main_depth -= main
            if main and not self._main_depth and self._pending_exit is not None:
                code, self._pending_exit = self._pending_exit, None
                raise SystemExit(code)

    def _on_sigterm(self, signum: int, frame: FrameType | None, previous: Any) -> None:
        """Unwind like Ctrl-C does, instead of writing from inside the signal handler.

        The interrupted code may hold a run's write lock or an open transaction, so the handler
        itself does no I/O: it raises SystemExit(143) (after the current write, if one is under
        way); ``with`` blocks and then the exit hook flush and end the runs as killed. A handler
        installed before ours still runs first.
        """
        self.terminating = True
        if callable(previous):
            previous(signum, frame)
        if self._main_depth:
            self._pending_exit = 128 + signum
            return
        raise SystemExit(128 + signum)


TERMINATED = "terminated by SIGTERM"
lifecycle = _Lifecycle()
