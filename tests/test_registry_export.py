"""``export_container``: a Docker build context serving a package under the SageMaker contract.

No Docker engine here: the tests check the context's layout, Dockerfile, pins and wheel, then
run its ``serve`` entrypoint directly on the exported ``model/`` folder (``SM_MODEL_DIR``) and
get predictions from ``POST /invocations`` over loopback.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from meguri.errors import PackageError, PackageIntegrityError
from meguri.registry._export import DIGEST_ENV, export_container


def _write_package(folder: Path, files: dict[str, bytes], **extra: Any) -> str:
    """A package folder: ``files`` plus a model.json listing them; returns its digest."""
    listed = {}
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
        listed[relative] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    document = {"format": "meguri.model", "format_version": 1, "files": listed, **extra}
    data = json.dumps(document).encode()
    (folder / "model.json").write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def package(tmp_path: Path) -> tuple[Path, str]:
    folder = tmp_path / "pkg"
    files = {"pipeline.onnx": b"onnx bytes", "baseline/profile.json": b"{}"}
    deps = {"python": "3.11.9", "scikit-learn": "1.6.1", "meguri": "0.1.0"}
    digest = _write_package(folder, files, name="cancer", version="3", dependencies=deps)
    return folder, digest


def test_context_layout_and_dockerfile(package: tuple[Path, str], tmp_path: Path) -> None:
    folder, digest = package
    (folder / "notes.txt").write_text("not part of the package")
    out = export_container(folder, tmp_path / "ctx", expected_digest=digest)
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    wheel = f"wheels/meguri-{metadata.version('meguri')}-py3-none-any.whl"
    model = ["model/baseline/profile.json", "model/model.json", "model/pipeline.onnx"]
    assert names == sorted(["Dockerfile", "requirements.txt", "serve", wheel, *model])
    assert (out / "model/model.json").read_bytes() == (folder / "model.json").read_bytes()
    dockerfile = (out / "Dockerfile").read_text()
    assert dockerfile.count("FROM python:3.11-slim") == 1
    for line in ("COPY model/ /opt/ml/model/", "EXPOSE 8080", 'CMD ["serve"]'):
        assert line in dockerfile
    assert f"{DIGEST_ENV}={digest}" in dockerfile
    assert f"pip install -r /tmp/meguri/requirements.txt /tmp/meguri/{wheel[7:]}" in dockerfile
    assert os.access(out / "serve", os.X_OK)
    assert (out / "serve").read_text().startswith("#!/usr/bin/env python3\n")


def test_the_registry_names_the_served_model_and_the_image(
    package: tuple[Path, str], tmp_path: Path
) -> None:
    folder, digest = package
    out = export_container(
        folder, tmp_path / "ctx", expected_digest=digest, name="breast-cancer", version="7"
    )
    dockerfile = (out / "Dockerfile").read_text()
    assert 'MEGURI_MODEL_NAME="breast-cancer" MEGURI_MODEL_VERSION="7"' in dockerfile
    assert "docker build -t meguri-breast-cancer:7 ." in dockerfile


def test_requirements_pin_model_json_first_then_installed(
    package: tuple[Path, str], tmp_path: Path
) -> None:
    folder, digest = package
    out = export_container(folder, tmp_path / "ctx", expected_digest=digest)
    pins = dict(line.split("==") for line in (out / "requirements.txt").read_text().split())
    assert pins["scikit-learn"] == "1.6.1"  # from model.json
    for name in ("onnxruntime", "numpy", "uvicorn", "httptools", "uvloop", "orjson"):
        assert pins[name] == metadata.version(name), name
    assert "meguri" not in pins  # installed from the wheel
    assert "pytest" not in pins  # extras (dev) are not followed


def test_wheel_has_meguri_its_command_and_a_valid_record(
    package: tuple[Path, str], tmp_path: Path
) -> None:
    folder, digest = package
    out = export_container(folder, tmp_path / "ctx", expected_digest=digest)
    [wheel] = (out / "wheels").iterdir()
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"meguri-{metadata.version('meguri')}.dist-info"
        assert {"meguri/__init__.py", "meguri/serve/_server.py", "meguri/cli/__init__.py"} <= names
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        assert "Name: meguri" in archive.read(f"{info}/METADATA").decode()
        assert "meguri = meguri.cli:main" in archive.read(f"{info}/entry_points.txt").decode()
        for line in archive.read(f"{info}/RECORD").decode().splitlines():
            name, digest_field, size = line.split(",")
            if not digest_field:
                continue
            data = archive.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest_field == f"sha256={expected.decode()}" and int(size) == len(data)


def test_refuses_a_changed_package(package: tuple[Path, str], tmp_path: Path) -> None:
    folder, digest = package
    with pytest.raises(PackageIntegrityError, match="expected package digest"):
        export_container(folder, tmp_path / "a", expected_digest="0" * 64)
    (folder / "pipeline.onnx").write_bytes(b"changed")
    with pytest.raises(PackageIntegrityError, match=r"pipeline\.onnx"):
        export_container(folder, tmp_path / "b", expected_digest=digest)
    (folder / "pipeline.onnx").unlink()
    with pytest.raises(PackageError, match="cannot read pipeline"):
        export_container(folder, tmp_path / "c", expected_digest=digest)


def test_refuses_paths_outside_the_package(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"x")
    folder = tmp_path / "pkg"
    folder.mkdir()
    digest = _write_package(folder, {})
    document = json.loads((folder / "model.json").read_text())
    document["files"] = {"../secret": {"sha256": hashlib.sha256(b"x").hexdigest(), "size": 1}}
    (folder / "model.json").write_text(json.dumps(document))
    digest = hashlib.sha256((folder / "model.json").read_bytes()).hexdigest()
    with pytest.raises(PackageError, match="not a plain relative path"):
        export_container(folder, tmp_path / "ctx", expected_digest=digest)


def test_refuses_a_non_empty_destination_and_a_non_package(
    package: tuple[Path, str], tmp_path: Path
) -> None:
    folder, digest = package
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(PackageError, match="not an empty folder"):
        export_container(folder, tmp_path / "busy", expected_digest=digest)
    with pytest.raises(PackageError, match=r"cannot read model\.json"):
        export_container(tmp_path / "busy", tmp_path / "ctx", expected_digest=digest)


def test_entrypoint_only_serves(package: tuple[Path, str], tmp_path: Path) -> None:
    folder, digest = package
    out = export_container(folder, tmp_path / "ctx", expected_digest=digest)
    done = subprocess.run(
        [sys.executable, str(out / "serve"), "train"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "serves a model only" in done.stderr


# -- the entrypoint on a real package, over loopback ------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _image_env(context: Path, port: int) -> dict[str, str]:
    """The environment the Dockerfile sets, with the model folder and port substituted."""
    found = re.search(rf"{DIGEST_ENV}=(\w+)", (context / "Dockerfile").read_text())
    assert found is not None
    return {
        **os.environ,
        DIGEST_ENV: found.group(1),
        "SM_MODEL_DIR": str(context / "model"),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "MEGURI_SERVE_HOST": "127.0.0.1",
    }


def _start(context: Path) -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(context / "serve"), "serve"],
        env=_image_env(context, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, port


def _wait_ready(process: subprocess.Popen[str], port: int) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"the entrypoint did not become ready: {_output(process)}")


def _output(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.terminate()
    out, _ = process.communicate(timeout=30)
    return out


@pytest.fixture(scope="module")
def trained_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Any]:
    """A real package (logistic regression on the bundled breast-cancer data) and its result."""
    build = pytest.importorskip("meguri.registry._package").build_package
    pytest.importorskip("meguri.serve._package")
    import meguri
    from meguri.spec import parse_spec, render_example_spec
    from meguri.train import train

    text = render_example_spec("export")
    start, end = text.index("  prepare:"), text.index("  # Reproducible by row hash")
    text = text[:start] + text[end:]
    start = text.index("  allowed_algorithms:")
    text = text[:start] + "  allowed_algorithms: [linear]" + text[text.index("\n", start) :]
    spec = parse_spec(text.replace("cv_folds: 5", "cv_folds: 2"))
    root = tmp_path_factory.mktemp("export")
    workspace = meguri.open_workspace(root / "ws", project="export")
    try:
        result = train(spec, workspace=workspace)
        folder = root / "pkg"
        build(result, folder)
    finally:
        workspace.close()
    return folder, hashlib.sha256((folder / "model.json").read_bytes()).hexdigest(), result


@pytest.mark.slow
def test_entrypoint_serves_invocations_on_loopback(
    trained_package: tuple[Path, str, Any], tmp_path: Path
) -> None:
    import httpx
    import numpy as np

    folder, digest, result = trained_package
    context = export_container(folder, tmp_path / "ctx", expected_digest=digest)
    raw = result.prepared.raw["test"].drop(result.prepared.target).head(5)
    expected = result.model.predict_proba(raw.to_numpy())
    process, port = _start(context)
    try:
        _wait_ready(process, port)
        body = {"dataframe_split": {"columns": raw.columns, "data": raw.rows()}}
        url = f"http://127.0.0.1:{port}/invocations?probabilities=true"
        response = httpx.post(url, json=body, timeout=10)
        csv = "\n".join(",".join(map(str, row)) for row in raw.rows())
        as_csv = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            content=csv,
            headers={"Content-Type": "text/csv"},
            timeout=10,
        )
    finally:
        _output(process)
    assert response.status_code == 200, response.text
    assert as_csv.status_code == 200, as_csv.text
    answer = response.json()
    assert answer["predictions"] == result.model.predict(raw.to_numpy()).tolist()
    assert np.allclose(answer["probabilities"], expected, atol=1e-5)
    assert as_csv.json()["predictions"] == answer["predictions"]  # SageMaker's text/csv body


@pytest.mark.slow
def test_server_refuses_to_start_on_a_changed_model(
    trained_package: tuple[Path, str, Any], tmp_path: Path
) -> None:
    folder, digest, _ = trained_package
    context = export_container(folder, tmp_path / "ctx", expected_digest=digest)
    manifest = context / "model" / "model.json"
    manifest.write_bytes(manifest.read_bytes().replace(b"{", b"{ ", 1))
    process, _ = _start(context)
    try:
        process.wait(timeout=60)
    finally:
        out = _output(process)
    assert process.returncode != 0
    assert "sha256" in out
