"""What a scale-out description (Kubernetes manifests, a Ray Serve application) is made of:
the model version, its verified package, the spec environment and the scaling derived from it.

The environment's settings come from the spec the way ``meguri deploy`` reads them: the
workspace's ``meguri.yaml`` when there is one, else the spec version the model was trained
under (its lineage), else the defaults. The spec has no Kubernetes- or Ray-specific keys, so
scaling is derived from what it states:

* **replicas** (the minimum): ``deploy.environments.<env>.workers``. Locally that many server
  processes share one machine; scaled out, each replica is one server process on one core.
* **max_replicas**: ``resources.compute_budget.cpu_cores`` (one core per replica), never
  below the minimum; without a budget, :data:`HEADROOM` times the minimum.
* **memory per replica**: the request is :data:`BASE_MEMORY_MIB` (a measured serving
  process, see the constant) plus :data:`PACKAGE_MEMORY_FACTOR` times the package's size (its
  files are read into memory and the runtime's graph is built from them); the limit is the
  budget's share of one core, ``memory_gb / cpu_cores``, when both are set (never below the
  request), else twice the request.
* **cpu_target_percent**: :data:`CPU_TARGET_PERCENT`, the autoscaler's utilisation target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from meguri.deploy._deployments import spec_environment
from meguri.spec._deploy import DeployEnvironment

if TYPE_CHECKING:
    from meguri.spec import ProjectSpec
    from meguri.store import Workspace
    from meguri.store.metadata import ModelVersion

__all__ = [
    "BASE_MEMORY_MIB",
    "CPU_TARGET_PERCENT",
    "HEADROOM",
    "PACKAGE_MEMORY_FACTOR",
    "ScaleOutTarget",
    "Scaling",
    "derive_scaling",
    "resolve_target",
]

HEADROOM = 4
#: Resident memory of one ``serve`` process with a small ONNX package, rounded up (measured
#: with Python 3.11: 125 MiB, 157 MiB with capture on, which loads pyarrow's Parquet writer).
BASE_MEMORY_MIB = 256
PACKAGE_MEMORY_FACTOR = 4
CPU_TARGET_PERCENT = 70
_MIB = 1024 * 1024


@dataclass(frozen=True)
class Scaling:
    """Replicas and resources of one replica (one server process on one core)."""

    replicas: int
    max_replicas: int
    cpu: float
    memory_mib: int
    memory_limit_mib: int
    cpu_target_percent: int


@dataclass(frozen=True)
class ScaleOutTarget:
    """A model version ready to be described for a cluster, with its environment."""

    version: ModelVersion
    package: Path
    """The verified package folder (the registry's cache)."""
    env: str
    environment: DeployEnvironment
    scaling: Scaling
    spec_hash: str | None
    """Hash of the spec the settings were read from (``None``: defaults, no spec)."""

    @property
    def label(self) -> str:
        """``<model>-<env>``: the name of the deployment this describes."""
        return f"{self.version.name}-{self.env}"


def resolve_target(ref: str, *, env: str, workspace: Workspace | None = None) -> ScaleOutTarget:
    """The version ``ref`` names, its package (downloaded, then verified), ``env``'s settings
    and scaling. Raises :class:`~meguri.errors.ConfigError` when the spec declares environments
    and ``env`` is not one of them."""
    from meguri.registry import download_package, get_model_version
    from meguri.serve._package import read_verified
    from meguri.store._workspace import default_workspace

    ws = workspace or default_workspace()
    version = get_model_version(ref, workspace=ws)
    package = download_package(version.id, workspace=ws)
    read_verified(package, expected_digest=version.package_digest)
    spec, spec_hash = _spec(ws, version)
    environment = spec_environment(spec, env)
    scaling = derive_scaling(environment, spec, _package_bytes(version))
    return ScaleOutTarget(version, package, env, environment, scaling, spec_hash)


def _spec(ws: Workspace, version: ModelVersion) -> tuple[ProjectSpec | None, str | None]:
    from meguri.spec import parse_spec
    from meguri.spec._versions import spec_hash
    from meguri.store._workspace import SPEC_FILE

    path = ws.root / SPEC_FILE
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        return parse_spec(text, str(path)), spec_hash(text)
    if version.spec_version_id is None:
        return None, None
    stored = ws.metadata.specs.get(version.spec_version_id)
    return parse_spec(stored.content), stored.hash


def _package_bytes(version: ModelVersion) -> int:
    return sum(int(str(entry.get("size", 0))) for entry in version.files.values())


def derive_scaling(
    environment: DeployEnvironment, spec: ProjectSpec | None, package_bytes: int
) -> Scaling:
    """Replicas and per-replica resources (see the module docstring for each rule)."""
    budget = spec.resources.compute_budget if spec is not None else None
    replicas = environment.workers
    cores = budget.cpu_cores if budget is not None else None
    max_replicas = max(replicas, cores) if cores else HEADROOM * replicas
    memory = BASE_MEMORY_MIB + math.ceil(PACKAGE_MEMORY_FACTOR * package_bytes / _MIB)
    limit = 2 * memory
    if budget is not None and budget.memory_gb and budget.cpu_cores:
        limit = max(memory, math.floor(budget.memory_gb * 1024 / budget.cpu_cores))
    return Scaling(replicas, max_replicas, 1.0, memory, limit, CPU_TARGET_PERCENT)
