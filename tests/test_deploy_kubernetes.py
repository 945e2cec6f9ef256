"""Kubernetes manifests of a real trained and registered model, validated against the
Kubernetes OpenAPI schemas (the JSON schemas ``kubernetes-validate`` ships, strict: unknown
fields are errors) and checked for what the schemas cannot see: names, label values, selectors,
ports and volumes that must match across the objects."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

import meguri
from meguri import registry
from meguri.cli import _models
from meguri.deploy._kubernetes import (
    CAPTURE_DIR,
    kubernetes_manifests,
    manifests_for,
    resource_name,
    token_secret_name,
    write_manifests,
)
from meguri.deploy._scaleout import BASE_MEMORY_MIB, HEADROOM, derive_scaling, resolve_target
from meguri.errors import ConfigError
from meguri.spec import parse_spec
from meguri.spec._deploy import DeployEnvironment
from meguri.spec._versions import save_spec_version
from meguri.store import Workspace
from meguri.testing.specs import quick_spec_text
from meguri.train import train

kubernetes_validate = pytest.importorskip("kubernetes_validate")

SCHEMA_VERSIONS = ("1.27", "1.37")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def spec_text(project: str = "k8s") -> str:
    """The bundled example (production: 2 workers, capture 0.5; budget 2 cores, 4 GB),
    trained with linear only, 2 folds and scaling only, to be quick."""
    return quick_spec_text(project, scale_only=True)


@dataclass(frozen=True)
class Trained:
    ws: Workspace
    ref: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    ws = meguri.open_workspace(tmp_path_factory.mktemp("k8s"), project="k8s")
    text = spec_text()
    spec_version, _ = save_spec_version(ws.metadata, ws.project.id, text, created_by=ws.user)
    result = train(parse_spec(text), workspace=ws, spec_version_id=spec_version.id)
    version = registry.register_model(result, "cancer", workspace=ws)
    yield Trained(ws, version.ref)
    ws.close()


def _by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests}


def test_manifests_validate_against_the_kubernetes_schemas(trained: Trained) -> None:
    manifests = kubernetes_manifests(trained.ref, env="production", workspace=trained.ws)
    assert [m["kind"] for m in manifests] == [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    for manifest in manifests:
        for version in SCHEMA_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)
    broken = _by_kind(manifests)["Deployment"]
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessProbes"):
        kubernetes_validate.validate(broken, SCHEMA_VERSIONS[-1], strict=True)
    hpa = _by_kind(manifests)["HorizontalPodAutoscaler"]
    hpa["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, SCHEMA_VERSIONS[-1], strict=True)


def test_the_deployment_runs_the_exported_container_safely(trained: Trained) -> None:
    ws = trained.ws
    version = registry.get_model_version(trained.ref, workspace=ws)
    deployment = _by_kind(kubernetes_manifests(trained.ref, env="production", workspace=ws))[
        "Deployment"
    ]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "meguri-cancer:1" and container["args"] == ["serve"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["MEGURI_MODEL_DIGEST"] == version.package_digest
    assert env["MEGURI_SERVE_MAX_BODY_BYTES"] == str(8 * 1024 * 1024)
    assert env["MEGURI_SERVE_MAX_ROWS"] == "10000"
    assert "MEGURI_SERVE_TOKEN" not in env  # the example's production sets no token
    assert env["MEGURI_CAPTURE_RATE"] == "0.5" and env["MEGURI_CAPTURE_URL"] == CAPTURE_DIR
    assert container["livenessProbe"]["httpGet"] == {"path": "/ping", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0  # the image itself runs as root
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts) == {CAPTURE_DIR, "/tmp"} and set(mounts.values()) <= volumes
    # production: 2 workers -> 2 replicas; budget 2 cores, 4 GB -> at most 2, 2048Mi limit.
    assert deployment["spec"]["replicas"] == 2
    resources = container["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == "1"
    assert resources["limits"]["memory"] == "2048Mi"
    request = int(resources["requests"]["memory"].removesuffix("Mi"))
    assert BASE_MEMORY_MIB < request <= 2048


def test_objects_fit_together_and_carry_the_lineage(trained: Trained) -> None:
    ws = trained.ws
    version = registry.get_model_version(trained.ref, workspace=ws)
    kinds = _by_kind(kubernetes_manifests(trained.ref, env="production", workspace=ws))
    deployment, service, hpa = (
        kinds[k] for k in ("Deployment", "Service", "HorizontalPodAutoscaler")
    )
    for manifest in kinds.values():
        meta = manifest["metadata"]
        assert meta["name"] == "meguri-cancer-production" and _DNS_1035.fullmatch(meta["name"])
        for key, value in meta["labels"].items():
            assert len(value) <= 63 and _LABEL_VALUE.fullmatch(value), (key, value)
        assert meta["labels"]["meguri.dev/model"] == "cancer"
        assert meta["labels"]["meguri.dev/model-version"] == "1"
        notes = meta["annotations"]
        assert notes["meguri.dev/package-digest"] == f"sha256:{version.package_digest}"
        assert notes["meguri.dev/spec-version"] == version.spec_version_id
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert "app.kubernetes.io/version" not in selector  # selectors are immutable: no version
    assert service["spec"]["selector"] == selector
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 80
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"] == 2
    assert hpa["spec"]["maxReplicas"] == 2
    metric = hpa["spec"]["metrics"][0]["resource"]
    assert metric["name"] == "cpu" and metric["target"]["averageUtilization"] == 70
    budget = kinds["PodDisruptionBudget"]["spec"]
    assert budget == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}


def test_the_token_comes_from_a_secret_the_manifests_never_hold(trained: Trained) -> None:
    target = resolve_target(trained.ref, env="production", workspace=trained.ws)
    guarded = replace(
        target,
        environment=target.environment.model_copy(
            update={"auth_token_env": "CANCER_TOKEN", "max_body_bytes": 4096}
        ),
    )
    manifests = manifests_for(guarded)
    for manifest in manifests:
        kubernetes_validate.validate(manifest, SCHEMA_VERSIONS[-1], strict=True)
    container = _by_kind(manifests)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MEGURI_SERVE_TOKEN"] == {
        "name": "MEGURI_SERVE_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": token_secret_name(guarded), "key": "token"}},
    }
    assert token_secret_name(guarded) == "meguri-cancer-production-token"
    assert env["MEGURI_SERVE_MAX_BODY_BYTES"]["value"] == "4096"
    assert not any(m["kind"] == "Secret" for m in manifests)


def test_environments_come_from_the_workspace_spec_first(trained: Trained) -> None:
    ws = trained.ws
    staging = resolve_target(trained.ref, env="staging", workspace=ws)
    assert (staging.scaling.replicas, staging.scaling.max_replicas) == (1, 2)
    with pytest.raises(ConfigError, match=r"'qa' is not in the spec's deploy\.environments"):
        kubernetes_manifests(trained.ref, env="qa", workspace=ws)
    text = spec_text().replace("      workers: 2\n", "      workers: 3\n")
    text = text.replace("    cpu_cores: 2\n    memory_gb: 4\n", "")
    (ws.root / "meguri.yaml").write_text(text)
    try:
        target = resolve_target(trained.ref, env="production", workspace=ws)
    finally:
        (ws.root / "meguri.yaml").unlink()
    scaling = target.scaling
    assert (scaling.replicas, scaling.max_replicas) == (3, 3 * HEADROOM)
    assert scaling.memory_limit_mib == 2 * scaling.memory_mib
    assert target.spec_hash != staging.spec_hash


def test_image_namespace_and_long_names(trained: Trained) -> None:
    target = resolve_target(trained.ref, env="production", workspace=trained.ws)
    manifests = manifests_for(target, image="registry.local/ml/cancer:1", namespace="ml")
    assert all(m["metadata"]["namespace"] == "ml" for m in manifests)
    manifests[0]["metadata"]["labels"]["team"] = "a"  # each object owns its dicts
    assert "team" not in manifests[1]["metadata"]["labels"]
    assert "team" not in manifests[0]["spec"]["template"]["metadata"]["labels"]
    container = _by_kind(manifests)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.local/ml/cancer:1"
    long_name = replace(target.version, name="Breast_Cancer." + "x" * 90)
    for manifest in manifests_for(replace(target, version=long_name)):
        kubernetes_validate.validate(manifest, SCHEMA_VERSIONS[-1], strict=True)
        meta = manifest["metadata"]
        assert _DNS_1035.fullmatch(meta["name"]) and len(meta["name"]) <= 63
        assert all(_LABEL_VALUE.fullmatch(v) for v in meta["labels"].values())
        assert meta["annotations"]["meguri.dev/model"] == long_name.name
    assert resource_name("9lives_x") == "meguri-9lives-x"


def test_memory_follows_the_package_size() -> None:
    small = derive_scaling(DeployEnvironment(), None, 0)
    large = derive_scaling(DeployEnvironment(workers=2), None, 100 * 1024 * 1024)
    assert (small.replicas, small.max_replicas) == (1, HEADROOM)
    assert small.memory_mib == BASE_MEMORY_MIB and large.memory_mib == BASE_MEMORY_MIB + 400
    assert large.max_replicas == 2 * HEADROOM


def test_written_yaml_and_the_cli(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = kubernetes_manifests(trained.ref, env="staging", workspace=trained.ws)
    path = write_manifests(manifests, tmp_path / "k8s" / "cancer.yaml")
    text = path.read_text()
    assert "&id" not in text and text.count("\n---\n") == 3  # no YAML aliases, 4 documents
    assert list(yaml.safe_load_all(text)) == manifests
    for name in [k for k in os.environ if k.startswith("MEGURI_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MEGURI_PROJECT", "k8s")
    monkeypatch.chdir(trained.ws.root)
    app = typer.Typer()
    _models.register(app)
    out_dir = tmp_path / "cli"
    args = ["models", "export", trained.ref, "--format", "kubernetes", "--out", str(out_dir)]
    result = CliRunner().invoke(app, [*args, "--env", "staging", "--namespace", "ml"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "kubectl apply" in result.output
    written = list(yaml.safe_load_all((out_dir / "meguri-cancer-staging.yaml").read_text()))
    assert written == manifests_for(
        resolve_target(trained.ref, env="staging", workspace=trained.ws), namespace="ml"
    )
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and "not an empty folder" in str(again.exception)
    container = [*args[:4], "container", "--out", str(tmp_path / "image")]
    assert CliRunner().invoke(app, container).exit_code == 0  # the default format still works
    assert "EXPOSE 8080" in (tmp_path / "image" / "Dockerfile").read_text()
    unknown = CliRunner().invoke(app, [*args[:4], "helm", "--out", str(tmp_path / "h")])
    assert unknown.exit_code != 0 and "ray-serve" in str(unknown.exception)
