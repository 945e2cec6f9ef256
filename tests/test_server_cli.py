"""``meguri server`` as a process: it opens the project of its folder, creates the signing
secret privately on first start, serves the API on loopback and stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from meguri.store import open_workspace

pytestmark = pytest.mark.slow

_START = (
    "import sys; from meguri.cli._server import server_cmd; "
    "server_cmd(host='127.0.0.1', port=int(sys.argv[1]))"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/api/v1/openapi.json", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"the server did not come up: {proc.stderr.read() if proc.stderr else ''}")


def test_meguri_server_serves_the_project_of_its_folder(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEGURI_")}
    env["MEGURI_PROJECT"] = "cli"
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", _START, str(port)]
    with subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE) as proc:
        _exercise(url, tmp_path, proc)


def _exercise(url: str, tmp_path: Path, proc: subprocess.Popen[bytes]) -> None:
    try:
        _wait_up(url, proc)
        secret = tmp_path / ".meguri" / "secret"
        assert secret.stat().st_mode & 0o777 == 0o600
        assert httpx.get(url + "/api/v1/projects/cli/runs").status_code == 401
        ws = open_workspace(tmp_path, project="cli", user="owner")
        try:
            ws.metadata.access.create_user("ana", by="owner")
            ws.metadata.access.set_role(ws.project.id, "ana", "viewer", by="owner")
            token = ws.metadata.access.create_token("ana", name="t", by="owner")[1]
        finally:
            ws.close()
        answer = httpx.get(
            url + "/api/v1/projects/cli/runs", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200 and answer.json()["runs"] == []
        bad_host = httpx.get(url + "/api/v1/openapi.json", headers={"Host": "rebound.example"})
        assert bad_host.status_code == 400
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
