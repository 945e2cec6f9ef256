"""The sign-in page: a form that posts to the server's ``POST /login``.

Public (a browser without a session is sent here by the server, with ``next`` naming the page
it asked for). ``failed=1`` says the last attempt was refused; the server rate-limits attempts
and answers 429 itself. The page carries no script.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from meguri.studio._access import PUBLIC
from meguri.studio._render import Renderer

__all__ = ["register"]


def register(router: APIRouter, renderer: Renderer) -> None:
    @router.get("/login", name="studio_login", openapi_extra=PUBLIC, response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/", failed: int = 0) -> HTMLResponse:
        target = next if next.startswith("/") and not next.startswith("//") else "/"
        context = {"title": "Sign in", "next": target, "failed": bool(failed)}
        return renderer.page(request, "login.html", context)
