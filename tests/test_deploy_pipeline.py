"""``meguri run``: the spec end to end as cached steps, over a real SQLite store and training.

The example spec restricted to ``linear`` with 2 folds keeps each real training to seconds; the
full pipeline serves a real supervised endpoint on loopback (stopped at the end)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

import meguri
from meguri import deploy
from meguri.deploy._pipeline import (
    STEP_NAMES,
    PipelineResult,
    list_pipeline_runs,
    run_pipeline,
    step_runs,
)
from meguri.errors import PipelineError
from meguri.store import Workspace
from meguri.store.metadata import RunStatus
from meguri.testing.cli import run_meguri
from meguri.testing.specs import quick_spec_text

UNTIL_REGISTER = STEP_NAMES[: STEP_NAMES.index("register") + 1]


def spec_text(folds: int = 2, row_min: int = 500, auc: str = "0.95") -> str:
    text = quick_spec_text("pipe", folds=folds)
    text = text.replace(
        "      - check: row_count\n        min: 500",
        f"      - check: row_count\n        min: {row_min}",
    )
    return text.replace(
        "threshold: 0.95\n    description: Ranks", f"threshold: {auc}\n    description: Ranks"
    )


def statuses(result: PipelineResult) -> dict[str, str]:
    return {s.name: s.status for s in result.steps}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    workspace = meguri.open_workspace(tmp_path_factory.mktemp("pipeline"), project="pipe")
    yield workspace
    workspace.close()


@pytest.fixture(scope="module")
def first(ws: Workspace) -> PipelineResult:
    return run_pipeline(spec_text(), workspace=ws, until="register")


def test_first_run_records_every_step(ws: Workspace, first: PipelineResult) -> None:
    assert first.ok, first.summary()
    assert statuses(first) == dict.fromkeys(UNTIL_REGISTER, "ran")
    outputs = {s.name: s.outputs for s in first.steps}
    assert outputs["ingest"]["dataset_version"].startswith("dsv-")
    assert set(outputs["prepare"]["parts"]) == {"train", "validation", "test"}
    assert outputs["train"]["algorithm"] == "linear"
    assert outputs["register"]["ref"] == "pipe@1"
    assert outputs["gate"]["passed"] == 3  # auc-test, recall-test, balanced-accuracy-validation
    version = meguri.get_model_version("pipe@1", workspace=ws)
    assert version.run_id == outputs["train"]["train_run"]
    parent = meguri.get_run(first.run_id, workspace=ws)
    assert parent.status == RunStatus.FINISHED and parent.tags["kind"] == "pipeline"
    children = step_runs(first.run_id, workspace=ws)
    assert [r.name for r in children] == list(UNTIL_REGISTER)
    train_step = children[UNTIL_REGISTER.index("train")]
    assert len(train_step.params["cache_key"]) == 64
    assert train_step.params["in.prepare"] and train_step.tags["status"] == "ran"


def test_second_run_is_all_cached_and_fast(ws: Workspace, first: PipelineResult) -> None:
    again = run_pipeline(spec_text(), workspace=ws, until="register")
    assert again.all_cached, again.summary()
    assert again.summary().startswith(f"{len(UNTIL_REGISTER)} steps, all cached")
    assert again.seconds < min(2.0, first.seconds / 3), (again.seconds, first.seconds)
    assert {s.name: s.cached_from for s in again.steps} == {s.name: s.run_id for s in first.steps}
    assert again.steps[-1].outputs == first.steps[-1].outputs


def test_a_spec_change_reruns_from_the_first_affected_step(
    ws: Workspace, first: PipelineResult
) -> None:
    stricter = run_pipeline(spec_text(auc="0.951"), workspace=ws, until="register")
    assert statuses(stricter) == {
        **dict.fromkeys(UNTIL_REGISTER[:5], "cached"),
        "gate": "ran",
        "register": "ran",
    }
    # same package: registering it again returns the same version
    assert stricter.steps[-1].outputs["ref"] == "pipe@1"
    folds = run_pipeline(spec_text(folds=3), workspace=ws, until="gate")
    assert statuses(folds) == {
        **dict.fromkeys(("ingest", "validate", "prepare"), "cached"),
        **dict.fromkeys(("train", "evaluate", "gate"), "ran"),
    }


def test_a_failed_step_stops_with_the_reason_and_resume_continues(ws: Workspace) -> None:
    broken = run_pipeline(spec_text(row_min=100_000), workspace=ws, until="prepare")
    assert not broken.ok and broken.failed is not None
    assert [s.name for s in broken.steps] == ["ingest", "validate"]
    assert broken.failed.name == "validate"
    assert "row_count" in (broken.failed.error or "")
    parent = meguri.get_run(broken.run_id, workspace=ws)
    assert parent.status == RunStatus.FAILED and parent.tags["failed_step"] == "validate"
    assert "validate" in (parent.status_reason or "")
    fixed = run_pipeline(spec_text(row_min=400), workspace=ws, until="prepare", resume=True)
    assert statuses(fixed) == {"ingest": "cached", "validate": "ran", "prepare": "cached"}
    assert meguri.get_run(fixed.run_id, workspace=ws).tags["resumed_from"] == broken.run_id
    assert list_pipeline_runs(workspace=ws)[0].id == fixed.run_id


def test_from_reruns_a_step_and_those_after_it(ws: Workspace, first: PipelineResult) -> None:
    result = run_pipeline(spec_text(), workspace=ws, from_step="gate", until="register")
    assert statuses(result) == {
        **dict.fromkeys(UNTIL_REGISTER[:5], "cached"),
        "gate": "ran",
        "register": "ran",
    }
    only = run_pipeline(spec_text(), workspace=ws, from_step="evaluate", until="evaluate")
    assert statuses(only) == {**dict.fromkeys(UNTIL_REGISTER[:4], "cached"), "evaluate": "ran"}


def test_from_needs_the_earlier_steps_cached(tmp_path: Path) -> None:
    fresh = meguri.open_workspace(tmp_path, project="pipe")
    try:
        with pytest.raises(PipelineError, match="'ingest' before it has no cached result"):
            run_pipeline(spec_text(), workspace=fresh, from_step="train")
        with pytest.raises(PipelineError, match="no such step"):
            run_pipeline(spec_text(), workspace=fresh, until="deploy")
    finally:
        fresh.close()


EXAMPLE_STAGING = (
    "    staging:\n      workers: 1\n"
    "      capture_rate: 1.0          # share of requests captured for monitoring\n"
)
STAGING = """    staging:
      workers: 1
      capture_rate: 0.0
      port: 0
      strategy: {kind: canary, steps: [50, 100], bake_seconds: 1}
