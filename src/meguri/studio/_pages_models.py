"""Models: the registered models, one model's versions, aliases, history, the gate checks of
a version, its model card, and promotion.

The card is the HTML the registry stored with the version. It is served by its own route
under a ``sandbox`` Content-Security-Policy and shown in a sandboxed ``<iframe>``, so it
cannot run script or reach the Studio's cookies, whatever it contains.

Promotion is the one change the Studio makes: a form POST (admin role, CSRF token)
calling :func:`meguri.registry.promote` as the logged-in user, which checks the gates; a
failing gate is shown with the criteria that failed (409), and an override needs a reason,
which the registry records in the model's history.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meguri import registry
from meguri.errors import GateFailedError, NotFoundError, RegistryError
from meguri.store import Workspace
from meguri.store.metadata import Model, ModelVersion
from meguri.studio._access import ADMIN, VIEWER, acting_workspace, check_csrf, read_form, require
from meguri.studio._render import Renderer

__all__ = ["register"]

#: The card's own policy: no script, no network, no same-origin access; only inline styles.
CARD_POLICY = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
)


def register(router: APIRouter, renderer: Renderer) -> None:
    @router.get("/models", name="studio_models", openapi_extra=VIEWER, response_class=HTMLResponse)
    def models(request: Request) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        repo = ws.metadata.models
        found = repo.list_models(ws.project.id)
        versions = {m.id: repo.versions(m.id) for m in found}
        context = {"title": "Models", "section": "models", "models": found, "versions": versions}
        return renderer.page(request, "models.html", context)

    @router.get(
        "/models/{name}", name="studio_model", openapi_extra=VIEWER, response_class=HTMLResponse
    )
    def model(
        request: Request, name: str, version: int | None = None, promoted: str | None = None
    ) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        context = model_context(ws, name, version)
        context["notice"] = _promoted_notice(context["current"], promoted)
        return renderer.page(request, "model.html", context)

    @router.get(
        "/models/{name}/versions/{number}/card", name="studio_model_card", openapi_extra=VIEWER
    )
    def card(request: Request, name: str, number: int) -> Response:
        ws: Workspace = request.app.state.workspace
        version = _version(ws, _model(ws, name), number)
        if version.card_html_digest is None:
            raise NotFoundError(f"{version.ref} has no stored card (`meguri models card`).")
        headers = {
            "Content-Security-Policy": CARD_POLICY,
            "X-Frame-Options": "SAMEORIGIN",
            "Cache-Control": "no-store",
        }
        body = ws.artifacts.get_bytes(version.card_html_digest)
        return Response(body, media_type="text/html; charset=utf-8", headers=headers)

    @router.post(
        "/models/{name}/versions/{number}/promote", name="studio_promote", openapi_extra=ADMIN
    )
    async def promote(request: Request, name: str, number: int) -> Response:
        require(request, "admin")
        form = await read_form(request)
        check_csrf(request, form)
        alias = form.get("alias", "production").strip() or "production"
        reason = form.get("override_reason", "").strip() or None
        ws = acting_workspace(request)
        try:
            registry.promote(f"{name}@{number}", alias, override_reason=reason, workspace=ws)
        except RegistryError as err:  # a failing gate, a bad alias, an archived version
            context = model_context(ws, name, number)
            context["notice"] = ("error", str(err))
            status = 409 if isinstance(err, GateFailedError) else 400
            return renderer.page(request, "model.html", context, status_code=status)
        target = str(request.url_for("studio_model", name=name).path)
        return RedirectResponse(f"{target}?version={number}&promoted={alias}", status_code=303)


def _model(ws: Workspace, name: str) -> Model:
    found = ws.metadata.models.find_model(ws.project.id, name)
    if found is None:
        raise NotFoundError(f"No model named {name!r} in this project; see /models.")
    return found


def _version(ws: Workspace, model: Model, number: int) -> ModelVersion:
    found = ws.metadata.models.find_version(model.id, number)
    if found is None:
        raise NotFoundError(f"Model {model.name!r} has no version {number}.")
    return found


def model_context(ws: Workspace, name: str, number: int | None) -> dict[str, Any]:
    repo = ws.metadata.models
    model = _model(ws, name)
    versions = repo.versions(model.id)
    if not versions:
        raise NotFoundError(f"Model {name!r} has no versions.")
    current = _version(ws, model, number) if number is not None else _default(versions)
    checks = [
        *ws.metadata.checks.for_subject("run", current.run_id),
        *ws.metadata.checks.for_subject("model_version", current.id),
    ]
    return {
        "title": f"Models · {current.ref}",
        "section": "models",
        "model": model,
        "versions": versions[::-1],
        "current": current,
        "aliases": repo.aliases(model.id),
        "gates": registry.check_gates(current.id, workspace=ws),
        "checks": sorted(checks, key=lambda c: c.created_at, reverse=True),
        "events": repo.events(model.id)[::-1],
        "notice": None,
    }


def _default(versions: list[ModelVersion]) -> ModelVersion:
    """The production version, else the newest."""
    return next((v for v in versions if "production" in v.aliases), versions[-1])


def _promoted_notice(current: ModelVersion, alias: str | None) -> tuple[str, str] | None:
    """The success line after a promotion, shown only if the alias does point at the version
    (so a crafted link cannot make the page claim a promotion that did not happen)."""
    if alias and alias in current.aliases:
        return ("ok", f"{current.ref} is now {alias!r}.")
    return None
