"""Resource use of a run: wall time, CPU seconds (this process and its children), peak memory."""

from __future__ import annotations

import resource
import sys
import time

import psutil

from meguri.store.metadata.repositories.runs import RunResources

# ru_maxrss is in KiB on Linux and in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT


class ResourceMeter:
    """Started with a run; :meth:`sample` is called by the heartbeat, :meth:`read` at the end."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._start_wall = time.perf_counter()
        self._start_cpu = self._cpu()
        self._start_maxrss = _max_rss()
        self._peak = self._process.memory_info().rss

    def _cpu(self) -> float:
        t = self._process.cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)

    def sample(self) -> int:
        """Record the current RSS; return the peak seen so far."""
        self._peak = max(self._peak, self._process.memory_info().rss)
        return self._peak

    def read(self) -> RunResources:
        self.sample()
        maxrss = _max_rss()
        # If the process's lifetime peak rose during the run, that peak happened in the run.
        peak = maxrss if maxrss > self._start_maxrss else self._peak
        return RunResources(
            wall_seconds=time.perf_counter() - self._start_wall,
            cpu_seconds=self._cpu() - self._start_cpu,
            peak_memory_bytes=peak,
        )
