"""The closed loop (issue 7): a firing alert retrains on the source plus the labelled production
rows, through the same pipeline and gates, then deploys the candidate as a canary; every step
links back to the alert.

One module fixture runs the loop as production does: a model trained, registered and deployed
for real (a supervisor and a worker on loopback, capturing every request), normal then shifted
traffic, ground truth for most of the rows sent (and a label for a request never made), a
monitor window whose drift fires the ``data-drift`` alert, then :func:`retrain_on_alerts`. The
tests check the links (pipeline run, model version, deployment revision, alert detail), the
retraining table against the rows the test itself sent, and the other outcomes: the cooldown, a
candidate the pipeline stops (at its data checks or at its gates), a retraining on unchanged
data (all cached, the served version), errors, and the alerts that start nothing. Specs other
than the fixture's use a 1 s cooldown, waited out before each. The tests after the first build
on the state it leaves (production serving the retrained version), in file order."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import polars as pl
import pytest

from meguri import datasets, registry
from meguri.cli._demo_monitor import SHIFT, SHIFTED
from meguri.deploy import deploy, history, spec_environment, status, stop, wait_settled
from meguri.deploy._pipeline import STEP_NAMES, list_pipeline_runs, step_runs
from meguri.errors import NotFoundError, RegistryError
from meguri.monitor import record_feedback, retrain_on_alerts, run_monitor
from meguri.monitor._capture import capture_url, scan_predictions
from meguri.monitor._loop import Retraining, fresh_training_data
from meguri.spec import ProjectSpec, parse_spec
from meguri.store import Workspace, open_workspace
from meguri.store.metadata import Alert, AlertState, RevisionState, RunStatus
from meguri.testing.specs import quick_spec_text
from meguri.train import get_run, train

QUICK_COOLDOWN = 1.0
"""Seconds of the cooldown in every spec but the fixture's (``cooldown: 1s``)."""
SENT_ROWS = 10
"""Rows per request."""


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, f"the example spec no longer holds {old!r}"
    return text.replace(old, new, 1)


def _spec_text(
    *, rule: str | None = None, cooldown: str = "1h", edits: tuple[tuple[str, str], ...] = ()
) -> str:
    """The quick example spec for the loop: production a one-worker endpoint capturing every
    request with a half-second canary, staging a one-worker endpoint switched at once, latency
    targets a loaded test machine meets, one 30-day window; ``rule`` an extra alert rule on the
    drift criterion that retrains, and ``edits`` further replacements."""
    text = quick_spec_text("loop", scale_only=True)
    for old, new in (
        (
            "    production:\n      workers: 2\n      capture_rate: 0.5\n",
            "    production:\n      workers: 1\n      capture_rate: 1.0\n"
            "      strategy: {kind: canary, steps: [50, 100], bake_seconds: 0.5}\n",
        ),
        (
            "    staging:\n      workers: 1\n      capture_rate: 1.0          # share of "
            "requests captured for monitoring\n",
            "    staging:\n      workers: 1\n      capture_rate: 0.0\n      port: 0\n"
            "      strategy: {kind: all_at_once}\n",
        ),
        ("  latency_p95_ms: 50\n", "  latency_p95_ms: 2000\n"),
        ("  throughput_rps: 100\n", "  throughput_rps: 1\n"),
        ("threshold: 50\n    description: Fast", "threshold: 2000\n    description: Fast"),
        ("  window: 1h\n", "  window: 30d\n"),
        ("cooldown: 1h}", f"cooldown: {cooldown}}}"),
        *edits,
    ):
        text = _edit(text, old, new)
    if rule is not None:
        extra = f"    - name: {rule}\n      criterion: drift-production\n      retrain: true\n"
        text = _edit(text, "  notifiers:\n", extra + "  notifiers:\n")
    return text


@dataclass
class Sent:
    """One row sent to production: its request id and row, its inputs, its true label."""

    request_id: str
    row: int
    inputs: tuple[float, ...]
    label: int


