"""Run tracking through the SDK, against a real SQLite store and a local artifact folder."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import meguri
from meguri.errors import TrackingError
from meguri.store import Workspace, open_workspace
from meguri.store.metadata import RunStatus


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = open_workspace(tmp_path, project="tracking")
    yield workspace
    workspace.close()


def test_run_records_params_metrics_tags_and_resources(ws: Workspace) -> None:
    with meguri.start_run("first", workspace=ws, params={"C": 1.0}, tags={"team": "a"}) as run:
        for i in range(100):
            run.log_metric("loss", 1.0 / (i + 1))
        run.log_metrics({"acc": 0.9, "f1": 0.8}, step=3)
        run.set_tag("stage", "dev")
        _ = sum(range(200_000))  # some CPU
    info = meguri.get_run(run.id, workspace=ws)
    assert info.status is RunStatus.FINISHED
    assert info.params == {"C": "1.0"}
    assert info.tags == {"team": "a", "stage": "dev"}
    assert info.metrics["loss"].step == 99
    assert info.metrics["loss"].value == pytest.approx(0.01)
    assert info.metrics["acc"].step == 3
    assert info.wall_seconds is not None and info.wall_seconds > 0
    assert info.cpu_seconds is not None and info.cpu_seconds >= 0
    assert info.peak_memory_bytes is not None and info.peak_memory_bytes > 10_000_000
    hist = meguri.get_metric_history(run.id, "loss", workspace=ws)
    assert hist.steps.tolist() == list(range(100))


def test_buffered_points_reach_the_store_on_flush(ws: Workspace) -> None:
    run = meguri.start_run(workspace=ws)
    run.log_batch([("x", float(i), i) for i in range(1000)])
    assert len(meguri.get_metric_history(run.id, "x", workspace=ws)) in range(0, 1001)
    run.flush()
    assert len(meguri.get_metric_history(run.id, "x", workspace=ws)) == 1000
    run.end()


def test_durable_writes_each_call(ws: Workspace) -> None:
    with meguri.start_run(workspace=ws, durable=True) as run:
        run.log_metric("x", 1.0)
        assert len(meguri.get_metric_history(run.id, "x", workspace=ws)) == 1


def test_exception_fails_the_run(ws: Workspace) -> None:
    with pytest.raises(ValueError, match="bad data"), meguri.start_run(workspace=ws) as run:
        run.log_metric("x", 1.0)
        raise ValueError("bad data")
    info = meguri.get_run(run.id, workspace=ws)
    assert info.status is RunStatus.FAILED
    assert info.status_reason == "ValueError: bad data"
    assert info.metrics["x"].value == 1.0  # flushed before ending


def test_bad_input_is_a_tracking_error(ws: Workspace) -> None:
    with meguri.start_run(workspace=ws) as run:
        with pytest.raises(TrackingError, match="must be a number"):
            run.log_metric("acc", "high")  # type: ignore[arg-type]
        with pytest.raises(TrackingError, match="Invalid metric name"):
            run.log_metric("bad\nname", 1.0)
        with pytest.raises(TrackingError, match="Invalid artifact name"):
            run.log_text("x", "../../etc/passwd")
    with pytest.raises(TrackingError, match="has ended"):
        run.log_metric("late", 1.0)


def test_artifacts_text_dict_figure_file(ws: Workspace, tmp_path: Path) -> None:
    import plotly.graph_objects as go

    source = tmp_path / "weights.bin"
    source.write_bytes(os.urandom(4096))
    with meguri.start_run(workspace=ws) as run:
        run.log_text("hello", "notes/readme.txt")
        run.log_dict({"a": 1}, "config.json")
        fig_ref = run.log_figure(go.Figure(go.Scatter(x=[0, 1], y=[0, 1])), "plots/roc")
        file_ref = run.log_artifact(source)
    refs = {a.name: a for a in ws.metadata.runs.list_artifacts(run.id)}
    assert set(refs) == {"notes/readme.txt", "config.json", "plots/roc.plotly.json", "weights.bin"}
    assert ws.artifacts.get_bytes(refs["notes/readme.txt"].digest) == b"hello"
    assert json.loads(ws.artifacts.get_bytes(refs["config.json"].digest)) == {"a": 1}
    assert fig_ref.media_type == "application/vnd.plotly.v1+json"
    assert ws.artifacts.get_bytes(file_ref.digest) == source.read_bytes()


def test_inputs_and_spec_link(ws: Workspace) -> None:
    with meguri.start_run(workspace=ws, inputs={"dataset_version": ["dsv-1", "dsv-2"]}) as run:
        run.log_input("dataset_version", "dsv-3")
    assert meguri.get_run(run.id, workspace=ws).inputs == {
        "dataset_version": ["dsv-1", "dsv-2", "dsv-3"]
    }


def test_search_runs_across_experiments(ws: Workspace) -> None:
    for i, exp in enumerate(["a", "a", "b"]):
        with meguri.start_run(f"r{i}", experiment=exp, workspace=ws) as run:
            run.log_metric("auc", i / 10)
    assert [r.name for r in meguri.search_runs(order_by=["metrics.auc desc"], workspace=ws)] == [
        "r2",
        "r1",
        "r0",
    ]
    assert [
        r.name for r in meguri.search_runs("metrics.auc > 0", experiment="a", workspace=ws)
    ] == ["r1"]


def _script(root: Path, body: str, **env: str) -> subprocess.Popen[bytes]:
    code = textwrap.dedent(
        f"""
        import sys, time, meguri
        ws = meguri.open_workspace({str(root)!r}, project="tracking")
        """
    ) + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _run_id(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().decode().strip()


def _finish(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the child, close its pipes, and return its exit status."""
    _, err = proc.communicate(timeout=60)
    if proc.returncode not in (0, -signal.SIGKILL, 128 + signal.SIGTERM):
        print(err.decode())
    return proc.returncode


