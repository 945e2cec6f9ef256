"""The README's tutorial runs as written (docs that run)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from meguri.testing.cli import MEGURI, clean_env, run_meguri

README = Path(__file__).parent.parent / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_opens_with_the_two_commands() -> None:
    first = _blocks("bash")[0]
    assert first.splitlines()[0].startswith("make demo")
    assert first.splitlines()[1].startswith("make test")


def _shell(block: str, cwd: Path, expect: tuple[str, ...]) -> None:
    """Run the block's meguri commands; each must succeed and print one of ``expect``."""
    for line in block.splitlines():
        if not line.startswith("meguri ") or "RUN_A" in line:
            continue
        args = shlex.split(line.split("#")[0])[1:]
        out = run_meguri(*args, cwd=cwd)
        assert out.returncode == 0, (line, out.stderr)
        assert any(word in out.stdout for word in expect), (line, out.stdout)


def _python(block: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", block], cwd=cwd, env=clean_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tutorials_run(tmp_path: Path) -> None:
    tracking, data = _blocks("python")
    shells = _blocks("bash")
    (tmp_path / "tracking").mkdir()
    _python(tracking, tmp_path / "tracking")
    _shell(shells[1], tmp_path / "tracking", ("baseline", "loss"))
    (tmp_path / "data").mkdir()
    _shell(shells[2], tmp_path / "data", ("meguri.yaml", "breast_cancer", "rows"))
    assert (tmp_path / "data" / "profile.html").stat().st_size > 1_000_000
    assert float(_python(data, tmp_path / "data")) > 10


def test_train_tutorial_runs(tmp_path: Path) -> None:
    """The train tutorial on a copy of the Adult example (its `cd` line is the copy here)."""
    example = README.parent / "examples" / "adult" / "meguri.yaml"
    (tmp_path / "meguri.yaml").write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
    _shell(_blocks("bash")[3], tmp_path, ("lightgbm", "train"))


def test_registry_and_serving_tutorial_runs(tmp_path: Path) -> None:
    """The registry block as written, then its `meguri serve` and curl lines for real."""
    _shell(_blocks("bash")[4], tmp_path, ("meguri.yaml", "cancer", "production", "card"))
    assert "<html" in (tmp_path / "card.html").read_text(encoding="utf-8").lower()
    export = "models export cancer@1 --format container --out image"
    assert f"meguri {export}" in README.read_text(encoding="utf-8")
    out = run_meguri(*export.split(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "EXPOSE 8080" in (tmp_path / "image" / "Dockerfile").read_text(encoding="utf-8")
    port = str(_free_port())
    lines = [line.replace("8080", port) for line in _sh_lines(_blocks("sh")[0])]
    serve = [*MEGURI, *shlex.split(lines[0].split("&")[0])[1:]]
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        server = subprocess.Popen(serve, cwd=tmp_path, env=clean_env(), stderr=err)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/ping", server, log)
        outputs = [_run_curl(line, tmp_path) for line in lines[2:]]
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert outputs[0] == '{"predictions":[1]}'
    assert "missing" in outputs[1] and "mean_texture" in outputs[1]
    assert 'meguri_requests_total{endpoint="/invocations",status="200"} 1' in outputs[2]
    try:
        _shell(_blocks("bash")[5], tmp_path, ("staging", "pass", "cached", "register", "stopped"))
    finally:
        run_meguri("deploy", "stop", "--env", "staging", cwd=tmp_path)
    _monitoring_tutorial(tmp_path)


def _monitoring_tutorial(root: Path) -> None:
    """The monitoring block on a real production endpoint that got traffic with request ids."""
    import time

    import httpx
    import polars as pl

    from meguri import datasets
    from meguri.deploy import deploy, status, stop
    from meguri.monitor._capture import capture_url, scan_predictions
    from meguri.store import open_workspace

    ws = open_workspace(root)
    try:
        deploy("cancer@1", env="production", workspace=ws)
        url = status("production", workspace=ws).url
        rows = pl.from_arrow(datasets.load("breast_cancer")).head(60)
        assert isinstance(rows, pl.DataFrame)
        inputs = [c for c in rows.columns if c != "malignant"]
        with httpx.Client(base_url=str(url), timeout=10) as client:
            for i in range(rows.height):
                body = {"dataframe_split": {"columns": inputs, "data": [rows.row(i)[:-1]]}}
                sent = client.post("/invocations", json=body, headers={"x-request-id": f"r{i}"})
                assert sent.status_code == 200, sent.text
        labels = rows.select(
            pl.format("r{}", pl.int_range(pl.len())).alias("request_id"),
            pl.lit(0).alias("row"),
            pl.col("malignant").alias("label"),
        )
        labels.write_csv(root / "labels.csv")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the workers write captures every few seconds
            if scan_predictions(capture_url(ws, "production")).collect().height:
                break
            time.sleep(0.5)
        _shell(_blocks("bash")[6], root, ("production", "recorded", "firing", "wrote", "alerts"))
        assert (root / "monitoring.html").stat().st_size > 100_000
        windows = ws.metadata.monitor.windows(ws.project.id, "production")
        assert windows and windows[-1].figures["labels"]
    finally:
        stop("production", workspace=ws)
        ws.close()


def _sh_lines(block: str) -> list[str]:
    """The block's commands, continuation lines joined and comments dropped."""
    joined = block.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text(encoding="utf-8")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within 30 s")


def _run_curl(line: str, cwd: Path) -> str:
    command = line.split("|")[0]
    done = subprocess.run(shlex.split(command), cwd=cwd, capture_output=True, text=True)
    out = done.stdout
    if "|" in line:
        pattern = shlex.split(line.split("|")[1])[-1]
        out = "\n".join(x for x in out.splitlines() if pattern in x)
    return out.strip()
