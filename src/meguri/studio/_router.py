"""The Studio's router: static files, then every page behind the viewer check.

Each page module adds its routes with ``register(router, renderer)``. Route names start with
``studio_`` (``url_for`` names are global to the app the router is mounted in). A meguri
error raised by a page becomes an HTML error page with the right status (404 for something
unknown, 400 for bad input such as a malformed runs filter, 409 for a conflict), never a
stack trace.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.routing import APIRoute

from meguri.errors import (
    ConflictError,
    GateFailedError,
    MeguriError,
    NotFoundError,
    RegistryError,
    StoreError,
)
from meguri.studio import (
    _pages_audit,
    _pages_data,
    _pages_deploy,
    _pages_docs,
    _pages_login,
    _pages_models,
    _pages_monitor,
    _pages_overview,
    _pages_runs,
)
from meguri.studio._access import PUBLIC, require
from meguri.studio._render import Renderer, StaticFiles

__all__ = ["create_router"]

_IMMUTABLE = "public, max-age=31536000, immutable"
_PAGES = (
    _pages_overview,
    _pages_data,
    _pages_runs,
    _pages_models,
    _pages_deploy,
    _pages_monitor,
    _pages_docs,
    _pages_audit,
)


def create_router(templates_dir: str | Path | None = None) -> APIRouter:
    """The Studio's pages as one router to mount at ``/`` on the platform app.

    ``templates_dir``: a folder whose templates replace the bundled ones of the same name
    (the rest come from the package). Pages read the workspace from ``app.state.workspace``
    and the caller from ``request.state.user`` / ``request.state.role``, which the server's
    auth middleware sets; see :mod:`meguri.studio._access`."""
    static = StaticFiles()
    renderer = Renderer(templates_dir, static)
    router = APIRouter(route_class=_route_class(renderer))
    _add_static(router, static)
    _pages_login.register(router, renderer)
    pages = APIRouter(route_class=_route_class(renderer), dependencies=[Depends(require)])
    for module in _PAGES:
        module.register(pages, renderer)
    router.include_router(pages)
    return router


def _add_static(router: APIRouter, static: StaticFiles) -> None:
    @router.get(
        "/static/{name}", name="studio_static", include_in_schema=False, openapi_extra=PUBLIC
    )
    def static_file(name: str) -> Response:
        found = static.get(name)
        if found is None:
            raise HTTPException(404, f"No static file {name!r}.")
        headers = {"Cache-Control": _IMMUTABLE, "X-Content-Type-Options": "nosniff"}
        return Response(found.content, media_type=found.media_type, headers=headers)


def error_status(err: MeguriError) -> int:
    """The HTTP status of a meguri error raised while rendering a page."""
    if isinstance(err, GateFailedError | ConflictError):
        return 409
    if isinstance(err, NotFoundError | RegistryError):
        return 404
    if isinstance(err, StoreError):
        return 500  # the store failed (unreachable, corrupted): not the caller's fault
    return 400


def _route_class(renderer: Renderer) -> type[APIRoute]:
    class StudioRoute(APIRoute):
        """Renders meguri errors as the Studio's error page."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except MeguriError as err:
                    status = error_status(err)
                    context = {"title": "Not found" if status == 404 else "Error", "error": err}
                    return renderer.page(request, "error.html", context, status_code=status)

            return handle

    return StudioRoute
