"""The app factory: one workspace per app, one router per resource, errors mapped once, and
the access middleware in front of everything.

::

    from meguri.server import ServerSettings, create_app

    app = create_app(ServerSettings(root="/srv/churn"))    # uvicorn-ready ASGI app

``create_app(settings, workspace=ws)`` serves an open workspace (tests, the CLI composing the
Studio); ``extra_routers`` adds routers (the Studio's pages) behind the same guard: each of
their routes declares its rule (``openapi_extra={"x-meguri-access": "viewer"}``) or is
refused to everyone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import Response

from meguri.server import (
    _login,
    _mlflow,
    _mlflow_artifacts,
    _r_access,
    _r_artifacts,
    _r_checks,
    _r_datasets,
    _r_deployments,
    _r_models,
    _r_monitor,
    _r_projects,
    _r_runs,
    _r_store,
)
from meguri.server._access import Access, access, verify_routed
from meguri.server._deps import ok
from meguri.server._errors import install_error_handlers
from meguri.server._middleware import AccessMiddleware, Guard
from meguri.server._sessions import LoginLimiter, SessionSigner
from meguri.server._settings import ServerSettings, load_secret
from meguri.store import Workspace, open_workspace

__all__ = ["OPENAPI_PATH", "create_app"]

OPENAPI_PATH = "/api/v1/openapi.json"
SERVER_USER = "system"  # reserved: no person can sign in under this name

_ROUTERS = (
    _login.router,
    _r_access.router,
    _r_projects.router,
    _r_datasets.router,
    _r_runs.router,
    _r_models.router,
    _r_deployments.router,
    _r_monitor.router,
    _r_checks.router,
    _r_artifacts.router,
    _r_store.router,
    _mlflow.router,
    _mlflow_artifacts.router,
)
#: The MLflow subset again under a project prefix (tracking URI ``…/projects/<name>``).
_PROJECT_PREFIXED = (_mlflow.router, _mlflow_artifacts.router)


def _open(settings: ServerSettings) -> Workspace:
    return open_workspace(
        settings.root,
        store_url=settings.store_url,
        artifacts_url=settings.artifacts_url,
        project=settings.project,
        user=SERVER_USER,
        remote=False,  # the server is where MEGURI_SERVER points: its stores are its own
    )


def create_app(
    settings: ServerSettings | None = None,
    *,
    workspace: Workspace | None = None,
    extra_routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The platform API for ``workspace`` (default: opened from ``settings``; closed with the
    app); see the module docstring."""
    settings = settings or ServerSettings()
    ws = workspace if workspace is not None else _open(settings)
    owned = workspace is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            ws.close()

    from meguri import __version__

    app = FastAPI(
        title="meguri platform API",
        version=__version__,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(verify_routed)],
        description="Every phase of a meguri project over HTTP, and an MLflow tracking subset.",
    )
    signer = SessionSigner(load_secret(settings, ws.root / ".meguri"), settings.session_ttl_s)
    app.state.workspace, app.state.settings, app.state.signer = ws, settings, signer
    app.state.login_limiter = LoginLimiter(settings.login_max_failures, settings.login_window_s)
    install_error_handlers(app)
    for router in (*_ROUTERS, *extra_routers):
        app.include_router(router)
    for router in _PROJECT_PREFIXED:
        app.include_router(router, prefix="/projects/{project}", include_in_schema=False)
    _add_openapi_route(app)
    origins = frozenset(o.lower().rstrip("/") for o in settings.public_origins)
    app.add_middleware(AccessMiddleware, guard=Guard(ws, signer, settings.hosts(), origins))
    return app


def _add_openapi_route(app: FastAPI) -> None:
    @app.get(OPENAPI_PATH, include_in_schema=False, openapi_extra=access(Access.PUBLIC))
    def openapi_document(request: Request) -> Response:
        """The OpenAPI 3 document of every route, each with the role it needs."""
        return ok(_openapi(request.app))


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document (cached by FastAPI until the routes change) with the two ways to
    authenticate declared."""
    document = app.openapi()
    components = document.setdefault("components", {})
    components["securitySchemes"] = {
        "token": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (mgr_…), from POST /api/v1/me/tokens.",
        },
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": "meguri_session",
            "description": "The cookie set by POST /login; writes also need the X-CSRF-Token "
            "header.",
        },
    }
    document["security"] = [{"token": []}, {"session": []}]
    return document
