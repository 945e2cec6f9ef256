"""Encryption at rest beyond the artifact store: prediction captures, system samples, feedback
and the retraining table (issue 8, "no plaintext of a model or dataset on disk").

One module fixture runs the loop with a key file configured as an operator would: a model is
trained, registered and deployed for real (a supervisor and two worker processes, which get the
key from the environment they inherit), requests carry a unique marker in their request ids
and in a feature value, ground truth arrives through ``POST /feedback`` and through
``record_feedback``, a monitor window is computed and the retraining table is built. Then no
file under the workspace, and no temporary entry, holds the marker or a Parquet file in clear.
The same traffic served without encryption (the control) gives the same window figures, and
the same scan finds the marker in its files, so the scan is shown to see what it looks for.
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import httpx
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from meguri import registry
from meguri.cli import _keys
from meguri.deploy import deploy, status, stop
from meguri.errors import ConfigError, MonitorError
from meguri.monitor import record_feedback, run_monitor
from meguri.monitor._capture import capture_url, scan_feedback, scan_predictions, scan_system
from meguri.monitor._loop import MEMORY_FOLDER, forget_table, fresh_training_data
from meguri.serve import ServeSettings, create_app
from meguri.serve._capture import feedback_table, write_part
from meguri.serve._sealed_parts import part_key_id, reseal_parts
from meguri.serve._server import app_in_background
from meguri.spec import ProjectSpec, parse_spec
from meguri.spec._deploy import DeployEnvironment
from meguri.store import Workspace, open_workspace
from meguri.store.artifacts import KeyRing, memory_cache_folder
from meguri.store.artifacts._keys import create_key_file, new_key, read_key_file
from meguri.testing.specs import quick_spec_text
from meguri.train import train
from test_serve_support import breast_cancer, onnx_model, send_labelled

MARKER = f"mgrmark-{uuid.uuid4().hex}"
"""In every request id: text the captures and the feedback hold."""
MARKED_VALUE = 31.41592653589793
"""The ``mean_radius`` of the first rows sent: a number the retraining table holds."""
MARKED_ROWS = 3
TIMING = {"latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "cpu_percent", "memory_mb"}
"""Window figures that measure the machine, not the data: they differ between two runs."""


@dataclass
class Loop:
    ws: Workspace
    spec: ProjectSpec
    sent: list[tuple[str, int, int]]
    figures: dict[str, dict[str, float | None]]
    drift: dict[str, Any]
    retrain_rows: dict[str, int]
    retrain_table: pl.DataFrame
    memory_left: bool
    findings: list[str]
    control_findings: list[str]
    scratch_entries: list[str]


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.rglob("part-*.parquet"))


def _findings(folder: Path, markers: list[bytes]) -> list[str]:
    """Files under ``folder`` holding a marker, or a Parquet file, in clear."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        hits = [m.decode("latin-1")[:12] for m in markers if m in data]
        if data[:4] == b"PAR1" or data[-4:] == b"PAR1":
            hits.append("parquet")
        if hits:
            found.append(f"{path.relative_to(folder)}: {', '.join(hits)}")
    return found


def _marked(held_out: pl.DataFrame) -> pl.DataFrame:
    """The rows to send, the first ones marked."""
    return held_out.with_columns(
        pl.when(pl.int_range(pl.len()) < MARKED_ROWS)
        .then(MARKED_VALUE)
        .otherwise(pl.col("mean_radius"))
        .alias("mean_radius")
    )


