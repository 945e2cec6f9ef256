"""Phase 4c, deployments: local endpoints managed by meguri, their revisions and rollouts.

Names load lazily so that ``import meguri.deploy`` stays cheap::

    from meguri.deploy import deploy, status, history, rollback, stop
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meguri.deploy._checks import (
        PrePromotionReport,
        PrePromotionSettings,
        pre_promotion_tests,
    )
    from meguri.deploy._deployments import (
        DeploymentStatus,
        deploy,
        history,
        rollback,
        spec_environment,
        status,
        stop,
        wait_settled,
    )
    from meguri.deploy._kubernetes import kubernetes_manifests, write_manifests
    from meguri.deploy._pipeline import PipelineResult, run_pipeline
    from meguri.deploy._ray_serve import export_ray_serve, ray_serve_app
    from meguri.errors import DeploymentError

__all__ = [
    "DeploymentError",
    "DeploymentStatus",
    "PipelineResult",
    "PrePromotionReport",
    "PrePromotionSettings",
    "deploy",
    "export_ray_serve",
    "history",
    "kubernetes_manifests",
    "pre_promotion_tests",
    "ray_serve_app",
    "rollback",
    "run_pipeline",
    "spec_environment",
    "status",
    "stop",
    "wait_settled",
    "write_manifests",
]

_LAZY = {
    **dict.fromkeys(__all__, "_deployments"),
    "PrePromotionReport": "_checks",
    "PrePromotionSettings": "_checks",
    "pre_promotion_tests": "_checks",
    "PipelineResult": "_pipeline",
    "kubernetes_manifests": "_kubernetes",
    "write_manifests": "_kubernetes",
    "export_ray_serve": "_ray_serve",
    "ray_serve_app": "_ray_serve",
    "run_pipeline": "_pipeline",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'meguri.deploy' has no attribute {name!r}")
    return getattr(import_module(f"meguri.deploy.{module}"), name)