def test_sigkill_is_marked_failed_by_heartbeat_timeout(ws: Workspace) -> None:
    proc = _script(
        ws.root,
        """
        run = meguri.start_run(workspace=ws)
        print(run.id, flush=True)
        time.sleep(60)
        """,
        MEGURI_HEARTBEAT_INTERVAL="0.2",
        MEGURI_FLUSH_INTERVAL="0.1",
    )
    run_id = _run_id(proc)
    time.sleep(0.5)
    assert meguri.fail_stale_runs(ws, timeout=1.0) == 0  # heartbeat is alive
    proc.kill()
    _finish(proc)
    time.sleep(1.2)
    assert meguri.fail_stale_runs(ws, timeout=1.0) == 1
    info = meguri.get_run(run_id, workspace=ws)
    assert info.status is RunStatus.FAILED
    assert "heartbeat" in (info.status_reason or "")


def test_sigterm_flushes_and_marks_killed(ws: Workspace) -> None:
    proc = _script(
        ws.root,
        """
        run = meguri.start_run(workspace=ws)
        run.log_batch([("x", float(i), i) for i in range(5000)])
        print(run.id, flush=True)
        time.sleep(60)
        """,
        MEGURI_FLUSH_INTERVAL="3600",
        MEGURI_HEARTBEAT_INTERVAL="3600",
    )
    run_id = _run_id(proc)
    proc.send_signal(signal.SIGTERM)
    assert _finish(proc) == 128 + signal.SIGTERM
    info = meguri.get_run(run_id, workspace=ws)
    assert (info.status, info.status_reason) == (RunStatus.KILLED, "terminated by SIGTERM")
    assert len(meguri.get_metric_history(run_id, "x", workspace=ws)) == 5000


def test_sigterm_inside_with_block_ends_the_run_killed(ws: Workspace) -> None:
    proc = _script(
        ws.root,
        """
        with meguri.start_run(workspace=ws) as run:
            print(run.id, flush=True)
            while True:
                run.log_metric("busy", 1.0)
        """,
        MEGURI_FLUSH_INTERVAL="0.01",
    )
    run_id = _run_id(proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert _finish(proc) == 128 + signal.SIGTERM
    info = meguri.get_run(run_id, workspace=ws)
    assert (info.status, info.status_reason) == (RunStatus.KILLED, "terminated by SIGTERM")
    hist = meguri.get_metric_history(run_id, "busy", workspace=ws)
    assert hist.steps.tolist() == list(range(len(hist)))  # no point lost or doubled


def test_interpreter_exit_flushes_and_finishes(ws: Workspace) -> None:
    proc = _script(
        ws.root,
        """
        run = meguri.start_run(workspace=ws)
        run.log_batch([("x", float(i), i) for i in range(3000)])
        print(run.id, flush=True)
        """,
        MEGURI_FLUSH_INTERVAL="3600",
    )
    run_id = _run_id(proc)
    assert _finish(proc) == 0
    info = meguri.get_run(run_id, workspace=ws)
    assert info.status is RunStatus.FINISHED
    assert len(meguri.get_metric_history(run_id, "x", workspace=ws)) == 3000


def test_uncaught_exception_outside_with_fails_the_run(ws: Workspace) -> None:
    proc = _script(
        ws.root,
        """
        run = meguri.start_run(workspace=ws)
        print(run.id, flush=True)
        raise RuntimeError("boom")
        """,
    )
    run_id = _run_id(proc)
    assert _finish(proc) == 1
    assert meguri.get_run(run_id, workspace=ws).status is RunStatus.FAILED


@pytest.mark.slow
def test_eight_processes_log_every_point_exactly_once(metadata_url: str, tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(f"""
                import meguri
                ws = meguri.open_workspace({str(tmp_path)!r}, store_url={metadata_url!r},
                                           project="concurrent")
                with meguri.start_run(f"p{{{i}}}", workspace=ws, max_buffer=700) as run:
                    for step in range(2000):
                        run.log_metrics({{"a": step * 0.5, "b": -step}}, step=step)
                    print(run.id)
                """),
            ],
            stdout=subprocess.PIPE,
            env={**os.environ, "MEGURI_FLUSH_INTERVAL": "0.05"},
        )
        for i in range(8)
    ]
    outs = [p.communicate(timeout=120)[0].decode().strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * 8
    check = open_workspace(tmp_path, store_url=metadata_url, project="concurrent")
    for run_id in outs:
        for key, scale in (("a", 0.5), ("b", -1.0)):
            hist = check.metadata.runs.metric_history(run_id, key)
            assert hist.steps.tolist() == list(range(2000))
            assert hist.values.tolist() == [s * scale for s in range(2000)]
        assert check.metadata.runs.get_run(run_id).status is RunStatus.FINISHED
    check.close()


def test_nan_metric_roundtrip(ws: Workspace) -> None:
    with meguri.start_run(workspace=ws) as run:
        run.log_metric("loss", math.nan)
    assert math.isnan(meguri.get_run(run.id, workspace=ws).metrics["loss"].value)
