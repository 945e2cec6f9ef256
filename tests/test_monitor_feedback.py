"""record_feedback: files and records checked against the served model, one Parquet part."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from meguri.errors import MonitorError
from meguri.monitor._capture import capture_url, scan_feedback
from meguri.monitor._feedback import record_feedback
from meguri.serve._capture import feedback_schema
from meguri.store import Workspace
from meguri.store._workspace import open_workspace
from meguri.store.metadata import DeploymentTarget
from meguri.store.metadata.repositories.deployments import NewRevision
from meguri.store.metadata.repositories.models import NewModelVersion

CLASSIFIER = {
    "inputs": [{"name": "x", "type": "double", "nullable": True}],
    "output": {"task": "binary", "labels": [0, 1]},
}
REGRESSOR = {
    "inputs": [{"name": "x", "type": "double", "nullable": True}],
    "output": {"task": "regression", "labels": []},
}


def _serve(ws: Workspace, environment: str, name: str, signature: dict[str, object]) -> None:
    """A deployment of a registered version (metadata only: no server is started)."""
    project = ws.project.id
    experiment = ws.metadata.runs.ensure_experiment(project, "train", "tester")
    run = ws.metadata.runs.create_run(experiment.id, created_by="tester")
    digest = hashlib.sha256(name.encode()).hexdigest()
    new = NewModelVersion(
        run_id=run.id, package_digest=digest, files={}, task=signature["output"]["task"],  # type: ignore[index]
        signature=signature, metrics={}, runtime="onnx", created_by="tester",
    )  # fmt: skip
    version, _ = ws.metadata.models.add_version(project, name, new)
    deployment = ws.metadata.deployments.ensure(project, environment, name, by="tester")
    target = DeploymentTarget(version.id, version.ref, digest, 100.0, "primary")
    ws.metadata.deployments.add_revision(
        deployment.id, NewRevision([target], "all_at_once", "tester"), expected=0
    )


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = open_workspace(tmp_path, project="feedback", user="tester")
    _serve(workspace, "production", "churn", CLASSIFIER)
    _serve(workspace, "estimates", "price", REGRESSOR)
    yield workspace
    workspace.close()


def _written(ws: Workspace, environment: str = "production") -> list[Path]:
    return sorted(Path(capture_url(ws, environment)).rglob("*.parquet"))


def test_csv_parquet_and_json_lines(ws: Workspace, tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("request_id,row,label\n001,0,1\n002,,0\n001,0,0\n003,2,1.0\n")
    result = record_feedback(ws, "production", csv)
    assert (result.rows, result.duplicates) == (3, 1)
    assert sorted(result.request_ids) == ["001", "002", "003"]
    path = Path(result.path)
    assert path.parent.name.startswith("date=") and path.parent.parent.name == "_feedback"
    assert path.parent.parent.parent == Path(capture_url(ws, "production"))
    assert pq.read_schema(path).equals(feedback_schema())
    table = pl.read_parquet(path).sort("request_id")
    assert table.select("request_id", "row", "label").rows() == [
        ("001", 0, "0"),  # the last record of 001/0 wins; the leading zeros stay
        ("002", 0, "0"),  # an empty row is row 0
        ("003", 2, "1"),  # 1.0 is the label 1
    ]
    parquet = tmp_path / "labels.parquet"
    pl.DataFrame({"request_id": ["004"], "label": [True]}).write_parquet(parquet)
    assert record_feedback(ws, "production", parquet).rows == 1
    lines = tmp_path / "labels.jsonl"
    lines.write_text('{"request_id": "005", "label": "1"}\n{"request_id": "006", "label": 0}\n')
    assert record_feedback(ws, "production", lines).rows == 2
    labels = dict(
        scan_feedback(capture_url(ws, "production")).select("request_id", "label").collect().rows()
    )
    assert labels == {"001": "0", "002": "0", "003": "1", "004": "1", "005": "1", "006": "0"}
    assert len(_written(ws)) == 3
    assert not list(Path(capture_url(ws, "production")).rglob("*.tmp"))


def test_records_and_regression_targets(ws: Workspace) -> None:
    result = record_feedback(
        ws, "estimates", [{"request_id": "a", "label": "2.5"}, {"request_id": "b", "label": 3}]
    )
    assert result.rows == 2
    frame = scan_feedback(capture_url(ws, "estimates")).collect().sort("request_id")
    assert frame["label"].cast(pl.Float64).to_list() == [2.5, 3.0]
    assert frame["row"].to_list() == [0, 0]
    with pytest.raises(MonitorError, match=r"label is not a finite number .*record 1\b"):
        record_feedback(ws, "estimates", [{"request_id": "c", "label": "abc"}])
    with pytest.raises(MonitorError, match="finite number"):
        record_feedback(ws, "estimates", [{"request_id": "c", "label": True}])
    cli_like = record_feedback(ws, "production", [{"request_id": "d", "row": 3, "label": "1.0"}])
    assert pl.read_parquet(cli_like.path)["label"].to_list() == ["1"]  # the label 1, by number


def test_each_records_label_is_judged_alone(ws: Workspace) -> None:
    """In a list of records a label is read for what it is, not coerced to its neighbours'
    type first: a yes/no is no regression target even beside numbers, and ``false`` is the
    label 0 of a 0/1 classifier even beside a number."""
    with pytest.raises(MonitorError, match=r"finite number .*record 1\b"):
        record_feedback(
            ws, "estimates", [{"request_id": "a", "label": True}, {"request_id": "b", "label": 1}]
        )
    mixed = [{"request_id": "c", "label": 1}, {"request_id": "d", "label": False}]
    assert pl.read_parquet(record_feedback(ws, "production", mixed).path)["label"].to_list() == [
        "1",
        "0",
    ]
    with pytest.raises(MonitorError, match=r"model's labels 0, 1 \(record 2\b"):
        record_feedback(
            ws, "production", [{"request_id": "e", "label": 1}, {"request_id": "f", "label": [1]}]
        )
    assert len(_written(ws)) == 1


@pytest.mark.parametrize(
    ("content", "suffix", "words"),
    [
        ("request_id,row\na,0\n", ".csv", "no column 'label' (columns present: request_id, row)"),
        ("id,label\na,1\n", ".csv", "no column 'request_id' (columns present: id, label)"),
        ("", ".csv", "is empty"),
        ("request_id,label\n", ".csv", "holds no records"),
        (
            "request_id,label\na,1\nb,7\nc,1\nd,2\n",
            ".csv",
            "not one of the model's labels 0, 1 (record 2, 4,",
        ),
        ("request_id,row,label\na,-1,1\n", ".csv", "row must be a whole number >= 0 (record 1,"),
        ("request_id,row,label\na,1.5,1\n", ".csv", "row must be a whole number"),
        ("request_id,label\na,1\n,0\n", ".csv", "request_id must be a non-empty text"),
        (f"request_id,label\n{'x' * 201},1\n", ".csv", "at most 200 characters"),
        ("request_id,label\na,\n", ".csv", "label is missing (record 1,"),
        ('{"request_id": "a", "label": 1}\n{"request_id": ', ".jsonl", "cannot read"),
        ("request_id\tlabel\n", ".tsv", "give a .csv, .parquet or .jsonl"),
        ("not parquet", ".parquet", "cannot read"),
    ],
)
def test_bad_files_are_refused_and_nothing_is_written(
    ws: Workspace, tmp_path: Path, content: str, suffix: str, words: str
) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(MonitorError) as caught:
        record_feedback(ws, "production", path)
    assert words in str(caught.value)
    assert str(path) in str(caught.value) or "give a" in str(caught.value)
    assert _written(ws) == []


def test_unknown_environment_and_missing_file(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(MonitorError, match=r"'staging'.*deployed: estimates, production"):
        record_feedback(ws, "staging", [{"request_id": "a", "label": 1}])
    with pytest.raises(MonitorError, match="does not exist"):
        record_feedback(ws, "production", tmp_path / "nope.csv")
    with pytest.raises(MonitorError, match="empty"):
        record_feedback(ws, "production", [])
    assert _written(ws) == []
