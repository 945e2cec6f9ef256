"""``meguri monitor run|show|report`` and ``meguri feedback`` as a user runs them: the real
console script in a project folder whose model was trained, registered and deployed for real
(a detached supervisor and a worker process on loopback, capturing every request).

The traffic: the held-out rows of the bundled breast-cancer data in requests of ten rows, then
the same rows with sixteen size and texture measurements scaled up by a quarter, each request
under its own ``X-Request-Id``; beside them a few requests the server refuses (a text in a
numeric column, a missing column). The window the commands compute and print is checked against
the store, and its figures against independent computations on the rows the test sent (numpy,
scikit-learn). The spec's window is 30 days long, so that all the traffic falls in one window.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from subprocess import CompletedProcess

import httpx
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from meguri import registry
from meguri.cli._monitor import SHOWN
from meguri.deploy import deploy, status, stop
from meguri.monitor._capture import capture_url, scan_feedback, scan_predictions
from meguri.spec import parse_spec
from meguri.spec._deploy import DeployEnvironment
from meguri.store import open_workspace
from meguri.store.metadata import MonitorWindow
from meguri.testing.cli import run_meguri
from meguri.testing.specs import quick_spec_text
from meguri.train import train
from test_serve_support import send_labelled

SHIFTED = ("mean_radius", "mean_texture", "mean_perimeter", "mean_area", "worst_radius",
           "worst_texture", "worst_perimeter", "worst_area", "mean_concavity", "worst_concavity",
           "mean_compactness", "worst_compactness", "radius_error", "area_error",
           "perimeter_error", "texture_error")  # fmt: skip
WRONG_TYPE, MISSING_COLUMN = 2, 3
"""Requests the server refuses: with a text in a numeric column, with a column left out."""


@dataclass
class Deployed:
    folder: Path
    sent: list[tuple[str, int, int]]
    """``(request id, row in the request, true label)`` of every row the server answered."""
    requests: int
    """Every request sent, answered or refused."""
    inputs: list[str]
    sent_rows: pl.DataFrame
    """The input values of the answered rows, in the order of :attr:`sent`."""
    train_rows: pl.DataFrame


def _refused(client: httpx.Client, row: list[float], inputs: list[str]) -> None:
    """Requests the server answers with a 400: wrong types, then missing columns."""
    for i in range(WRONG_TYPE):
        body = {"dataframe_split": {"columns": inputs, "data": [["big", *row[1:]]]}}
        answer = client.post("/invocations", json=body, headers={"x-request-id": f"type-{i}"})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "wrong_type", (
            answer.text
        )
    for i in range(MISSING_COLUMN):
        body = {"dataframe_split": {"columns": inputs[1:], "data": [row[1:]]}}
        answer = client.post("/invocations", json=body, headers={"x-request-id": f"shape-{i}"})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "missing_column"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    """The project folder once its endpoint served the traffic and was stopped (which makes
    the worker flush its captures)."""
    folder = tmp_path_factory.mktemp("cli-monitor")
    text = quick_spec_text("climon", scale_only=True).replace("window: 1h", "window: 30d")
    (folder / "meguri.yaml").write_text(text, encoding="utf-8")
    ws = open_workspace(folder)
    try:
        result = train(parse_spec(text), workspace=ws)
        version = registry.register_model(result, "bc", workspace=ws)
        target = result.prepared.target
        held_out = pl.concat([result.prepared.raw["validation"], result.prepared.raw["test"]])
        shifted = held_out.with_columns(pl.col(c) * 1.25 for c in SHIFTED)
        inputs = [c for c in held_out.columns if c != target]
        settings = DeployEnvironment(workers=1, capture_rate=1.0)
        deploy(version.ref, env="production", workspace=ws, environment=settings)
        try:
            url = status("production", workspace=ws).url
            assert url is not None
            with httpx.Client(base_url=url, timeout=20) as client:
                sent = send_labelled(client, held_out, target, "normal", inputs)
                sent += send_labelled(client, shifted, target, "shifted", inputs)
                _refused(client, list(held_out.select(inputs).row(0)), inputs)
        finally:
            stop("production", workspace=ws)
    finally:
        ws.close()
    requests = len({r for r, _, _ in sent}) + WRONG_TYPE + MISSING_COLUMN
    rows = pl.concat([held_out, shifted]).select(inputs)
    return Deployed(folder, sent, requests, inputs, rows, result.prepared.raw["train"])


@pytest.fixture(scope="module")
def monitored(deployed: Deployed) -> CompletedProcess[str]:
    """``meguri monitor run`` once over the captured traffic (alerts on, retraining off)."""
    return run_meguri("monitor", "run", "--env", "production", "--no-retrain", cwd=deployed.folder)


def _stored(folder: Path) -> list[MonitorWindow]:
    ws = open_workspace(folder)
    try:
        return ws.metadata.monitor.windows(ws.project.id, "production")
    finally:
        ws.close()


def _capture_folder(folder: Path) -> str:
    ws = open_workspace(folder)
    try:
        return capture_url(ws, "production")
    finally:
        ws.close()


def _fails_cleanly(out: CompletedProcess[str], *names: str) -> None:
    """Exit status 1, one ``error:`` message naming each of ``names``, no traceback."""
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stderr.startswith("error:"), out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    for name in names:
        assert name in out.stderr, (name, out.stderr)


def test_monitor_run_stores_the_window_it_prints(
    deployed: Deployed, monitored: CompletedProcess[str]
) -> None:
    assert monitored.returncode == 0, monitored.stderr
    [window] = _stored(deployed.folder)
    assert "production: 1 window(s)" in monitored.stdout
    assert "1 window(s) computed" in monitored.stdout  # the reporter's progress lines
    assert window.rows == len(deployed.sent)
    assert window.model_versions == {"bc@1": len(deployed.sent)}
    f = window.figures
    assert f["requests"] == deployed.requests
    assert f["error_rate"] == pytest.approx((WRONG_TYPE + MISSING_COLUMN) / deployed.requests)
    assert f["quality.type_error_rate"] == pytest.approx(WRONG_TYPE / deployed.requests)
    assert f["quality.schema_error_rate"] == pytest.approx(MISSING_COLUMN / deployed.requests)
    # out of range: sent values beyond the training rows' minimum or maximum, over all cells
    sent = deployed.sent_rows.to_numpy()
    low = deployed.train_rows.select(deployed.inputs).min().to_numpy()
    high = deployed.train_rows.select(deployed.inputs).max().to_numpy()
    assert f["quality.out_of_range_rate"] == pytest.approx(
        float(np.mean((sent < low) | (sent > high))), abs=1e-12
    )
    assert f["quality.missing_rate"] == 0.0
    # the shifted half drifts: the data-drift rule fires, and says so
    drifted = {c["name"] for c in window.details["drift"]["columns"] if c["drifted"]}
    assert drifted and drifted <= set(SHIFTED), drifted
    assert "alerts that changed" in monitored.stdout and "data-drift" in monitored.stdout
    assert "retraining for" not in monitored.stdout  # --no-retrain


def test_monitor_show_prints_the_figures_of_the_window(
    deployed: Deployed, monitored: CompletedProcess[str]
) -> None:
    assert monitored.returncode == 0, monitored.stderr
    out = run_meguri("monitor", "show", "--env", "production", cwd=deployed.folder)
    assert out.returncode == 0, out.stderr
    [window] = _stored(deployed.folder)
    start = datetime.fromtimestamp(window.start, UTC).strftime("%m-%d %H:%M:%S")
    row = next(line for line in out.stdout.splitlines() if start in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    expected = [
        "-" if window.figures.get(key) is None else form.format(window.figures[key])
        for key, _, form in SHOWN
    ]
    assert cells[1 : 2 + len(SHOWN)] == [str(window.rows), *expected], (row, expected)
    assert "firing alerts" in out.stdout and "data-drift" in out.stdout
    as_json = run_meguri("monitor", "show", "--env", "production", "--json", cwd=deployed.folder)
    assert as_json.returncode == 0, as_json.stderr
    [shown] = json.loads(as_json.stdout)["windows"]
    assert shown["figures"] == pytest.approx(window.figures)
    assert shown["rows"] == window.rows


def test_monitor_report_writes_html_and_json_of_the_stored_windows(
    deployed: Deployed, monitored: CompletedProcess[str], tmp_path: Path
) -> None:
    assert monitored.returncode == 0, monitored.stderr
    html, document = tmp_path / "monitoring.html", tmp_path / "monitoring.json"
    out = run_meguri("monitor", "report", "--env", "production", "-o", str(html),
                     cwd=deployed.folder)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"wrote {html}" in out.stdout.replace("\n", "")
    page = html.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html") and "production" in page
    out = run_meguri("monitor", "report", "--env", "production", "--json", "-o", str(document),
                     cwd=deployed.folder)  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(document.read_text(encoding="utf-8"))
    stored = _stored(deployed.folder)
    assert (report["project"], report["environment"]) == ("climon", "production")
    assert [(w["start"], w["end"], w["rows"]) for w in report["windows"]] == [
        (w.start, w.end, w.rows) for w in stored
    ]
    for written, window in zip(report["windows"], stored, strict=True):
        assert written["figures"] == pytest.approx(window.figures)
    assert "data-drift" in {a["rule"] for a in report["alerts"]}


def test_feedback_from_files_and_one_record_gives_accuracy(
    deployed: Deployed, monitored: CompletedProcess[str], tmp_path: Path
) -> None:
    assert monitored.returncode == 0, monitored.stderr
    sent, folder = deployed.sent, deployed.folder
    half = len(sent) // 2
    batch_csv, batch_jsonl = tmp_path / "labels.csv", tmp_path / "labels.jsonl"
    with batch_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["request_id", "row", "label"])
        writer.writerows(sent[:half])
    batch_jsonl.write_text(
        "".join(
            json.dumps({"request_id": r, "row": i, "label": y}) + "\n" for r, i, y in sent[half:-1]
        ),
        encoding="utf-8",
    )
    for path, count in ((batch_csv, half), (batch_jsonl, len(sent) - half - 1)):
        out = run_meguri("feedback", str(path), "--env", "production", "--no-update", cwd=folder)
        assert out.returncode == 0, out.stderr
        assert f"recorded {count} label(s) for production" in out.stdout
    assert _stored(folder)[0].figures["labels"] == 0  # --no-update: the window waits
    last_id, last_row, last_label = sent[-1]
    one = run_meguri(
        "feedback", "--env", "production", "--request-id", last_id, "--row", str(last_row),
        "--label", str(last_label), cwd=folder,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert "recorded 1 label(s) for production" in one.stdout
    assert "windows with new labels" in one.stdout  # without --no-update: relabelled at once
    assert _stored(folder)[0].figures["labels"] == len(sent)

    url = _capture_folder(folder)
    labels = scan_feedback(url).collect()
    assert sorted(labels.select("request_id", "row", "label").rows()) == sorted(
        (r, i, str(y)) for r, i, y in sent
    )
    out = run_meguri("monitor", "run", "--env", "production", "--no-alerts", cwd=folder)
    assert out.returncode == 0, out.stderr
    [window] = _stored(folder)
    f = window.figures
    assert f["labels"] == len(sent)
    captured = scan_predictions(url).collect()
    truth = {(r, i): y for r, i, y in sent}
    y = np.array([truth[(r, i)] for r, i in captured.select("request_id", "row").rows()])
    assert f["accuracy.roc_auc"] == pytest.approx(
        roc_auc_score(y, captured["probability_1"].to_numpy()), abs=1e-9
    )
    assert f["accuracy.accuracy"] == pytest.approx(
        float(np.mean(captured["prediction"].to_numpy() == y)), abs=1e-9
    )
    assert f"{f['accuracy.roc_auc']:.3f}" in out.stdout  # the accuracy column of the table


def test_an_unknown_environment_is_named(deployed: Deployed, tmp_path: Path) -> None:
    folder, report = deployed.folder, tmp_path / "report.html"
    for args in (
        ("monitor", "run", "--env", "nowhere"),
        ("monitor", "show", "--env", "nowhere"),
        ("monitor", "report", "--env", "nowhere", "-o", str(report)),
        ("monitor", "alerts", "--env", "nowhere"),
    ):
        _fails_cleanly(run_meguri(*args, cwd=folder), "'nowhere'", "deployed: production")
    assert not report.exists()  # no empty report for a misspelt environment
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,row,label\nnormal-0,0,1\n", encoding="utf-8")
    _fails_cleanly(
        run_meguri("feedback", str(labels), "--env", "nowhere", cwd=folder),
        "'nowhere'", "deployed: production",
    )  # fmt: skip


def test_bad_feedback_and_options_are_refused_with_the_field_named(
    deployed: Deployed, tmp_path: Path
) -> None:
    folder = deployed.folder
    url = _capture_folder(folder)
    before = scan_feedback(url).collect().height
    no_id = tmp_path / "no-id.csv"
    no_id.write_text("request,row,label\nnormal-0,0,1\n", encoding="utf-8")
    _fails_cleanly(
        run_meguri("feedback", str(no_id), "--env", "production", cwd=folder),
        "no column 'request_id'", "request, row, label",
    )  # fmt: skip
    wrong_label = tmp_path / "wrong-label.jsonl"
    wrong_label.write_text(
        '{"request_id": "normal-0", "row": 0, "label": 1}\n'
        '{"request_id": "normal-0", "row": 1, "label": "benign"}\n',
        encoding="utf-8",
    )
    _fails_cleanly(
        run_meguri("feedback", str(wrong_label), "--env", "production", cwd=folder),
        "label is not one of the model's labels 0, 1", "record 2", "nothing was written",
    )  # fmt: skip
    _fails_cleanly(
        run_meguri("feedback", "--env", "production", "--request-id", "normal-0", "--label",
                   "0.5", cwd=folder),
        "label is not one of the model's labels 0, 1",
    )  # fmt: skip
    _fails_cleanly(
        run_meguri("feedback", "--env", "production", "--request-id", "normal-0", cwd=folder),
        "--label",
    )
    _fails_cleanly(
        run_meguri("monitor", "show", "--env", "production", "--since", "yesterday", cwd=folder),
        "--since", "'yesterday'",
    )  # fmt: skip
    assert scan_feedback(url).collect().height == before  # nothing refused was written
