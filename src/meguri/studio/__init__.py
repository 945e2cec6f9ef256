"""The Studio, meguri's web UI: server-rendered pages (Jinja2 + htmx, Plotly.js from the
installed ``plotly`` package), no network at run time.

::

    from meguri.studio import create_router

    app.include_router(create_router())   # app.state.workspace: a meguri.store.Workspace

Pages (route names in brackets, for ``url_for``):

- ``/`` project overview and the requirement traceability matrix [studio_overview]
- ``/data``, ``/data/{name}`` catalog; versions, schema, profile plots, quality, lineage
- ``/experiments``, ``/experiments/{id}`` the runs table (filter, sort, columns, pages);
  ``/runs/{id}`` a run with its metric charts; ``/compare?runs=A&runs=B`` runs side by side
- ``/models``, ``/models/{name}`` versions, aliases, gates, checks, card, history;
  ``POST /models/{name}/versions/{n}/promote`` promotion (admin, CSRF token)
- ``/deployments``, ``/deployments/{env}`` traffic split, health, revisions
- ``/monitoring``, ``/monitoring/{env}`` drift, accuracy, latency over time, alerts
- ``/documents``, ``/documents/{name}``, ``/specs/{n}`` documents and spec history, diffs
- ``/audit`` the audit log and its verification
- ``/static/{name}`` htmx, plotly.js, the Studio's CSS and JS (immutable, cache-busted)

The server's auth middleware puts the user on ``request.state.user`` and their project role
on ``request.state.role`` (and, for cookie sessions, ``request.state.csrf_token``); the Studio
checks them again on every page (see :mod:`meguri.studio._access`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meguri.studio._router import create_router

__all__ = ["create_router"]


def __getattr__(name: str) -> Any:
    # Lazy: ``import meguri.studio`` costs nothing until the router is built.
    if name == "create_router":
        from meguri.studio._router import create_router

        return create_router
    raise AttributeError(f"module 'meguri.studio' has no attribute {name!r}")
