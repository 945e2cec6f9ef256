"""The platform API (FastAPI): every phase of a project over HTTP, an MLflow tracking subset,
and the access control in front of both.

::

    from meguri.server import ServerSettings, create_app

    app = create_app(ServerSettings(root="."))     # serve with uvicorn, or `meguri server`

Routes live under ``/api/v1/`` (one router per resource; the document is
``/api/v1/openapi.json``), the MLflow subset under ``/api/2.0/mlflow/`` and
``/api/2.0/mlflow-artifacts/``, browser sign-in at ``POST /login`` and ``POST /logout``.
Every route declares the role it needs (:class:`Access`); a route that declares none is refused
to everyone.
"""

from meguri.server._access import ACCESS_KEY, Access, access, route_table
from meguri.server._app import OPENAPI_PATH, create_app
from meguri.server._settings import ServerSettings

__all__ = [
    "ACCESS_KEY",
    "OPENAPI_PATH",
    "Access",
    "ServerSettings",
    "access",
    "create_app",
    "route_table",
]