@dataclass
class Loop:
    """The loop the module fixture ran: production's window and the alert it fired, the rows
    labelled, what :func:`retrain_on_alerts` returned and reported; ``csv`` the source as a
    CSV file with a ``;`` separator."""

    ws: Workspace
    spec: ProjectSpec
    inputs: list[str]
    target: str
    url: str
    window_id: str
    alert: Alert
    labelled: list[Sent]
    results: list[Retraining]
    messages: list[str]
    csv: Path


def _send(url: str, frame: pl.DataFrame, inputs: list[str], target: str, prefix: str) -> list[Sent]:
    """``frame`` to ``/invocations`` in requests of ``SENT_ROWS`` rows, ids ``prefix-i``."""
    sent = []
    with httpx.Client(base_url=url, timeout=20) as client:
        for i, start in enumerate(range(0, frame.height, SENT_ROWS)):
            rows = frame.slice(start, SENT_ROWS)
            request_id = f"{prefix}-{i}"
            body = {"dataframe_split": {"columns": inputs, "data": rows.select(inputs).rows()}}
            answer = client.post("/invocations", json=body, headers={"x-request-id": request_id})
            assert answer.status_code == 200, answer.text
            labels = rows[target].to_list()
            sent += [
                Sent(request_id, j, values, int(labels[j]))
                for j, values in enumerate(rows.select(inputs).rows())
            ]
    return sent


def _wait_for_captures(url: str, rows: int) -> None:
    """The worker writes its captures every few seconds: wait until all ``rows`` are there."""
    deadline = time.monotonic() + 30.0
    while scan_predictions(url, keys=None).collect().height < rows:
        assert time.monotonic() < deadline, "the endpoint's captures did not arrive"
        time.sleep(0.25)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    top = tmp_path_factory.mktemp("loop")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MEGURI_ENCRYPTION_KEY", "MEGURI_ENCRYPTION_KEY_FILE"):
            mp.delenv(name, raising=False)  # the retraining table is then a file on disk
        ws = open_workspace(top / "proj", project="loop", user="ann")
        try:
            yield _run_loop(ws, top)
        finally:
            for environment in ("production", "staging"):
                with contextlib.suppress(NotFoundError):
                    stop(environment, workspace=ws)
            ws.close()


def _run_loop(ws: Workspace, top: Path) -> Loop:
    text = _spec_text()
    (ws.root / "meguri.yaml").write_text(text, encoding="utf-8")
    spec = parse_spec(text)
    trained = train(spec, workspace=ws)
    version = registry.register_model(trained, "bc", workspace=ws)
    deploy(
        version.ref,
        env="production",
        workspace=ws,
        environment=spec_environment(spec, "production"),
    )
    url = status("production", workspace=ws).url
    assert url is not None
    target = trained.prepared.target
    held_out = pl.concat([trained.prepared.raw["validation"], trained.prepared.raw["test"]])
    inputs = [c for c in held_out.columns if c != target]
    shifted = held_out.with_columns(pl.col(c) * SHIFT for c in SHIFTED)
    sent = _send(url, held_out, inputs, target, "normal")
    sent += _send(url, shifted, inputs, target, "shifted")
    _wait_for_captures(capture_url(ws, "production"), len(sent))

    # Ground truth for all but the first request of each stretch, and one label for a request
    # that was never made: neither reaches the retraining table.
    labelled = [s for s in sent if s.request_id not in ("normal-0", "shifted-0")]
    records = [{"request_id": s.request_id, "row": s.row, "label": s.label} for s in labelled]
    records.append({"request_id": "never-sent", "row": 0, "label": 1})
    assert record_feedback(ws, "production", records).rows == len(records)

    monitored = run_monitor("production", workspace=ws, spec=spec, retrain=False)
    assert len(monitored.windows) == 1
    alert = next(a for a in monitored.alerts if a.rule == "data-drift")
    assert alert.state == AlertState.FIRING and "retrain" not in alert.detail
    messages: list[str] = []
    results = retrain_on_alerts(ws, spec, "production", [alert], reporter=messages.append)

    csv = top / "breast_cancer.csv"  # the source as a CSV with its own read options
    pl.read_parquet(datasets.path("breast_cancer")).write_csv(csv, separator=";")
    return Loop(
        ws, spec, inputs, target, url, monitored.windows[0].id, alert, labelled, results,
        messages, csv,
    )  # fmt: skip