"""


def _leftovers(root: Path) -> list[str]:
    """Processes of the workspace's deployments still alive (supervisors, workers)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "meguri.deploy" in line and str(root) in line:
            found.append(f"{proc.pid}: {line}")
    return found


def test_full_pipeline_serves_staging_tests_it_and_promotes(
    ws: Workspace, first: PipelineResult
) -> None:
    assert EXAMPLE_STAGING in spec_text()
    text = spec_text().replace(EXAMPLE_STAGING, STAGING)
    try:
        full = run_pipeline(text, workspace=ws)
        assert full.ok, full.summary()
        assert statuses(full) == {
            **dict.fromkeys(UNTIL_REGISTER, "cached"),
            **dict.fromkeys(("deploy_staging", "pre_promotion", "promote"), "ran"),
        }
        outputs = {s.name: s.outputs for s in full.steps}
        served = outputs["deploy_staging"]["deployment"]
        assert served["ref"] == "pipe@1" and served["url"].startswith("http://127.0.0.1:")
        assert served["url"] == deploy.status("staging", workspace=ws).url
        assert outputs["pre_promotion"]["passed"] >= 3
        assert outputs["promote"]["ref"] == "pipe@1"
        production = meguri.get_model_version("pipe@production", workspace=ws)
        assert production.ref == "pipe@1"

        again = run_pipeline(text, workspace=ws)
        assert again.all_cached, again.summary()
        answer = httpx.get(f"{served['url']}/v2/health/ready", timeout=5.0)
        assert answer.status_code == 200, answer.text

        deploy.stop("staging", workspace=ws)
        redeployed = run_pipeline(text, workspace=ws, until="deploy_staging")
        assert statuses(redeployed)["deploy_staging"] == "ran", redeployed.summary()
        step = step_runs(redeployed.run_id, workspace=ws)[-1]
        assert "not running" in step.tags["stale_cache"]
        assert deploy.status("staging", workspace=ws).url is not None
        print(f"\nfull pipeline {full.seconds:.1f} s, all cached {again.seconds:.2f} s")
    finally:
        deploy.stop("staging", workspace=ws)
    deadline = time.monotonic() + 10.0
    while _leftovers(ws.root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _leftovers(ws.root)


def test_cli_runs_lists_and_shows(tmp_path: Path) -> None:
    (tmp_path / "meguri.yaml").write_text(spec_text(), encoding="utf-8")
    once = run_meguri("run", "--until", "prepare", "--set", "model.cv_folds=2", cwd=tmp_path)
    assert once.returncode == 0, once.stderr
    assert "ingest" in once.stdout and "ran" in once.stdout
    listed = run_meguri("run", "list", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.count("run-") >= 1, listed.stdout
    run_id = next(w for w in listed.stdout.split() if w.startswith("run-"))
    shown = run_meguri("run", "show", run_id, cwd=tmp_path)
    assert shown.returncode == 0 and "prepare" in shown.stdout and "ran" in shown.stdout, (
        shown.stdout
    )
