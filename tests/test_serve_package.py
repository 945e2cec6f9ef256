"""Real packages served for real: a trained, registered model answered in-process and by the
``meguri serve`` command (registered name, package folder, two workers, a tampered package)."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from meguri.registry import download_package, load_model, register_model, set_alias
from meguri.registry._package import column_array
from meguri.serve import LoadedModel, ServeSettings, serve_in_background
from meguri.spec import parse_spec, render_example_spec
from meguri.store import open_workspace
from meguri.testing.cli import MEGURI, clean_env
from meguri.train._train import train
from test_serve_support import free_port


@dataclass
class Served:
    """The project folder, the registered model and a few test rows with its predictions."""

    root: Path
    model: LoadedModel
    folder: Path
    batch: dict[str, Any]
    values: list[Any]
    probabilities: list[list[float]]


def _spec_text() -> str:
    text = render_example_spec("srv").replace("  cv_folds: 5\n", "  cv_folds: 2\n")
    start = text.index("  allowed_algorithms:")
    end = text.index("\n", text.index("]", start))
    return text[:start] + "  allowed_algorithms: [linear]" + text[end:]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    root = tmp_path_factory.mktemp("project")
    (root / "meguri.yaml").write_text(_spec_text(), encoding="utf-8")  # names the project
    ws = open_workspace(root)
    try:
        result = train(parse_spec(_spec_text()), workspace=ws)
        register_model(result, "cancer", workspace=ws)
        set_alias("cancer@1", "staging", workspace=ws)
        model = load_model("cancer@staging", workspace=ws)
        folder = download_package("cancer@staging", workspace=ws)
        test = result.prepared.raw["test"].head(7)
        batch = {c.name: column_array(test[c.name], c.type) for c in model.signature.inputs}
    finally:
        ws.close()
    prediction = model.predict(batch)
    assert prediction.probabilities is not None
    return Served(
        root,
        model,
        folder,
        batch,
        prediction.values.tolist(),
        prediction.probabilities.tolist(),
    )


def _rows(s: Served) -> list[list[Any]]:
    return np.column_stack([s.batch[n] for n in s.model.signature.names]).tolist()


def _check_every_protocol(base: str, s: Served, name: str = "cancer") -> None:
    """Each wire form of the same rows answers the model's own predictions, exactly."""
    names, rows = s.model.signature.names, _rows(s)
    forms = [
        {"dataframe_split": {"columns": names, "data": rows}},
        {"dataframe_records": [dict(zip(names, r, strict=True)) for r in rows]},
        {"instances": rows},
        {"inputs": {n: s.batch[n].tolist() for n in names}},
    ]
    with httpx.Client(base_url=base, timeout=10) as client:
        for doc in forms:
            got = client.post("/invocations?probabilities=true", json=doc)
            assert got.status_code == 200, got.text
            assert got.json()["predictions"] == s.values
            assert got.json()["probabilities"] == s.probabilities
        one = client.post("/invocations", json={"inputs": dict(zip(names, rows[0], strict=True))})
        assert one.json() == {"predictions": s.values[:1]}
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([names, *map(_repr_row, rows)])
        headers = {"content-type": "text/csv", "accept": "text/csv"}
        got = client.post("/invocations", content=out.getvalue(), headers=headers)
        assert got.text.split() == [str(v) for v in s.values]
        tensors = [
            {"name": n, "shape": [len(rows)], "datatype": "FP64", "data": s.batch[n].tolist()}
            for n in names
        ]
        v2 = client.post(f"/v2/models/{name}/infer", json={"inputs": tensors}).json()
        assert v2["outputs"][0]["data"] == s.values
        assert v2["outputs"][1]["data"] == [p for row in s.probabilities for p in row]


def _repr_row(row: list[Any]) -> list[str]:
    return ["" if v is None or v != v else repr(v) for v in row]


def test_in_process_server_answers_as_the_loaded_model(served: Served) -> None:
    with serve_in_background(served.model, ServeSettings(port=0)) as base:
        _check_every_protocol(base, served)
        meta = httpx.get(f"{base}/v2/models/cancer").json()
        assert meta["versions"] == ["1"] and meta["platform"] == "meguri-onnx"


@pytest.fixture
def command(served: Served, tmp_path: Path) -> Iterator[Any]:
    """Start ``meguri ARGS --port P`` in the project folder; yield its base URL when ready."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> str:
        port = free_port()
        log = tmp_path / f"serve-{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*MEGURI, *args, "--port", str(port)],
                cwd=served.root,
                env=clean_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, process, log)
        return base

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=20)


def _wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(encoding="utf-8")
        try:
            if httpx.get(f"{base}/ping", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"meguri serve was not ready in 30 s: {log.read_text(encoding='utf-8')}")


def test_meguri_serve_a_registered_alias(served: Served, command: Any) -> None:
    _check_every_protocol(command("serve", "cancer@staging"), served)


def test_meguri_serve_a_package_folder(served: Served, command: Any) -> None:
    base = command("serve", "--model-dir", str(served.folder))
    _check_every_protocol(base, served, name="model")  # a bare folder names no model


def test_meguri_serve_two_workers(served: Served, command: Any) -> None:
    base = command("serve", "--model-dir", str(served.folder), "--workers", "2")
    for _ in range(3):  # answered by either worker
        _check_every_protocol(base, served, name="model")


def test_two_workers_answer_scrapes_with_the_servers_sums(served: Served, command: Any) -> None:
    """Whichever worker answers a scrape, it sums both workers' numbers."""
    base = command("serve", "--model-dir", str(served.folder), "--workers", "2")
    names, rows = served.model.signature.names, _rows(served)
    row = {"dataframe_split": {"columns": names, "data": rows[:1]}}

    def answered() -> list[float]:
        time.sleep(1.3)  # every worker shares its numbers each second
        scrapes = []
        for _ in range(6):
            with httpx.Client(base_url=base) as client:  # a new connection: either worker
                text = client.get("/metrics").text
            assert "meguri_workers 2" in text
            scrapes.append(sum(_invocations(text)))
        return scrapes

    before = answered()
    assert len(set(before)) == 1, before
    pids = set()
    for _ in range(20):
        with httpx.Client(base_url=base) as client:
            assert client.post("/invocations", json=row).status_code == 200
            pids.add(client.get("/metrics").headers.get("x-request-id", "")[:12])
    assert len(pids) == 2, "both workers should have answered some connections"
    assert answered() == [before[0] + 20] * 6


def _invocations(text: str) -> list[float]:
    return [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('meguri_requests_total{endpoint="/invocations"')
    ]


def test_a_tampered_package_stops_meguri_serve(served: Served, tmp_path: Path) -> None:
    folder = shutil.copytree(served.folder, tmp_path / "tampered")
    data = bytearray((folder / "pipeline.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "pipeline.onnx").write_bytes(bytes(data))
    for workers in ("1", "2"):
        args = ["serve", "--model-dir", str(folder), "--port", str(free_port()), "--workers"]
        done = subprocess.run(
            [*MEGURI, *args, workers],
            cwd=served.root,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 1, done.stderr
        assert "pipeline.onnx: sha256" in done.stderr and "fetch the package again" in done.stderr
        assert "Traceback" not in done.stderr + done.stdout