def _open(loop: Loop, rule: str) -> Alert:
    """A firing alert of ``rule`` in production, fired by the fixture's window."""
    return loop.ws.metadata.monitor.open_alert(
        loop.ws.project.id, "production", rule, severity="warning", value=0.5,
        window_id=loop.window_id, by="ann",
    )  # fmt: skip


def _firing(loop: Loop, rule: str) -> Alert:
    """The firing alert of ``rule`` in production: the monitor's own, else a new one."""
    found = loop.ws.metadata.monitor.alerts(
        loop.ws.project.id, environment="production", rule=rule, state=AlertState.FIRING
    )
    return found[0] if found else _open(loop, rule)


def _past_cooldown(ws: Workspace) -> None:
    """Wait until the latest retraining in production started ``QUICK_COOLDOWN`` ago."""
    started = [
        a.detail["retrain"]["started_at"]
        for a in ws.metadata.monitor.alerts(ws.project.id, environment="production")
        if "retrain" in a.detail
    ]
    time.sleep(max(0.0, max(started, default=0.0) + QUICK_COOLDOWN + 0.05 - time.time()))


def _served_version(loop: Loop) -> str:
    """The model version production's endpoint answers with."""
    answer = httpx.post(f"{loop.url}/v2/models/bc/infer", json=_v2_body(loop), timeout=20)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["model_version"])


def _v2_body(loop: Loop) -> dict[str, Any]:
    rows = [s.inputs for s in loop.labelled[:3]]
    return {
        "inputs": [
            {"name": c, "shape": [len(rows)], "datatype": "FP64", "data": [r[i] for r in rows]}
            for i, c in enumerate(loop.inputs)
        ]
    }


# -- the loop closed -------------------------------------------------------------------------


def test_an_alert_retrains_and_canaries_a_version_linked_to_it(loop: Loop) -> None:
    ws, alert = loop.ws, loop.alert
    assert [(r.alert_id, r.outcome) for r in loop.results] == [(alert.id, "deployed")], loop.results
    detail = loop.results[0].detail
    assert ws.metadata.monitor.get_alert(alert.id).detail["retrain"] == detail

    # the pipeline run: every step ran, on the spec version the alert records
    run = get_run(detail["pipeline_run"], workspace=ws)
    assert run.tags["trigger"] == f"alert:{alert.id}"
    assert run.status is RunStatus.FINISHED and run.spec_version_id == detail["spec_version"]
    steps = step_runs(run.id, workspace=ws)
    assert [(s.name, s.tags["status"]) for s in steps] == [(n, "ran") for n in STEP_NAMES]

    # the model version: the next one of the served model, promoted by the pipeline
    assert detail["model_version"] == "bc@2"
    version = registry.get_model_version("bc@2", workspace=ws)
    assert version.tags["trigger_alert"] == alert.id
    assert version.tags["pipeline_run"] == run.id
    assert registry.get_model_version("bc@production", workspace=ws).id == version.id

    # the deployment revision: a canary of it in production, which goes live
    revision = history("production", workspace=ws)[-1]
    assert (revision.number, revision.strategy) == (detail["revision"], "canary")
    assert (detail["revision"], detail["strategy"]) == (2, "canary")
    assert revision.reason == f"retrained for alert {alert.id} (data-drift)"
    assert revision.settings["steps"] == [50.0, 100.0]
    assert revision.settings["alias"] == "production"  # a rollback takes the alias back
    targets = {t.role: t.ref for t in revision.targets}
    assert targets == {"primary": "bc@1", "canary": "bc@2"}
    settled = wait_settled("production", workspace=ws, timeout=60)
    assert (settled.number, settled.state) == (detail["revision"], RevisionState.LIVE)
    assert _served_version(loop) == "2"

    rows = detail["rows"]
    assert loop.messages[0] == f"alert data-drift ({alert.id}) fired: retraining on fresh data"
    assert (
        f"fresh training data: {rows['source']} source rows + {rows['feedback']} labelled "
        "production rows" in loop.messages
    )
    assert loop.messages[-1] == "deploying bc@2 to production with a canary rollout"


