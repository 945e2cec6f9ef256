"""``meguri demo`` end to end, as ``make demo`` runs it: the data and model phases, in-process
serving, then real supervised endpoints (staging, production), the pre-promotion tests on the
staging URL, a broken canary rolled back under traffic, then the monitoring loop (normal and
shifted traffic, windows, feedback, an alert to a webhook, retraining and its canary going
live); every endpoint stopped at the end."""

from __future__ import annotations

import re
import time
from pathlib import Path

import psutil

import meguri
from meguri.testing.cli import run_meguri


def _leftovers(root: Path) -> list[str]:
    """Processes of the demo's deployments still alive (supervisors, workers)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "meguri.deploy" in line and str(root) in line:
            found.append(f"{proc.pid}: {line}")
    return found


def test_demo_deploys_tests_rolls_back_and_stops_everything(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    started = time.perf_counter()
    done = run_meguri("demo", "--dir", str(folder), "--no-ui", cwd=tmp_path)
    took = time.perf_counter() - started
    out = re.sub(r"\s+", " ", done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "registered breast-cancer@1" in out
    assert "pre-promotion tests on staging (http://127.0.0.1:" in out
    assert re.search(r"pre-promotion tests on staging \(\S+\): pass", out), out[-3000:]
    assert "deployed breast-cancer@1 to production" in out
    assert "registered breast-cancer@2, a broken version" in out
    assert re.search(r"automatic rollback after [\d.]+ s: rollback: schema violation rate", out)
    assert re.search(r"[1-9]\d* of \d+ requests refused during the canary, 0 of 20 after", out)
    assert re.search(r"production windows: drift before labels", out)
    assert re.search(r"feedback: [1-9]\d* true diagnoses arrived", out)
    assert "webhook receiver got 1 notification(s): firing data-drift" in out
    assert re.search(r"retraining for alert al-\S+: deployed: breast-cancer@3 from [1-9]", out)
    assert re.search(r"canary of breast-cancer@3: revision 4 live", out), out[-3000:]
    assert "monitoring report:" in out
    assert "stopped the staging endpoint" in out and "stopped the production endpoint" in out
    deadline = time.monotonic() + 10.0
    while _leftovers(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _leftovers(folder)
    _check_records(folder)
    print(f"\nmeguri demo: {took:.1f} s")


def _check_records(folder: Path) -> None:
    """The training run is linked to the spec version and holds the package it registered."""
    ws = meguri.open_workspace(folder)
    try:
        version = meguri.get_model_version("breast-cancer@1", workspace=ws)
        run = meguri.get_run(version.run_id, workspace=ws)
        assert run.status is meguri.RunStatus.FINISHED
        assert run.spec_version_id is not None
        assert ws.metadata.specs.get(run.spec_version_id).content.startswith("#")
        assert run.metrics["test/roc_auc"].value > 0.95
        names = {a.name for a in ws.metadata.runs.list_artifacts(run.id)}
        assert {"model/model.json", "evaluation/test_intervals.json"} <= names
        assert version.card_html_digest is not None
    finally:
        ws.close()
