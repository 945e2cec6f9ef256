"""A registry test's model version without training: a run holding a tiny package."""

from __future__ import annotations

import hashlib

import orjson

from meguri.store import Workspace
from meguri.store.metadata import ArtifactRef
from meguri.train import start_run


def package_run(ws: Workspace, seed: str = "a", files: dict[str, bytes] | None = None) -> str:
    """A finished run whose artifacts hold a package: model.json listing ``files`` (by
    default a transform and an "estimator" whose bytes are ``seed``, so seeds differ)."""
    files = (
        files if files is not None else {"transform.json": b"{}", "estimator.onnx": seed.encode()}
    )
    manifest = {
        "format": "meguri.model",
        "format_version": 1,
        "task": "binary_classification",
        "signature": {"inputs": [{"name": "x", "type": "double", "nullable": True}]},
        "metrics": {"test/roc_auc": 0.97},
        "runtime": "onnx",
        "lineage": {"run_id": "ignored", "spec_version_id": None},
        "files": {
            p: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for p, b in files.items()
        },
    }
    with start_run("train", workspace=ws) as run:
        pass
    for path, data in {**files, "model.json": orjson.dumps(manifest)}.items():
        # Straight to the repository: a package written by any client, names unchecked.
        stored = ws.artifacts.put_bytes(data)
        ref = ArtifactRef(f"model/{path}", stored.digest, stored.size, "application/json", 1.0)
        ws.metadata.runs.add_artifact(run.id, ref)
    return run.id