def test_the_retraining_table_is_the_source_plus_the_labelled_production_rows(
    loop: Loop,
) -> None:
    ws, detail = loop.ws, loop.results[0].detail
    path = ws.root / ".meguri" / "retrain" / loop.alert.id / "data.parquet"
    assert detail["data"] == str(path)
    table = pl.read_parquet(path)
    source = pl.read_parquet(datasets.path("breast_cancer"))
    # the rows labelled and captured, in the order they were sent: the label for a request
    # never made matches nothing
    expected = [(*s.inputs, s.label) for s in loop.labelled]
    assert detail["rows"] == {"source": source.height, "feedback": len(expected)}
    assert table.height == source.height + len(expected)
    assert table.head(source.height).equals(source)
    production = table.slice(source.height).select(*loop.inputs, loop.target)
    assert production.rows() == expected

    # the pipeline read exactly that table: its spec version's source, its ingest step's rows
    spec_version = ws.metadata.specs.get(detail["spec_version"])
    stored = parse_spec(spec_version.content).data.sources[0]
    assert (stored.uri, stored.format, stored.name) == (str(path), "parquet", "breast_cancer")
    ingest = step_runs(detail["pipeline_run"], workspace=ws)[0]
    assert orjson.loads(ingest.tags["outputs"])["rows"] == table.height


def test_within_the_cooldown_a_second_alert_does_not_retrain(loop: Loop) -> None:
    ws = loop.ws
    spec = parse_spec(_spec_text(rule="drift-again"))  # cooldown: 1h
    runs, revisions = (
        len(list_pipeline_runs(workspace=ws)),
        len(history("production", workspace=ws)),
    )
    second = _open(loop, "drift-again")
    [skipped] = retrain_on_alerts(ws, spec, "production", [second])
    assert (skipped.alert_id, skipped.outcome) == (second.id, "skipped")
    assert skipped.detail["why"] == f"cooldown: alert {loop.alert.id} retrained"
    assert ws.metadata.monitor.get_alert(second.id).detail["retrain"] == skipped.detail
    assert len(list_pipeline_runs(workspace=ws)) == runs
    assert len(history("production", workspace=ws)) == revisions
    with pytest.raises(RegistryError, match="no version or alias '3'"):
        registry.get_model_version("bc@3", workspace=ws)
    # A firing that retrained does not start again (the monitor hands every firing alert over
    # on each run); one skipped is looked at again, and skipped again within the cooldown,
    # without a second record.
    messages: list[str] = []
    again = [ws.metadata.monitor.get_alert(a.id) for a in (loop.alert, second)]
    [still] = retrain_on_alerts(ws, spec, "production", again, reporter=messages.append)
    assert (still.alert_id, still.outcome, still.detail) == (second.id, "skipped", skipped.detail)
    assert messages == [] and len(list_pipeline_runs(workspace=ws)) == runs


def test_an_alert_skipped_for_the_cooldown_retrains_once_it_is_over(loop: Loop) -> None:
    """The firing the cooldown held back (the test above) still fires after it: the next
    monitor run retrains for it (on unchanged data: the served version, from the cache)."""
    ws = loop.ws
    [held] = ws.metadata.monitor.alerts(ws.project.id, environment="production", rule="drift-again")
    assert held.detail["retrain"]["outcome"] == "skipped"
    wait_settled("production", workspace=ws, timeout=60)
    _past_cooldown(ws)
    spec = parse_spec(_spec_text(rule="drift-again", cooldown="1s"))
    [done] = retrain_on_alerts(ws, spec, "production", [held])
    assert (done.alert_id, done.outcome) == (held.id, "deployed"), done.detail
    assert ws.metadata.monitor.get_alert(held.id).detail["retrain"]["outcome"] == "deployed"
    assert retrain_on_alerts(ws, spec, "production", [ws.metadata.monitor.get_alert(held.id)]) == []


