"""meguri.serve: the inference server (raw ASGI, ONNX Runtime, micro-batching, capture).

Names load lazily so that ``import meguri.serve`` stays cheap (server start-up time counts)::

    from meguri.serve import ServeSettings, create_app, serve
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meguri.serve._app import create_app
    from meguri.serve._model import LoadedModel, Prediction
    from meguri.serve._server import PackageSource, ServeSettings, serve, serve_in_background
    from meguri.serve._signature import Column, Output, Signature

__all__ = [
    "Column",
    "LoadedModel",
    "Output",
    "PackageSource",
    "Prediction",
    "ServeSettings",
    "Signature",
    "create_app",
    "serve",
    "serve_in_background",
]

_WHERE = {
    "create_app": "_app",
    "LoadedModel": "_model",
    "Prediction": "_model",
    "PackageSource": "_server",
    "ServeSettings": "_server",
    "serve": "_server",
    "serve_in_background": "_server",
    "Column": "_signature",
    "Output": "_signature",
    "Signature": "_signature",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'meguri.serve' has no attribute {name!r}")
    return getattr(import_module(f"meguri.serve.{_WHERE[name]}"), name)
