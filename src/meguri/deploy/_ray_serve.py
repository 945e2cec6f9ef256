"""A model version's deployment on Ray Serve (``pip install 'meguri[ray]'``, with ``ray[serve]``).

::

    from ray import serve
    serve.run(ray_serve_app("cancer@production", env="production"), route_prefix="/")

    write_ray_serve_config(ray_serve_config("cancer@3", env="production"), Path("serve.yaml"))
    # then: serve run serve.yaml  (or serve deploy serve.yaml on a running cluster)

Each replica loads the package itself with the server's reader
(:func:`meguri.serve._package.load_package`: the digest of ``model.json`` and every file's
sha256 checked first) and serves meguri's own ASGI app through Ray Serve's HTTP proxy, so the
routes and formats are those of ``meguri serve``: SageMaker ``/ping`` and ``/invocations``,
the MLflow scoring forms, Open Inference Protocol v2 and ``/metrics`` (per replica). The
environment's ``workers`` become the number of replicas (one CPU each), autoscaled up to the
budget's replicas (:mod:`meguri.deploy._scaleout`) on ongoing requests per replica
(:data:`TARGET_ONGOING_REQUESTS`); its ``capture_rate`` is the share of requests each replica
captures, its ``max_body_bytes``/``max_rows`` hold, and with ``auth_token_env`` each replica
reads the bearer token from that variable where it runs (never from the config).

The package folder must be readable where the replicas run: on one machine the registry's
cache is; on a cluster, the folder :func:`export_ray_serve` writes must be on a shared mount
(its path is in the config's ``args``).

Both :func:`ray_serve_app` and the config's ``import_path`` go through :func:`build_app`, Ray
Serve's application-builder form: a function taking the config's ``args``.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meguri.deploy._scaleout import ScaleOutTarget, resolve_target
from meguri.errors import ConfigError

if TYPE_CHECKING:
    from meguri.serve import LoadedModel
    from meguri.store import Workspace

__all__ = [
    "APP_BUILDER",
    "DEPLOYMENT_NAME",
    "TARGET_ONGOING_REQUESTS",
    "ModelReplica",
    "RayServeArgs",
    "build_app",
    "export_ray_serve",
    "ray_serve_app",
    "ray_serve_args",
    "ray_serve_config",
    "write_ray_serve_config",
]

APP_BUILDER = "meguri.deploy._ray_serve:build_app"
DEPLOYMENT_NAME = "meguri-model"
MAX_ONGOING_REQUESTS = 64
"""Requests one replica takes at once: its micro-batcher predicts those waiting together, so a
replica needs many in flight (Ray Serve's default is 5)."""
TARGET_ONGOING_REQUESTS = 32
"""Ongoing requests per replica the autoscaler aims at: half of what one takes at once."""
CONFIG_FILE = "serve_config.yaml"


@dataclass(frozen=True)
class RayServeArgs:
    """The ``args`` of the application (in the Ray Serve config, plain JSON values)."""

    package: str
    """The package folder (absolute path)."""
    digest: str
    name: str
    version: str
    replicas: int = 1
    max_replicas: int | None = None
    """Autoscale from ``replicas`` up to this many (None or equal: a fixed count)."""
    cpus_per_replica: float = 1.0
    capture_rate: float = 0.0
    capture_url: str | None = None
    max_ongoing_requests: int = MAX_ONGOING_REQUESTS
    max_body_bytes: int = 8 * 1024 * 1024
    max_rows: int = 10_000
    auth_token_env: str | None = None
    """The variable each replica reads its bearer token from (the token is never in the args)."""

    def scaling_options(self) -> dict[str, Any]:
        """``num_replicas``, or an ``autoscaling_config`` when ``max_replicas`` is larger."""
        if self.max_replicas is None or self.max_replicas <= self.replicas:
            return {"num_replicas": self.replicas}
        return {
            "autoscaling_config": {
                "min_replicas": self.replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": TARGET_ONGOING_REQUESTS,
            }
        }

    @classmethod
    def from_dict(cls, args: dict[str, Any]) -> RayServeArgs:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(args) - known)
        if unknown:
            raise ConfigError(
                f"Ray Serve args: unknown keys {', '.join(unknown)}; use only {sorted(known)}"
            )
        try:
            return cls(**args)
        except TypeError as exc:
            raise ConfigError(f"Ray Serve args: {exc}; the config needs package, digest, "
                              "name and version") from None  # fmt: skip


class ModelReplica:
    """One Ray Serve replica: the verified package, served by meguri's ASGI app.

    Ray Serve calls ``__serve_build_asgi_app__`` once the replica is constructed and runs the
    app's lifespan (which starts and, at shutdown, flushes prediction capture)."""

    def __init__(self, args: dict[str, Any]) -> None:
        from meguri.serve._package import load_package

        self.args = RayServeArgs.from_dict(args)
        self.model: LoadedModel = load_package(
            Path(self.args.package),
            expected_digest=self.args.digest,
            name=self.args.name,
            version=self.args.version,
        )

    def __serve_build_asgi_app__(self) -> Any:
        from meguri.serve._app import create_app
        from meguri.serve._server import ServeSettings

        args = self.args
        capture = args.capture_url if args.capture_rate > 0 else None
        settings = ServeSettings(
            capture_rate=args.capture_rate if capture else 0.0,
            capture_url=capture,
            max_body_bytes=args.max_body_bytes,
            max_rows=args.max_rows,
            auth_token=_token(args.auth_token_env),
        )
        return create_app(self.model, settings=settings)