# -- a candidate the pipeline stops ----------------------------------------------------------

IMPOSSIBLE_AUC = ('    comparison: ">="\n    threshold: 0.95\n    description: Ranks',
                  '    comparison: "<="\n    threshold: 0.5\n    description: Ranks')  # fmt: skip
TOO_FEW_ROWS = ("      - check: row_count\n        min: 500",
                "      - check: row_count\n        min: 100000")  # fmt: skip


@pytest.mark.parametrize(
    ("stopped_at", "edit", "why"),
    [
        ("validate", TOO_FEW_ROWS, "row_count"),
        ("gate", IMPOSSIBLE_AUC, "auc-test: roc_auc = "),
    ],
)
def test_a_candidate_the_pipeline_stops_is_not_deployed(
    loop: Loop, stopped_at: str, edit: tuple[str, str], why: str
) -> None:
    """The source is the CSV copy with a separator and a type declared: the retraining reads
    its fresh table as Parquet all the same, and stops at the step that refuses the data or
    the candidate."""
    ws, rule = loop.ws, f"stopped-at-{stopped_at}"
    source = (
        "      uri: bundled://breast_cancer\n",
        f"      uri: {loop.csv}\n      options: {{separator: ';'}}\n"
        "      schema: {malignant: int}\n",
    )
    spec = parse_spec(_spec_text(rule=rule, cooldown="1s", edits=(source, edit)))
    served, revisions = _served_version(loop), len(history("production", workspace=ws))
    _past_cooldown(ws)
    alert = _open(loop, rule)
    [stopped] = retrain_on_alerts(ws, spec, "production", [alert])
    detail = stopped.detail
    assert stopped.outcome == "gated", detail
    assert detail["step"] == stopped_at and why in detail["error"], detail
    assert detail["rows"] == {"source": 569, "feedback": len(loop.labelled)}
    assert "model_version" not in detail and "revision" not in detail
    assert ws.metadata.monitor.get_alert(alert.id).detail["retrain"] == detail
    run = get_run(detail["pipeline_run"], workspace=ws)
    assert run.tags["trigger"] == f"alert:{alert.id}" and run.status is RunStatus.FAILED
    assert run.tags["failed_step"] == stopped_at
    # nothing registered, nothing deployed: production serves what it served
    with pytest.raises(RegistryError, match="no version or alias '3'"):
        registry.get_model_version("bc@3", workspace=ws)
    assert len(history("production", workspace=ws)) == revisions
    assert _served_version(loop) == served


def test_a_retraining_on_unchanged_data_switches_to_the_served_version_at_once(
    loop: Loop,
) -> None:
    """Nothing new was labelled since the first retraining: the same table, so every step but
    the ingest comes from the cache, the candidate is the version production serves, and the
    deploy switches to it at once (and says so) rather than canarying it against itself."""
    ws, rule = loop.ws, "same-data"
    wait_settled("production", workspace=ws, timeout=60)
    first = registry.get_model_version("bc@2", workspace=ws).tags["trigger_alert"]
    spec = parse_spec(_spec_text(rule=rule, cooldown="1s"))
    _past_cooldown(ws)
    alert = _open(loop, rule)
    [again] = retrain_on_alerts(ws, spec, "production", [alert])
    detail = again.detail
    assert (again.outcome, detail["model_version"]) == ("deployed", "bc@2"), detail
    steps = step_runs(detail["pipeline_run"], workspace=ws)
    assert [s.tags["status"] for s in steps] == ["ran"] + ["cached"] * (len(STEP_NAMES) - 1)
    revision = history("production", workspace=ws)[-1]
    assert (revision.number, revision.strategy) == (detail["revision"], "all_at_once")
    assert detail["strategy"] == "all_at_once"
    assert revision.reason == f"retrained for alert {alert.id} ({rule})"
    assert _served_version(loop) == "2"
    # the version came from the cache: it keeps the alert that produced it
    tags = registry.get_model_version("bc@2", workspace=ws).tags
    assert tags["trigger_alert"] == first != alert.id


# -- errors and alerts that start nothing ----------------------------------------------------


