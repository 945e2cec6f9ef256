"""Load generation and process measurement for ``bench/serve.py``: ``wrk``, readiness, RSS.

``wrk`` (Debian's package; ``apt-get install -y wrk``) is pinned to core 0 and sends one
request body over and over (``-t1``: one thread is plenty for one core). A Lua script sets the
method, body and content type and, at the end, prints one JSON line with the request count,
the latency percentiles (wrk's own histogram, microseconds) and the error counts, which is what
we parse: wrk's text summary rounds too much. For the reliability run the script also counts
responses by status class in ``response()`` and stops the thread once it has seen ``limit``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRK_HINT = "wrk is missing: install it with `apt-get install -y wrk` (Debian/Ubuntu)."

_REQUEST_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local f = io.open("{body_path}", "rb")
wrk.body = f:read("*a")
f:close()
"""

_DONE_LUA = """
function summary_line(summary, latency)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "mean_us": %f, "connect": %d, "read": %d, "write": %d, "status": %d, '
    .. '"timeout": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status,
    e.timeout))
end
function done(summary, latency, requests) summary_line(summary, latency) end
"""

_COUNTING_LUA = """
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) seen = 0; s2 = 0; s4 = 0; s5 = 0; other = 0 end
function response(status, headers, body)
  seen = seen + 1
  if status >= 500 then s5 = s5 + 1
  elseif status >= 400 then s4 = s4 + 1
  elseif status >= 200 and status < 300 then s2 = s2 + 1
  else other = other + 1 end
  if seen == {limit} then
    local f = io.open("{marker}", "w"); f:write("done"); f:close()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  summary_line(summary, latency)
  local t = threads[1]
  io.write(string.format(
    'WRKCOUNT {{"responses": %d, "2xx": %d, "4xx": %d, "5xx": %d, "other": %d}}\\n',
    t:get("seen"), t:get("s2"), t:get("s4"), t:get("s5"), t:get("other")))
end
"""


@dataclass(frozen=True)
class Request:
    """What every request of one load run is: a POST of ``body`` to ``url``."""

    url: str
    body: bytes
    content_type: str


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(WRK_HINT)
    return found


def _script(request: Request, folder: Path, limit: int | None) -> Path:
    (folder / "limit-reached").unlink(missing_ok=True)
    body_path = folder / "body.bin"
    body_path.write_bytes(request.body)
    text = _REQUEST_LUA.format(content_type=request.content_type, body_path=body_path)
    text += _DONE_LUA.format()
    if limit is not None:  # its done() replaces the plain one and calls summary_line too
        text += _COUNTING_LUA.format(limit=limit, marker=folder / "limit-reached")
    script = folder / ("count.lua" if limit else "load.lua")
    script.write_text(text)
    return script


def wrk(
    request: Request,
    *,
    connections: int,
    seconds: float,
    folder: Path,
    core: int = 0,
    limit: int | None = None,
) -> dict[str, Any]:
    """One wrk run; returns the parsed JSON line(s) plus ``rps`` and the command line."""
    script = _script(request, folder, limit)
    argv = ["taskset", "-c", str(core), require_wrk(), "-t1", f"-c{connections}"]
    argv += [f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script), request.url]
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if limit is not None:
        _interrupt_at_marker(process, folder / "limit-reached")
    stdout, stderr = process.communicate(timeout=seconds + 120)
    wall = time.perf_counter() - started
    result: dict[str, Any] = {"argv": " ".join(argv[3:]), "wall_s": wall}
    for line in stdout.splitlines():
        for tag in ("WRKJSON ", "WRKCOUNT "):
            if line.startswith(tag):
                result.update(json.loads(line[len(tag) :]))
    if "requests" in result:
        result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    elif "responses" in result:
        result["rps"] = result["responses"] / wall
    if "requests" not in result and "responses" not in result:
        result["error"] = (stderr or stdout)[-2000:]
    return result


def _interrupt_at_marker(process: subprocess.Popen[str], marker: Path) -> None:
    """wrk's main thread sleeps the whole ``-d`` even when its thread stopped: once the Lua
    side wrote ``marker`` (the request limit reached), SIGINT ends the run and prints it."""
    while process.poll() is None and not marker.exists():
        time.sleep(0.02)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)


# -- server processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """The status of ``GET path`` on loopback, or None when nothing answers yet."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request.encode())
            head = sock.recv(64)
    except OSError:
        return None
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def post(request: Request, timeout: float = 30.0) -> tuple[int, bytes]:
    """One POST (the benchmark checks each server's answer before loading it)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        request.url, data=request.body, headers={"Content-Type": request.content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


@dataclass
class Server:
    """A server process (its own session, so the whole tree is stopped together)."""

    process: subprocess.Popen[bytes]
    log: Path
    ready_s: float | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def start(
    argv: list[str],
    *,
    env: dict[str, str],
    port: int,
    ping: str,
    log: Path,
    cwd: Path | None = None,
    core: int = 1,
    deadline_s: float = 120.0,
) -> Server:
    """Spawn ``argv`` on ``core``; wait until ``GET ping`` answers 200 (``ready_s``: spawn to
    that first 200, polled every 5 ms). Raises RuntimeError with the log's tail otherwise."""
    handle = log.open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        ["taskset", "-c", str(core), *argv],
        env=env,
        cwd=cwd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(process, log)
    while time.perf_counter() - started < deadline_s:
        if process.poll() is not None:
            break
        if http_status(port, ping) == 200:
            server.ready_s = time.perf_counter() - started
            return server
        time.sleep(0.005)
    server.stop()
    raise RuntimeError(f"{argv[0]} did not become ready on :{port}{ping}:\n{server.tail()}")


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total