def _token(name: str | None) -> str | None:
    """The bearer token from the variable ``name`` where this replica runs."""
    if name is None:
        return None
    import os

    from meguri.serve._server import token_problem

    token = os.environ.get(name)
    problem = token_problem(token)
    if problem is not None:
        raise ConfigError(
            f"Ray Serve replica: the endpoint requires a bearer token from ${name}, which "
            f"{problem} where the replica runs; set a long random one in the cluster's runtime "
            "environment (runtime_env: {env_vars: ...}) or on every node"
        )
    return token


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise ConfigError(
            "Ray Serve is not installed: pip install 'meguri[ray]' 'ray[serve]' "
            "(or export Kubernetes manifests instead)"
        ) from None
    return serve


def build_app(args: dict[str, Any]) -> Any:
    """The Ray Serve application of ``args`` (see :class:`RayServeArgs`); Ray Serve calls it
    for a config whose ``import_path`` is :data:`APP_BUILDER`."""
    serve = _serve()
    options = RayServeArgs.from_dict(dict(args))
    deployment = serve.deployment(serve.ingress()(ModelReplica))
    return deployment.options(
        name=DEPLOYMENT_NAME,
        **options.scaling_options(),
        max_ongoing_requests=options.max_ongoing_requests,
        ray_actor_options={"num_cpus": options.cpus_per_replica},
    ).bind(asdict(options))


def ray_serve_args(
    target: ScaleOutTarget, *, package: Path, capture_url: str | None
) -> dict[str, Any]:
    """The application's args for ``target`` with its package in ``package``."""
    version, environment = target.version, target.environment
    args = RayServeArgs(
        package=str(Path(package).resolve()),
        digest=version.package_digest,
        name=version.name,
        version=str(version.version),
        replicas=target.scaling.replicas,
        max_replicas=target.scaling.max_replicas,
        cpus_per_replica=target.scaling.cpu,
        capture_rate=environment.capture_rate if capture_url else 0.0,
        capture_url=capture_url,
        max_body_bytes=environment.max_body_bytes,
        max_rows=environment.max_rows,
        auth_token_env=environment.auth_token_env,
    )
    return asdict(args)


def _capture_url(workspace: Workspace | None, env: str) -> str:
    from meguri.deploy._supervisor import capture_dir
    from meguri.store._workspace import default_workspace

    ws = workspace or default_workspace()
    return str(capture_dir(ws.root, env))


def ray_serve_app(ref: str, *, env: str, workspace: Workspace | None = None) -> Any:
    """A bound Ray Serve application serving version ``ref`` with ``env``'s settings, for
    ``serve.run(app)``; captures go where ``meguri deploy`` puts them
    (``.meguri/capture/<env>``)."""
    target = resolve_target(ref, env=env, workspace=workspace)
    capture = _capture_url(workspace, env) if target.environment.capture_rate > 0 else None
    return build_app(ray_serve_args(target, package=target.package, capture_url=capture))


def ray_serve_config(
    target: ScaleOutTarget, *, package: Path, capture_url: str | None = None, port: int = 8000
) -> dict[str, Any]:
    """The ``serve run``/``serve deploy`` config of ``target`` (one application at ``/``)."""
    args = ray_serve_args(target, package=package, capture_url=capture_url)
    deployment = {
        "name": DEPLOYMENT_NAME,
        **RayServeArgs.from_dict(args).scaling_options(),
        "max_ongoing_requests": args["max_ongoing_requests"],
        "ray_actor_options": {"num_cpus": args["cpus_per_replica"]},
    }
    application = {
        "name": target.label,
        "route_prefix": "/",
        "import_path": APP_BUILDER,
        "args": args,
        "deployments": [deployment],
    }
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": port},
        "applications": [application],
    }


def write_ray_serve_config(config: dict[str, Any], path: Path) -> Path:
    """Write ``config`` as the YAML file ``serve run``/``serve deploy`` read."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def export_ray_serve(ref: str, dest: Path, *, env: str, workspace: Workspace | None = None) -> Path:
    """Write ``dest/model/`` (the verified package) and ``dest/serve_config.yaml`` naming it;
    ``dest`` must be new or empty. Returns the config's path."""
    from meguri.serve._package import read_verified

    target = resolve_target(ref, env=env, workspace=workspace)
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"--out {dest}: exists and is not an empty folder; choose a new one")
    shutil.copytree(target.package, dest / "model")
    read_verified(dest / "model", expected_digest=target.version.package_digest)
    capture = str((dest / "capture").resolve()) if target.environment.capture_rate > 0 else None
    config = ray_serve_config(target, package=dest / "model", capture_url=capture)
    return write_ray_serve_config(config, dest / CONFIG_FILE)