def test_an_error_is_recorded_as_failed_and_counts_for_the_cooldown(
    loop: Loop, tmp_path: Path
) -> None:
    ws, rule = loop.ws, "source-gone"
    missing = tmp_path / "gone.csv"
    source = ("      uri: bundled://breast_cancer\n", f"      uri: {missing}\n")
    spec = parse_spec(_spec_text(rule=rule, cooldown="1s", edits=(source,)))
    runs = len(list_pipeline_runs(workspace=ws))
    _past_cooldown(ws)
    alert = _open(loop, rule)
    [failed] = retrain_on_alerts(ws, spec, "production", [alert])
    assert failed.outcome == "failed"
    assert str(missing) in failed.detail["error"], failed.detail
    assert ws.metadata.monitor.get_alert(alert.id).detail["retrain"] == failed.detail
    assert len(list_pipeline_runs(workspace=ws)) == runs  # stopped before the pipeline
    assert not (ws.root / ".meguri" / "retrain" / alert.id).exists()
    # a failed retraining is a retraining: the next alert within the cooldown waits
    another = _open(loop, "source-gone-again")
    both = parse_spec(_spec_text(rule="source-gone-again", cooldown="1h", edits=(source,)))
    [skipped] = retrain_on_alerts(ws, both, "production", [another])
    assert skipped.outcome == "skipped"
    assert skipped.detail["why"] == f"cooldown: alert {alert.id} retrained"


def test_an_unexpected_error_is_recorded_before_it_is_raised(loop: Loop) -> None:
    """The retraining table cannot be written (a file stands where its folder goes): the
    error surfaces, and the alert records it, so the next monitor run, which hands over every
    firing alert, does not start that retraining again."""
    ws, rule = loop.ws, "disk-trouble"
    spec = parse_spec(_spec_text(rule=rule, cooldown="1s"))
    _past_cooldown(ws)
    alert = _open(loop, rule)
    folder = ws.root / ".meguri" / "retrain" / alert.id
    folder.write_bytes(b"")
    try:
        with pytest.raises(FileExistsError):
            retrain_on_alerts(ws, spec, "production", [alert])
    finally:
        folder.unlink()
    stored = ws.metadata.monitor.get_alert(alert.id)
    recorded = stored.detail["retrain"]
    assert recorded["outcome"] == "failed", recorded
    assert recorded["error"].startswith("FileExistsError: ") and alert.id in recorded["error"]
    assert retrain_on_alerts(ws, spec, "production", [stored]) == []


def test_alerts_that_do_not_ask_for_retraining_start_nothing(loop: Loop) -> None:
    """A rule the spec does not declare, one that does not say ``retrain: true``, a resolved
    alert, an alert of another environment than ``monitor.retrain.environment``: nothing
    starts and nothing is recorded (were one started, the 1 h cooldown would record it as
    skipped and return it)."""
    ws = loop.ws
    spec = parse_spec(_spec_text(rule="asks"))
    assert not next(r for r in spec.monitor.alerts if r.name == "production-auc").retrain
    undeclared, declared = _firing(loop, "not-in-the-spec"), _firing(loop, "production-auc")
    resolved = ws.metadata.monitor.update_alert(_open(loop, "asks").id, state=AlertState.RESOLVED)
    assert retrain_on_alerts(ws, spec, "production", [undeclared, declared, resolved]) == []
    elsewhere = _open(loop, "asks")
    assert retrain_on_alerts(ws, spec, "staging", [elsewhere]) == []
    for alert in (undeclared, declared, resolved, elsewhere):
        assert "retrain" not in ws.metadata.monitor.get_alert(alert.id).detail


def test_without_labelled_rows_the_table_is_the_source_alone(loop: Loop) -> None:
    """An environment whose traffic got no ground truth (here: one never captured) retrains on
    the spec's source as it reads now."""
    where, rows = fresh_training_data(loop.ws, loop.spec, "quiet", "al-quiet")
    source = pl.read_parquet(datasets.path("breast_cancer"))
    assert rows == {"source": source.height, "feedback": 0}
    assert pl.read_parquet(where).equals(source)
