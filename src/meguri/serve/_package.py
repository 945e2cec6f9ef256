"""Read a model package folder, verifying every byte before anything is loaded.

::

    model = load_package(Path("pkg"), expected_digest=version.package_digest)
    model.predict({"mean_radius": np.array([14.2]), ...})

Order of checks: ``model.json``'s sha256 against ``expected_digest`` (the digest the registry
recorded), its format and version, then each file listed in ``files`` against its sha256 and
size. Only then are the files parsed (ONNX, skops with an allowlist, native booster text,
the transform JSON). A mismatch is a :class:`~meguri.errors.PackageIntegrityError` naming the
file; anything else wrong is a :class:`~meguri.errors.PackageError`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from meguri.errors import PackageError, PackageIntegrityError
from meguri.serve._model import LoadedModel
from meguri.serve._runtimes import build_model

__all__ = ["FORMAT", "FORMAT_VERSION", "MODEL_FILE", "load_package", "read_verified"]

FORMAT = "meguri.model"
FORMAT_VERSION = 1
MODEL_FILE = "model.json"
_FIX = "fetch the package again from the registry (or rebuild it from its training run)"


def load_package(
    folder: Path,
    *,
    expected_digest: str | None = None,
    name: str | None = "model",
    version: str | None = "",
) -> LoadedModel:
    """The package in ``folder``, verified (see the module docstring), ready to predict.

    ``name`` and ``version`` label the model (``None``: ``"model"`` and ``""``)."""
    document, files = read_verified(folder, expected_digest=expected_digest)
    return build_model(document, files, name=name or "model", version=version or "")


def read_verified(
    folder: Path, *, expected_digest: str | None = None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``model.json`` and the bytes of every file it lists, each checked against its sha256."""
    folder = Path(folder)
    raw = _read(folder, MODEL_FILE)
    digest = hashlib.sha256(raw).hexdigest()
    if expected_digest is not None and digest != expected_digest.removeprefix("sha256:"):
        raise PackageIntegrityError(
            f"{folder / MODEL_FILE}: sha256 {digest} differs from the expected package digest "
            f"{expected_digest}; the package was changed or is another one: {_FIX}"
        )
    document = _document(folder, raw)
    files = {path: _verified(folder, path, entry) for path, entry in document["files"].items()}
    return document, files


def _read(folder: Path, relative: str) -> bytes:
    try:
        return (folder / relative).read_bytes()
    except OSError as exc:
        raise PackageError(f"{folder}: cannot read {relative} ({exc}); {_FIX}") from exc


def _document(folder: Path, raw: bytes) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise PackageError(f"{folder / MODEL_FILE} is not JSON ({exc}); {_FIX}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise PackageError(f"{folder / MODEL_FILE} is not a {FORMAT} document; {_FIX}")
    found = document.get("format_version")
    if found != FORMAT_VERSION:
        raise PackageError(
            f"{folder / MODEL_FILE}: format_version {found!r} is not {FORMAT_VERSION}, the one "
            "this meguri reads; serve it with the meguri version that built it, or repackage"
        )
    if not isinstance(document.get("files"), dict):
        raise PackageError(f"{folder / MODEL_FILE} lists no files; {_FIX}")
    return document


def _verified(folder: Path, path: str, entry: Any) -> bytes:
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts or path == MODEL_FILE:
        raise PackageError(
            f"{folder / MODEL_FILE}: file entry {path!r} is not a plain relative path"
        )
    data = _read(folder, path)
    digest = hashlib.sha256(data).hexdigest()
    expected = entry.get("sha256") if isinstance(entry, dict) else None
    if digest != expected or len(data) != entry.get("size"):
        raise PackageIntegrityError(
            f"{folder / path}: sha256 {digest} ({len(data)} bytes) differs from the one "
            f"model.json records ({expected}); the file was changed after packaging: {_FIX}"
        )
    return data
