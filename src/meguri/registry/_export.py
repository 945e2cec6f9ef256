"""A model package as a Docker build context that serves under the SageMaker container contract.

``export_container(package_folder, dest, expected_digest=...)`` verifies the package (the
sha256 of ``model.json`` against the digest the registry recorded, then every file listed in
its ``files``) and writes::

    dest/
      Dockerfile          python:<X.Y>-slim, pinned requirements, meguri's wheel, the package
      requirements.txt    meguri's runtime requirements and theirs, pinned to the versions the
                          package was built with (model.json "dependencies" first, then the
                          versions installed where the export runs)
      wheels/meguri-<version>-py3-none-any.whl   built here from the installed meguri
      model/              the package's files, exactly those model.json lists
      serve               the entrypoint (SageMaker runs ``docker run IMAGE serve``)

The image copies ``model/`` to ``/opt/ml/model`` (where SageMaker mounts a model), exposes
8080 and carries the package digest as ``MEGURI_MODEL_DIGEST``: ``serve`` hands it to the
server, which refuses to start when ``model.json`` no longer has that sha256. ``serve`` reads
``SM_MODEL_DIR`` (default ``/opt/ml/model``), ``SAGEMAKER_BIND_TO_PORT`` (default 8080),
``SAGEMAKER_MODEL_SERVER_WORKERS`` (default 1), ``MEGURI_SERVE_HOST`` (default ``0.0.0.0``),
``MEGURI_CAPTURE_RATE`` / ``MEGURI_CAPTURE_URL`` (prediction capture, off by default) and
``MEGURI_SERVE_TOKEN`` (a bearer token the server then requires) and
``MEGURI_SERVE_MAX_BODY_BYTES`` / ``MEGURI_SERVE_MAX_ROWS`` (request limits), so the same script
runs outside a container on any folder and port.

meguri's wheel is written here, from the installed package's own files and metadata (no build
tool, no network, same bytes for the same sources), because meguri is not on a public index.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from meguri.errors import PackageError
from meguri.serve._server import ServeSettings

__all__ = [
    "CONTAINER_MODEL_DIR",
    "CONTAINER_PORT",
    "DIGEST_ENV",
    "export_container",
    "image_tag",
]

CONTAINER_MODEL_DIR = "/opt/ml/model"
CONTAINER_PORT = 8080
DIGEST_ENV = "MEGURI_MODEL_DIGEST"

_DOCKERFILE = """\
# Serves one meguri model package under the SageMaker container contract:
#   docker build -t {tag} .  &&  docker run -p 8080:8080 {tag} serve
# GET /ping, POST /invocations (text/csv, application/json), port 8080, model in /opt/ml/model.
FROM python:{python}-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \\
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt wheels/ /tmp/meguri/
RUN pip install -r /tmp/meguri/requirements.txt /tmp/meguri/{wheel} && rm -rf /tmp/meguri
COPY model/ {model_dir}/
COPY serve /usr/local/bin/serve
RUN chmod 0755 /usr/local/bin/serve
ENV {digest_env}={digest} MEGURI_MODEL_NAME={name} MEGURI_MODEL_VERSION={version} \\
    SM_MODEL_DIR={model_dir}
EXPOSE {port}
CMD ["serve"]
"""

_ENTRYPOINT = '''\
#!/usr/bin/env python3
"""Container entrypoint: `serve` starts meguri's inference server on the model package.

SageMaker runs `docker run IMAGE serve`; the package digest baked into the image
(MEGURI_MODEL_DIGEST) is checked by the server before it loads anything.
"""

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    if argv and argv[0] != "serve":
        sys.exit(f"this image serves a model only: run it as `IMAGE serve`, not {argv[0]!r}")
    from meguri.serve import PackageSource, ServeSettings, serve

    env = os.environ
    source = PackageSource(
        Path(env.get("SM_MODEL_DIR", "{model_dir}")),
        env["{digest_env}"],
        env.get("MEGURI_MODEL_NAME"),
        env.get("MEGURI_MODEL_VERSION"),
    )
    settings = ServeSettings(
        host=env.get("MEGURI_SERVE_HOST", "0.0.0.0"),
        port=int(env.get("SAGEMAKER_BIND_TO_PORT", "{port}")),
        workers=int(env.get("SAGEMAKER_MODEL_SERVER_WORKERS", "1")),
        capture_rate=float(env.get("MEGURI_CAPTURE_RATE", "0") or 0),
        capture_url=env.get("MEGURI_CAPTURE_URL") or None,
        auth_token=env.get("MEGURI_SERVE_TOKEN") or None,
        max_body_bytes=int(env.get("MEGURI_SERVE_MAX_BODY_BYTES", "{max_body}")),
        max_rows=int(env.get("MEGURI_SERVE_MAX_ROWS", "{max_rows}")),
    )
    serve(source, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
'''


def export_container(
    package_folder: Path,
    dest: Path,
    *,
    expected_digest: str,
    name: str | None = None,
    version: str | None = None,
) -> Path:
    """Write the Docker build context of the package in ``package_folder`` to ``dest`` (a new
    or empty folder) and return ``dest``; see the module docstring for the layout.

    ``name`` and ``version`` label the served model (its metrics, captures and v2 answers) and
    the image tag :func:`image_tag`; the registry passes the version's own, else model.json's.

    The package is read and verified by the server's own reader
    (:func:`meguri.serve._package.read_verified`), and the verified bytes are what is written.
    Raises :class:`~meguri.errors.PackageIntegrityError` when ``model.json`` or a file it lists
    differs from what was recorded, :class:`~meguri.errors.PackageError` when the package or
    ``dest`` is unusable.
    """
    from meguri.serve._package import read_verified

    package_folder, dest = Path(package_folder), Path(dest)
    document, files = read_verified(package_folder, expected_digest=expected_digest)
    manifest = (package_folder / "model.json").read_bytes()
    if hashlib.sha256(manifest).hexdigest() != expected_digest.removeprefix("sha256:"):
        raise PackageError(f"{package_folder}/model.json changed while it was read; export again")
    _prepare_dest(dest)
    _write_package(manifest, files, dest / "model")
    wheel = write_wheel(dest / "wheels")
    pins = _dependencies(document)
    (dest / "requirements.txt").write_text(pinned_requirements(pins))
    labels = {
        **document,
        "name": name or document.get("name"),
        "version": version or document.get("version"),
    }
    (dest / "Dockerfile").write_text(_dockerfile(labels, expected_digest, wheel.name, pins))
    entrypoint = dest / "serve"
    entrypoint.write_text(_entrypoint())
    entrypoint.chmod(0o755)
    return dest


def _prepare_dest(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise PackageError(f"--out {dest}: exists and is not an empty folder; choose a new one")
    dest.mkdir(parents=True, exist_ok=True)


def _write_package(document_bytes: bytes, files: dict[str, bytes], target: Path) -> None:
    for relative, data in {"model.json": document_bytes, **files}.items():
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        (target / relative).write_bytes(data)


def _dependencies(document: dict[str, Any]) -> dict[str, str]:
    """model.json's pinned versions: ``{"name": "1.2.3"}`` or ``["name==1.2.3", ...]``."""
    found = document.get("dependencies") or {}
    if isinstance(found, list):
        pairs = (str(item).split("==", 1) for item in found if "==" in str(item))
        return {name.strip(): version.strip() for name, version in pairs}
    return {str(name): str(version) for name, version in dict(found).items()}


