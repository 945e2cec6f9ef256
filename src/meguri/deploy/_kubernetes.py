"""A model version's deployment as Kubernetes manifests: Deployment, Service, HPA and PDB.

::

    manifests = kubernetes_manifests("cancer@production", env="production")
    write_manifests(manifests, Path("k8s/cancer.yaml"))   # then: kubectl apply -f k8s/

The pods run the container image of ``meguri models export REF --format container`` (tag
``meguri-<name>:<version>`` unless ``image`` is given) with the SageMaker contract command
``serve`` on port 8080; the Service (ClusterIP) answers on port 80. Replicas and resources
follow :mod:`meguri.deploy._scaleout`. The pods run as a non-root user on a read-only root
filesystem, without privilege escalation or Linux capabilities: the server writes only its
captures (an ``emptyDir`` at :data:`CAPTURE_DIR`) and temporary files (an ``emptyDir`` at
``/tmp``). Liveness is ``GET /ping``, readiness ``GET /v2/health/ready``; a startup probe gives
the model up to two minutes to load. Labels carry the model name, version and environment
(label values are limited to 63 characters, so the full values and the package digest and
spec version are annotations too). A PodDisruptionBudget lets a node drain take at most one
pod at a time. The environment's request limits (``max_body_bytes``, ``max_rows``) go to the
server's environment; with ``auth_token_env`` set, the bearer token comes from the Secret
``<name>-token`` (key ``token``), which the manifests reference but never contain: create it
with ``kubectl create secret generic <name>-token --from-literal=token=$TOKEN``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meguri.deploy._scaleout import ScaleOutTarget, Scaling, resolve_target
from meguri.registry._export import CONTAINER_PORT, DIGEST_ENV, image_tag

if TYPE_CHECKING:
    from meguri.store import Workspace

__all__ = [
    "CAPTURE_DIR",
    "RUN_AS_USER",
    "SERVICE_PORT",
    "kubernetes_manifests",
    "manifests_for",
    "token_secret_name",
    "write_manifests",
]

SERVICE_PORT = 80
CAPTURE_DIR = "/var/lib/meguri/capture"
RUN_AS_USER = 10001
"""The image runs as root by default; the pods run as this unprivileged uid instead (the
image's files are world-readable, and the server needs no home folder)."""
_PREFIX = "meguri.dev/"
_NAME_LIMIT = 63


def kubernetes_manifests(
    ref: str,
    *,
    env: str,
    workspace: Workspace | None = None,
    image: str | None = None,
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """The Deployment, Service and HorizontalPodAutoscaler serving version ``ref`` in ``env``
    (see the module docstring). ``image`` defaults to the exported container's tag."""
    return manifests_for(
        resolve_target(ref, env=env, workspace=workspace), image=image, namespace=namespace
    )


def manifests_for(
    target: ScaleOutTarget, *, image: str | None = None, namespace: str | None = None
) -> list[dict[str, Any]]:
    """The manifests of an already resolved ``target``."""
    name = resource_name(target.label)
    meta = _metadata(target, name, namespace)
    manifests = [
        _deployment(target, meta, image or default_image(target)),
        _service(meta),
        _autoscaler(target.scaling, meta),
        _disruption_budget(meta),
    ]
    fresh: list[dict[str, Any]] = json.loads(json.dumps(manifests))  # no dict shared by two
    return fresh


def write_manifests(manifests: list[dict[str, Any]], path: Path) -> Path:
    """Write ``manifests`` to ``path`` as one multi-document YAML file (for ``kubectl apply``)."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)

    class _Plain(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # a dict used twice (labels) is written out twice, not as an alias

    text = yaml.dump_all(manifests, Dumper=_Plain, sort_keys=False, default_flow_style=False)
    path.write_text(text, encoding="utf-8")
    return path


def default_image(target: ScaleOutTarget) -> str:
    """The tag the container export's Dockerfile names: ``meguri-<name>:<version>``."""
    return image_tag(target.version.name, str(target.version.version))


def resource_name(text: str) -> str:
    """``meguri-<text>`` as a DNS-1035 label: lowercase letters, digits and '-', at most 63
    characters, starting with a letter and ending with a letter or digit."""
    slug = re.sub(r"[^a-z0-9-]+", "-", f"meguri-{text}".lower())
    return re.sub(r"-+", "-", slug)[:_NAME_LIMIT].rstrip("-")


def label_value(text: str) -> str:
    """``text`` cut to a valid label value (63 characters, alphanumeric at both ends)."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:_NAME_LIMIT]
    return value.strip("-._")


# -- the manifests --------------------------------------------------------------------------


def _metadata(target: ScaleOutTarget, name: str, namespace: str | None) -> dict[str, Any]:
    version = target.version
    selector = {
        "app.kubernetes.io/name": label_value(f"meguri-{version.name}"),
        "app.kubernetes.io/instance": name,
    }
    labels = {
        **selector,
        "app.kubernetes.io/version": label_value(str(version.version)),
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/part-of": "meguri",
        "app.kubernetes.io/managed-by": "meguri",
        f"{_PREFIX}model": label_value(version.name),
        f"{_PREFIX}model-version": label_value(str(version.version)),
        f"{_PREFIX}environment": label_value(target.env),
    }
    annotations = {
        f"{_PREFIX}model": version.name,
        f"{_PREFIX}model-version": str(version.version),
        f"{_PREFIX}model-version-id": version.id,
        f"{_PREFIX}package-digest": f"sha256:{version.package_digest}",
        f"{_PREFIX}spec-version": version.spec_version_id or "",
        f"{_PREFIX}deploy-spec-sha256": target.spec_hash or "",
        f"{_PREFIX}environment": target.env,
    }
    meta: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta, "selector": selector}


def _deployment(target: ScaleOutTarget, meta: dict[str, Any], image: str) -> dict[str, Any]:
    metadata = meta["metadata"]
    pod_meta = {"labels": metadata["labels"], "annotations": metadata["annotations"]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": target.scaling.replicas,
            "selector": {"matchLabels": meta["selector"]},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {"metadata": pod_meta, "spec": _pod(target, image)},
        },
    }


def _pod(target: ScaleOutTarget, image: str) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(target, image)],
        "volumes": [
            {"name": "capture", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }


def _container(target: ScaleOutTarget, image: str) -> dict[str, Any]:
    return {
        "name": "server",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["serve"],
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": _env(target),
        "resources": _resources(target.scaling),
        "startupProbe": _probe("/ping", period=2, failures=60),
        "livenessProbe": _probe("/ping", period=10, failures=3),
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=2),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "capture", "mountPath": CAPTURE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def _env(target: ScaleOutTarget) -> list[dict[str, Any]]:
    version, environment = target.version, target.environment
    values = {
        DIGEST_ENV: version.package_digest,
        "MEGURI_MODEL_NAME": version.name,
        "MEGURI_MODEL_VERSION": str(version.version),
        "SAGEMAKER_BIND_TO_PORT": str(CONTAINER_PORT),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        "MEGURI_CAPTURE_RATE": repr(float(environment.capture_rate)),
        "MEGURI_CAPTURE_URL": CAPTURE_DIR,
        "MEGURI_SERVE_MAX_BODY_BYTES": str(environment.max_body_bytes),
        "MEGURI_SERVE_MAX_ROWS": str(environment.max_rows),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    found: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in values.items()]
    if environment.auth_token_env is not None:
        secret = {"name": token_secret_name(target), "key": "token"}
        found.append({"name": "MEGURI_SERVE_TOKEN", "valueFrom": {"secretKeyRef": secret}})
    return found


def token_secret_name(target: ScaleOutTarget) -> str:
    """The Secret holding the endpoint's bearer token (key ``token``), made by the operator."""
    return f"{resource_name(target.label)[: _NAME_LIMIT - 6]}-token"


def _resources(scaling: Scaling) -> dict[str, Any]:
    millis = round(scaling.cpu * 1000)
    cpu = str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
    return {
        "requests": {"cpu": cpu, "memory": f"{scaling.memory_mib}Mi"},
        "limits": {"cpu": cpu, "memory": f"{scaling.memory_limit_mib}Mi"},
    }


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _service(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta["metadata"],
        "spec": {
            "type": "ClusterIP",
            "selector": meta["selector"],
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def _autoscaler(scaling: Scaling, meta: dict[str, Any]) -> dict[str, Any]:
    name = meta["metadata"]["name"]
    utilization = {"type": "Utilization", "averageUtilization": scaling.cpu_target_percent}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta["metadata"],
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": utilization}}],
        },
    }


def _disruption_budget(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta["metadata"],
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": meta["selector"]}},
    }
