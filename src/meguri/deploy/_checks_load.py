"""A closed-loop load test of one HTTP endpoint: ``concurrency`` connections, each sending the
same request again as soon as the last one is answered, for ``duration_s`` seconds.

It runs in another process than the caller (which may be serving the endpoint from a thread):
``wrk`` when it is installed (``generator="auto"`` or ``"wrk"``), else a small asyncio client
over raw sockets (HTTP/1.1 keep-alive) started as a child Python process. The figures are the
successful requests per second, the latency percentiles of every answered request and the
errors (non-2xx answers, connection failures, timeouts).

The request body is made of held-out rows, data that must not reach the disk in clear when
encryption at rest is on (it is never on the disk in any case now). The asyncio child reads it
from its stdin. ``wrk`` reads its Lua script and the body from files: they are anonymous
in-memory files (Linux ``memfd_create``) that the child inherits and opens as
``/proc/self/fd/N``; they have no name in any filesystem and vanish with the processes. Only
where ``memfd_create`` is missing do they become real files, in a temporary folder of mode 700
removed in ``finally`` (``tempfile.TemporaryDirectory``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from meguri.errors import ConfigError
from meguri.store.artifacts._memory import memory_file, memory_files_available

__all__ = ["LoadFigures", "load_test", "main"]

_WRK_DONE = """
local body = assert(io.open(%s, "rb"))
wrk.method = "POST"
wrk.body = body:read("*a")
body:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("MEGURI-LOAD %%d %%d %%d %%d %%d %%d %%d %%.1f %%.1f %%.1f\\n",
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class LoadFigures:
    """What a load test measured (latencies in milliseconds)."""

    generator: str
    concurrency: int
    duration_s: float
    requests: int
    """Requests answered (any status)."""
    errors: int
    """Non-2xx answers plus connection errors and timeouts."""
    rps: float
    """Successful requests per second."""
    p50_ms: float
    p95_ms: float
    p99_ms: float

    def metrics(self) -> dict[str, float]:
        """The figures under the metric names success criteria use."""
        return {
            "throughput_rps": self.rps,
            "latency_p50_ms": self.p50_ms,
            "latency_p95_ms": self.p95_ms,
            "latency_p99_ms": self.p99_ms,
            "error_rate": self.errors / max(1, self.requests),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_test(
    url: str,
    body: bytes,
    *,
    headers: dict[str, str],
    duration_s: float = 3.0,
    concurrency: int = 16,
    generator: str = "auto",
) -> LoadFigures:
    """POST ``body`` to ``url`` under load (see the module docstring)."""
    if concurrency < 1 or duration_s <= 0:
        raise ConfigError("load test: concurrency must be at least 1 and duration_s positive")
    wrk = shutil.which("wrk")
    if generator == "wrk" and wrk is None:
        raise ConfigError("load test: wrk is not installed; install it or use generator='asyncio'")
    if generator not in ("auto", "wrk", "asyncio"):
        raise ConfigError(f"load test: generator {generator!r} is not auto, wrk or asyncio")
    if wrk is not None and generator != "asyncio":
        return _wrk(wrk, url, body, headers, duration_s, concurrency)
    return _child(url, body, headers, duration_s, concurrency)


def _wrk(
    wrk: str, url: str, body: bytes, headers: dict[str, str], duration_s: float, concurrency: int
) -> LoadFigures:
    seconds = max(1, round(duration_s))
    with _private_files() as files:
        body_path, body_fd = files("body", body)
        script = (_WRK_DONE % json.dumps(body_path)).encode()
        script_path, script_fd = files("load.lua", script)
        command = [wrk, "-t", str(min(2, concurrency)), "-c", str(concurrency),
                   "-d", f"{seconds}s", "--timeout", "10s", "-s", script_path]  # fmt: skip
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        done = subprocess.run(
            [*command, url], capture_output=True, text=True, timeout=seconds + 60, check=False,
            pass_fds=[fd for fd in (body_fd, script_fd) if fd >= 0],
        )  # fmt: skip
    line = next((x for x in done.stdout.splitlines() if x.startswith("MEGURI-LOAD ")), None)
    if done.returncode != 0 or line is None:
        raise ConfigError(f"load test: wrk failed ({done.returncode}): {done.stderr.strip()}")
    return _from_wrk(line.split()[1:], concurrency)


_MakeFile = Callable[[str, bytes], tuple[str, int]]


@contextmanager
def _private_files() -> Iterator[_MakeFile]:
    """A maker of files for a child process: ``make(name, data)`` gives the path the child
    opens and the descriptor to pass it (-1: none). In-memory files where the system has
    them, else files in a temporary folder of mode 700; all closed or removed on exit."""
    if not memory_files_available():
        with tempfile.TemporaryDirectory(prefix="meguri-load-") as folder:

            def on_disk(name: str, data: bytes) -> tuple[str, int]:
                path = Path(folder) / name
                path.write_bytes(data)
                return str(path), -1

            yield on_disk
        return
    with ExitStack() as files:

        def in_memory(name: str, data: bytes) -> tuple[str, int]:
            path, fd = files.enter_context(memory_file(name))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            return str(path), fd

        yield in_memory


def _from_wrk(fields: list[str], concurrency: int) -> LoadFigures:
    duration_us, requests, connect, read, write, status, timeout = map(int, fields[:7])
    p50, p95, p99 = (float(x) / 1000 for x in fields[7:])
    seconds = duration_us / 1e6
    errors = connect + read + write + status + timeout
    rps = (requests - status) / seconds if seconds else 0.0
    return LoadFigures("wrk", concurrency, seconds, requests, errors, rps, p50, p95, p99)


# -- the asyncio generator (a child process) ---------------------------------------------------


def _child(
    url: str, body: bytes, headers: dict[str, str], duration_s: float, concurrency: int
) -> LoadFigures:
    config = {"url": url, "body": body.decode(), "headers": headers,
              "duration_s": duration_s, "concurrency": concurrency}  # fmt: skip
    code = "from meguri.deploy._checks_load import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(config), capture_output=True, text=True,
        timeout=duration_s + 60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise ConfigError(f"load test: the load generator failed: {done.stderr.strip()[-500:]}")
    return LoadFigures(**json.loads(done.stdout))


def main() -> None:
    """The child process: the configuration as JSON on stdin, the figures as JSON on stdout."""
    config = json.loads(sys.stdin.read())
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    figures = asyncio.run(_run(**config))
    sys.stdout.write(json.dumps(figures.to_dict()))


async def _run(
    url: str, body: str, headers: dict[str, str], duration_s: float, concurrency: int
) -> LoadFigures:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = [f"POST {parts.path or '/'} HTTP/1.1", f"host: {host}:{port}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"content-length: {len(body.encode())}")
    request = ("\r\n".join(head) + "\r\n\r\n" + body).encode()
    latencies: list[float] = []
    errors = [0, 0]  # non-2xx answers, connection errors and timeouts
    started = time.perf_counter()
    deadline = started + duration_s
    workers = [
        _worker(host, port, request, deadline, latencies, errors) for _ in range(concurrency)
    ]
    await asyncio.gather(*workers)
    return _figures(latencies, errors, time.perf_counter() - started, concurrency)


async def _worker(
    host: str, port: int, request: bytes, deadline: float, latencies: list[float], errors: list[int]
) -> None:
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            started = time.perf_counter()
            writer.write(request)
            status = await asyncio.wait_for(_response(reader), timeout=10)
            latencies.append(time.perf_counter() - started)
            errors[0] += not 200 <= status < 300
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError):  # fmt: skip
            errors[1] += 1
            writer = None
    if writer is not None:
        writer.close()


async def _response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length or chunked body); its status."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    status = int(head.split(" ", 2)[1])
    if "transfer-encoding: chunked" in head:
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
        return status
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            await reader.readexactly(int(line.split(":", 1)[1]))
    return status


def _figures(
    latencies: list[float], errors: list[int], seconds: float, concurrency: int
) -> LoadFigures:
    import numpy as np

    ms = np.asarray(latencies, dtype=np.float64) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99]).tolist() if len(ms) else [float("nan")] * 3
    rps = (len(latencies) - errors[0]) / seconds
    return LoadFigures(
        "asyncio", concurrency, seconds, len(latencies), sum(errors), rps, p50, p95, p99
    )