def _send(base: str, rows: pl.DataFrame, target: str) -> list[Any]:
    """Requests of 10 rows, ids ``MARKER-i``; feedback for the first half by ``POST /feedback``
    (the second half goes through ``record_feedback``)."""
    with httpx.Client(base_url=base, timeout=20) as client:
        sent = send_labelled(client, rows, target, MARKER)
        half = [{"request_id": r, "row": j, "label": y} for r, j, y in sent[: len(sent) // 2]]
        assert client.post("/feedback", json=half).status_code == 202
    return sent


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    top = tmp_path_factory.mktemp("capture-encryption")
    key_file = create_key_file(top / "capture.keys", [new_key("k1")])
    scratch = top / "scratch"  # TMPDIR of native code here and of the server processes
    scratch.mkdir()
    blocker = top / "no-temp"  # Python's temporary folder here: a file, so nothing goes in it
    blocker.write_bytes(b"")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MEGURI_ARTIFACTS_URL", "MEGURI_STORE_URL", "MEGURI_ENCRYPTION_KEY"):
            mp.delenv(name, raising=False)
        mp.setenv("MEGURI_ENCRYPTION_KEY_FILE", str(key_file))
        mp.setattr(tempfile, "tempdir", str(blocker))
        mp.setenv("TMPDIR", str(scratch))
        ws = open_workspace(top / "proj", project="capenc", user="ann")
        try:
            yield _run_loop(ws, mp, scratch)
        finally:
            shutil.rmtree(memory_cache_folder(ws.root), ignore_errors=True)
            ws.close()


def _run_loop(ws: Workspace, mp: pytest.MonkeyPatch, scratch: Path) -> Loop:
    """The loop with encryption on, checked for plaintext, then the control without it."""
    text = quick_spec_text("capenc", scale_only=True).replace("window: 1h", "window: 30d")
    (ws.root / "meguri.yaml").write_text(text, encoding="utf-8")
    spec = parse_spec(text)
    result = train(spec, workspace=ws)
    version = registry.register_model(result, "bc", workspace=ws)
    ws.metadata.deployments.ensure(ws.project.id, "clear", "bc", by="ann")
    target = result.prepared.target
    held_out = pl.concat([result.prepared.raw["validation"], result.prepared.raw["test"]])
    rows = _marked(held_out)

    with _deployed(ws, version.ref, "production") as base:
        sent = _send(base, rows, target)
    _label_rest(ws, "production", sent)
    figures, drift = {}, {}
    figures["production"], drift["production"] = _window(ws, spec, "production")
    where, retrain_rows = fresh_training_data(ws, spec, "production", "al-capenc")
    assert where.startswith(f"{MEMORY_FOLDER}/")
    with fsspec.open(where, "rb") as handle:
        retrain_table = pl.read_parquet(handle.read())
    forget_table(where)
    memory_left = fsspec.filesystem("memory").exists(where.removeprefix("memory://"))
    markers = [MARKER.encode(), struct.pack("<d", MARKED_VALUE)]
    findings = _findings(ws.root, markers)
    scratch_entries = sorted(p.name for p in scratch.iterdir())
    findings += [f"temporary {f}" for f in _findings(scratch, markers)]

    # The control: the same traffic served in this process with encryption off.
    model = registry.load_model(version.ref, workspace=ws)
    with mp.context() as off:
        off.delenv("MEGURI_ENCRYPTION_KEY_FILE")
        settings = ServeSettings(capture_rate=1.0, capture_url=capture_url(ws, "clear"))
        app = create_app(model, settings=settings)
    with app_in_background(app) as base:
        assert _send(base, rows, target) == sent
    _label_rest(ws, "clear", sent)
    figures["clear"], drift["clear"] = _window(ws, spec, "clear")
    control = _findings(ws.root / ".meguri" / "capture" / "clear", [MARKER.encode()])
    return Loop(
        ws, spec, sent, figures, drift, retrain_rows, retrain_table, memory_left, findings,
        control, scratch_entries,
    )  # fmt: skip


@contextlib.contextmanager
def _deployed(ws: Workspace, ref: str, environment: str) -> Iterator[str]:
    """``ref`` deployed to ``environment`` for real: a detached supervisor and two worker
    processes, started with this process's environment (the key file setting and TMPDIR);
    stopped on exit, which flushes the workers' captures."""
    settings = DeployEnvironment(workers=2, capture_rate=1.0)
    deploy(ref, env=environment, workspace=ws, environment=settings)
    try:
        url = status(environment, workspace=ws).url
        assert url is not None
        yield url
    finally:
        stop(environment, workspace=ws)


def _label_rest(ws: Workspace, environment: str, sent: list[tuple[str, int, int]]) -> None:
    rest = [{"request_id": r, "row": j, "label": y} for r, j, y in sent[len(sent) // 2 :]]
    assert record_feedback(ws, environment, rest).rows == len(rest)


def _window(
    ws: Workspace, spec: ProjectSpec, environment: str
) -> tuple[dict[str, float | None], dict[str, Any]]:
    result = run_monitor(environment, workspace=ws, spec=spec, alerts=False)
    assert len(result.windows) == 1
    window = result.windows[0]
    assert window.model_versions == {"bc@1": window.rows}
    return {"rows": window.rows, **window.figures}, window.details["drift"]


# -- the loop with encryption on -------------------------------------------------------------


def test_no_plaintext_of_captures_feedback_or_retraining_data_on_disk(loop: Loop) -> None:
    capture = loop.ws.root / ".meguri" / "capture" / "production"
    parts = _parts(capture)
    kinds = {p.relative_to(capture).parts[0] for p in parts}
    assert kinds == {"model=bc", "_system", "_feedback"}  # every kind was written...
    assert {part_key_id(p.read_bytes()[:128]) for p in parts} == {"k1"}  # ...and sealed
    samples = scan_system(str(capture)).collect()
    assert samples["pid"].n_unique() == 2  # both worker processes wrote, both sealed
    assert loop.findings == []
    assert not (loop.ws.root / ".meguri" / "retrain").exists()
    # No temporary file was left, here or by the servers, but ONNX Runtime's own session id
    # (a time and a random id, nothing of the model or the data; it writes one in TMPDIR).
    assert set(loop.scratch_entries) <= {".ses"}
    # The scan finds what it looks for where the same traffic was captured in clear.
    control = loop.control_findings
    assert control and all(f.endswith("parquet") for f in control)
    for kind in ("model=bc/", "_feedback/"):  # request ids in clear (system samples hold none)
        assert any(f.startswith(kind) and "mgrmark" in f for f in control), control


def test_monitoring_reads_encrypted_captures_as_it_reads_clear_ones(loop: Loop) -> None:
    sealed, clear = loop.figures["production"], loop.figures["clear"]
    assert sealed["rows"] == clear["rows"] == len(loop.sent)
    assert sealed["labels"] == len(loop.sent)
    assert sealed["requests"] == clear["requests"] == len({r for r, _, _ in loop.sent})
    data = {k: v for k, v in sealed.items() if k not in TIMING}
    _assert_close(data, {k: v for k, v in clear.items() if k not in TIMING})
    assert {k for k in data if k.startswith("accuracy.")} >= {"accuracy.roc_auc"}
    _assert_close(loop.drift["production"], loop.drift["clear"])
    url = capture_url(loop.ws, "production")
    frame = scan_predictions(url).collect().sort("request_id", "row")
    expected = scan_predictions(capture_url(loop.ws, "clear")).collect().sort("request_id", "row")
    assert frame.drop("time", "latency_ms").equals(expected.drop("time", "latency_ms"))
    feedback = scan_feedback(url).collect().sort("request_id", "row")
    assert feedback.select("request_id", "row", "label").rows() == sorted(
        (r, j, str(y)) for r, j, y in loop.sent
    )


def _assert_close(got: Any, expected: Any, where: str = "") -> None:
    """Equal, floats to 1e-12 relative: the rows arrive in another order (two workers), so
    sums round differently in the last bits."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            _assert_close(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            _assert_close(a, b, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-15), where
    else:
        assert got == expected, where


def test_the_retraining_table_stays_in_memory(loop: Loop) -> None:
    assert loop.retrain_rows["feedback"] == len(loop.sent)
    table = loop.retrain_table
    assert table.height == loop.retrain_rows["source"] + len(loop.sent)
    assert table.filter(pl.col("mean_radius") == MARKED_VALUE).height == MARKED_ROWS
    assert not loop.memory_left  # dropped once read


# -- tampering and keys ----------------------------------------------------------------------


def _copy(loop: Loop, tmp_path: Path) -> Path:
    copy = tmp_path / "capture"
    shutil.copytree(loop.ws.root / ".meguri" / "capture" / "production", copy)
    return copy


def test_a_tampered_capture_file_is_refused_not_skipped(loop: Loop, tmp_path: Path) -> None:
    copy = _copy(loop, tmp_path)
    part = next(p for p in _parts(copy) if p.relative_to(copy).parts[0] == "model=bc")
    original = part.read_bytes()
    total = scan_predictions(str(copy)).collect().height
    assert total == len(loop.sent)
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0x01
    forged = {
        "a changed byte": bytes(changed),
        "cut short": original[:-20],
        "a segment appended": original + original[12:40],
    }
    for what, data in forged.items():
        part.write_bytes(data)
        with pytest.raises(MonitorError, match=r"does not authenticate.*not read") as caught:
            scan_predictions(str(copy)).collect()
        assert part.name in str(caught.value), what
    part.write_bytes(original)
    assert scan_predictions(str(copy)).collect().height == total
    # Moved to another day (or version): its place is authenticated too.
    moved = copy / "model=bc" / "version=1" / "date=2001-01-01" / part.name
    moved.parent.mkdir(parents=True)
    part.rename(moved)
    with pytest.raises(MonitorError, match="moved from another"):
        scan_predictions(str(copy)).collect()
    feedback = next(p for p in _parts(copy) if "_feedback" in p.parts)
    feedback.write_bytes(feedback.read_bytes()[:-1])
    with pytest.raises(MonitorError, match="does not authenticate"):
        scan_feedback(str(copy))


def test_missing_or_wrong_keys_are_named(loop: Loop, tmp_path: Path) -> None:
    copy = str(_copy(loop, tmp_path))
    with pytest.raises(ConfigError, match=r"encrypted \(with the key 'k1'\).*no encryption key"):
        scan_predictions(copy, keys=None)
    other = KeyRing((new_key("k-other"),), "the other keys")
    with pytest.raises(ConfigError, match=r"key 'k1'.*does not hold.*k-other"):
        scan_system(copy, keys=other)


# -- rotation --------------------------------------------------------------------------------


def _serve_some(url: Path, prefix: str, count: int) -> None:
    x = breast_cancer()[0]
    settings = ServeSettings(capture_rate=1.0, capture_url=str(url))
    app = create_app(onnx_model(), settings=settings)
    with app_in_background(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        for i in range(count):
            rows = {"instances": x[i * 2 : i * 2 + 2].tolist()}
            answer = client.post(
                "/invocations", json=rows, headers={"x-request-id": f"{prefix}{i}"}
            )
            assert answer.status_code == 200
        assert client.post("/feedback", json={"request_id": f"{prefix}0", "label": 1}).is_success


def test_rotation_keeps_old_captures_readable_then_reseals_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MEGURI_ARTIFACTS_URL", "MEGURI_STORE_URL", "MEGURI_ENCRYPTION_KEY"):
        monkeypatch.delenv(name, raising=False)
    key_file = create_key_file(tmp_path / "keys", [new_key("k1")])
    monkeypatch.setenv("MEGURI_ENCRYPTION_KEY_FILE", str(key_file))
    monkeypatch.chdir(tmp_path)  # the workspace `meguri keys rotate` works on
    url = tmp_path / ".meguri" / "capture" / "production"
    _serve_some(url, "old-", 3)
    legacy = feedback_table(["legacy-0"], [0], ["0"], [time.time()])  # before encryption
    write_part(fsspec.filesystem("file"), f"{url}/_feedback/date=2024-01-01", legacy, local=True)
    before = scan_predictions(str(url)).collect().sort("request_id", "row")
    assert {part_key_id(p.read_bytes()[:128]) for p in _parts(url)} == {"k1", None}

    by_key = Counter(part_key_id(p.read_bytes()[:128]) for p in _parts(url))
    old_ring = tmp_path / "old-keys"  # what a server started before the rotation still holds
    old_ring.write_bytes(key_file.read_bytes())
    old_ring.chmod(0o600)

    cli = typer.Typer()
    _keys.register(cli)
    rotated = CliRunner().invoke(cli, ["keys", "rotate", "--key-file", str(key_file)])
    assert rotated.exit_code == 0, rotated.output
    ring = read_key_file(key_file)
    assert ring.ids[1:] == ["k1"]  # a new current key; k1 kept below it
    # the rotation re-encrypted every capture of the workspace (and sealed the one in clear)
    said = " ".join(rotated.output.split())  # the console wraps long lines
    assert f"{by_key['k1']} capture files re-encrypted with {ring.ids[0]}" in said
    assert f"{by_key[None]} encrypted (were in clear)" in said
    assert {part_key_id(p.read_bytes()[:128]) for p in _parts(url)} == {ring.ids[0]}
    only_new = KeyRing(ring.keys[:1], "the new key alone")
    assert (
        scan_predictions(str(url), keys=only_new).collect().sort("request_id", "row").equals(before)
    )

    monkeypatch.setenv("MEGURI_ENCRYPTION_KEY_FILE", str(old_ring))
    _serve_some(url, "late-", 2)  # a server not yet restarted seals with k1: still readable
    monkeypatch.setenv("MEGURI_ENCRYPTION_KEY_FILE", str(key_file))
    assert {part_key_id(p.read_bytes()[:128]) for p in _parts(url)} == {"k1", ring.ids[0]}
    with pytest.raises(ConfigError, match=r"'k1'.*does not hold"):
        scan_predictions(str(url), keys=only_new)
    late = sum(part_key_id(p.read_bytes()[:128]) == "k1" for p in _parts(url))
    resumed = CliRunner().invoke(
        cli, ["keys", "rotate", "--key-file", str(key_file), "--resume", "--remove-old"]
    )
    assert resumed.exit_code == 0, resumed.output
    assert f"{late} capture files re-encrypted with {ring.ids[0]}" in " ".join(
        resumed.output.split()
    )
    assert read_key_file(key_file).ids == ring.ids[:1]  # k1 dropped once nothing needs it
    assert {part_key_id(p.read_bytes()[:128]) for p in _parts(url)} == {ring.ids[0]}
    after = scan_predictions(str(url)).collect()
    assert (
        after.filter(pl.col("request_id").str.starts_with("old-"))
        .sort("request_id", "row")
        .equals(before)
    )
    labels = scan_feedback(str(url)).collect()
    assert set(labels["request_id"]) == {"old-0", "late-0", "legacy-0"}
    again = reseal_parts(str(url), read_key_file(key_file))
    assert (again.resealed, again.encrypted, again.current) == (0, 0, len(_parts(url)))
    assert not list(url.rglob(".*.tmp"))


def test_encryption_off_writes_and_reads_parquet_as_before(tmp_path: Path) -> None:
    table = feedback_table(["a", "b"], [0, 1], ["1", "0"], [1.0, 2.0])
    path = write_part(fsspec.filesystem("file"), f"{tmp_path}/_feedback/date=1970-01-01", table,
                      local=True, keys=None)  # fmt: skip
    assert pq.read_table(path).equals(table)
    frame = scan_feedback(str(tmp_path), keys=None).collect()
    assert frame["request_id"].to_list() == ["a", "b"]
    assert np.array_equal(frame["row"].to_numpy(), [0, 1])