def _python_tag(pins: dict[str, str]) -> str:
    version = pins.get("python") or ".".join(map(str, sys.version_info[:2]))
    return ".".join(version.split(".")[:2])


def image_tag(name: str, version: str) -> str:
    """The tag every export names the image by (the Kubernetes export expects it too)."""
    return f"meguri-{name}:{version}".lower()


def _dockerfile(document: dict[str, Any], digest: str, wheel: str, pins: dict[str, str]) -> str:
    name = str(document.get("name") or "model")
    version = str(document.get("version") or "0")
    return _DOCKERFILE.format(
        tag=image_tag(name, version),
        python=_python_tag(pins),
        wheel=wheel,
        model_dir=CONTAINER_MODEL_DIR,
        digest_env=DIGEST_ENV,
        digest=digest.removeprefix("sha256:"),
        name=json.dumps(name),
        version=json.dumps(version),
        port=CONTAINER_PORT,
    )


#: The server's own defaults, written into the entrypoint as the limits' fallbacks.
_DEFAULTS = ServeSettings()


def _entrypoint() -> str:
    return (
        _ENTRYPOINT.replace("{model_dir}", CONTAINER_MODEL_DIR)
        .replace("{digest_env}", DIGEST_ENV)
        .replace("{port}", str(CONTAINER_PORT))
        .replace("{max_body}", str(_DEFAULTS.max_body_bytes))
        .replace("{max_rows}", str(_DEFAULTS.max_rows))
    )


# -- meguri's wheel and pinned requirements -----------------------------------------------------

_WHEEL = (
    "Wheel-Version: 1.0\nGenerator: meguri.registry\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
)
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip timestamps fixed: the same sources give the same bytes


def write_wheel(folder: Path) -> Path:
    """meguri's wheel from the installed package: its files plus its own METADATA and entry
    points (the ``meguri`` command), with a RECORD of sha256s as the wheel format asks."""
    dist = metadata.distribution("meguri")
    root = Path(__file__).resolve().parents[1]  # the meguri package folder
    info = f"meguri-{dist.version}.dist-info"
    entries = [
        (f"meguri/{path.relative_to(root).as_posix()}", path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]
    entries.append((f"{info}/METADATA", (dist.read_text("METADATA") or "").encode()))
    entries.append(
        (f"{info}/entry_points.txt", (dist.read_text("entry_points.txt") or "").encode())
    )
    entries.append((f"{info}/WHEEL", _WHEEL.encode()))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"meguri-{dist.version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in [*entries, (f"{info}/RECORD", _record(entries, f"{info}/RECORD"))]:
            archive.writestr(zipfile.ZipInfo(name, _EPOCH), data, zipfile.ZIP_DEFLATED)
    return target


def _record(entries: list[tuple[str, bytes]], own_name: str) -> bytes:
    lines = []
    for name, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{name},sha256={digest},{len(data)}")
    lines.append(f"{own_name},,")
    return ("\n".join(lines) + "\n").encode()


def pinned_requirements(pins: dict[str, str]) -> str:
    """requirements.txt: meguri's runtime requirements and all theirs (extras followed), each
    pinned to ``pins`` (model.json) or else to the version installed here."""
    from packaging.utils import canonicalize_name

    wanted: dict[str, str] = {canonicalize_name(n): v for n, v in pins.items()}
    lines = []
    for name, installed in sorted(_closure("meguri").items()):
        if name != "meguri":
            lines.append(f"{name}=={wanted.get(name, installed)}")
    return "\n".join(lines) + "\n"


def _closure(root: str) -> dict[str, str]:
    """Every distribution ``root`` needs here (markers evaluated for this interpreter), with
    its installed version; requirements that are not installed are left to pip."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    stack = [(canonicalize_name(root), "")]
    while stack:
        name, extra = stack.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[name] = dist.version
        for requirement in map(Requirement, dist.requires or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                child = canonicalize_name(requirement.name)
                stack += [(child, ""), *((child, e) for e in requirement.extras)]
    return found
