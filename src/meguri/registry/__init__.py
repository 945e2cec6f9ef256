"""Phase 4a, the model registry: named models, numbered versions of their packages, aliases,
gated promotion, and loading a version as a predictor (``load_model("churn@production")``)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meguri.registry._registry import (
        PROTECTED_ALIASES,
        GateReport,
        archive,
        check_gates,
        describe,
        download_package,
        get_model_version,
        list_models,
        list_versions,
        load_model,
        promote,
        read_card,
        ref_alias,
        register_model,
        remove_alias,
        set_alias,
        tag,
        write_card,
    )

__all__ = [
    "PROTECTED_ALIASES",
    "GateReport",
    "archive",
    "check_gates",
    "describe",
    "download_package",
    "get_model_version",
    "list_models",
    "list_versions",
    "load_model",
    "promote",
    "read_card",
    "ref_alias",
    "register_model",
    "remove_alias",
    "set_alias",
    "tag",
    "write_card",
]

# Loaded on first use, so that ``import meguri.registry`` costs nothing until it is used.
_LAZY = dict.fromkeys(__all__, "_registry")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'meguri.registry' has no attribute {name!r}")
    return getattr(import_module(f"meguri.registry.{module}"), name)
