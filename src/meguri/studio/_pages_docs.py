"""Documents and the spec's history: every stored version, read as Markdown (documents) or
YAML (specs), and the differences between two versions.

Documents are rendered from Markdown with markdown-it (CommonMark) with raw HTML off, so a
document's ``<script>`` is shown as text, and unsafe link schemes (``javascript:``) are left
unlinked by markdown-it's link validation; the result is then inserted as markup. Spec diffs
are :func:`meguri.spec.diff_specs`: the structured changes (criteria matched by id) and the
unified text diff.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt
from markupsafe import Markup

from meguri.errors import NotFoundError, SpecError
from meguri.spec import diff_specs, unified_diff
from meguri.store import Workspace
from meguri.store.metadata import DocumentVersion, SpecVersion
from meguri.studio._access import VIEWER
from meguri.studio._render import Renderer

__all__ = ["register", "render_markdown"]

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def render_markdown(text: str) -> Markup:
    """CommonMark to HTML with raw HTML disabled (it is escaped as text)."""
    return Markup(_MARKDOWN.render(text))  # markdown-it escapes all text (html off)


def register(router: APIRouter, renderer: Renderer) -> None:
    @router.get(
        "/documents", name="studio_documents", openapi_extra=VIEWER, response_class=HTMLResponse
    )
    def documents(request: Request) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        pid = ws.project.id
        context = {
            "title": "Documents",
            "section": "documents",
            "documents": ws.metadata.documents.latest_versions(pid),
            "specs": list(enumerate(ws.metadata.specs.list(pid), start=1))[::-1],
        }
        return renderer.page(request, "documents.html", context)

    @router.get(
        "/documents/{name}",
        name="studio_document",
        openapi_extra=VIEWER,
        response_class=HTMLResponse,
    )
    def document(
        request: Request, name: str, version: int | None = None, against: int | None = None
    ) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        return renderer.page(request, "document.html", document_context(ws, name, version, against))

    @router.get(
        "/specs/{number}", name="studio_spec", openapi_extra=VIEWER, response_class=HTMLResponse
    )
    def spec(request: Request, number: int, against: int | None = None) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        return renderer.page(request, "spec.html", spec_context(ws, number, against))


def document_context(
    ws: Workspace, name: str, number: int | None, against: int | None
) -> dict[str, Any]:
    versions = ws.metadata.documents.versions(ws.project.id, name)
    if not versions:
        raise NotFoundError(f"No document named {name!r}; see /documents.")
    current = _pick(versions, number, f"Document {name!r}")
    base = _base(versions, current, against, f"Document {name!r}")
    diff = None
    if base is not None:
        labels = f"v{base.version}", f"v{current.version}"
        diff = unified_diff(base.content, current.content, *labels)
    return {
        "title": f"Documents · {name}",
        "section": "documents",
        "name": name,
        "versions": versions[::-1],
        "current": current,
        "base": base,
        "html": render_markdown(current.content),
        "diff": diff,
    }


def _pick(versions: list[DocumentVersion], number: int | None, what: str) -> DocumentVersion:
    if number is None:
        return versions[-1]
    if 1 <= number <= len(versions):
        return versions[number - 1]
    raise NotFoundError(f"{what} has no version {number}; its versions are 1 to {len(versions)}.")


def _base(
    versions: list[DocumentVersion], current: DocumentVersion, against: int | None, what: str
) -> DocumentVersion | None:
    """The version to diff against: ``against``, else the one before ``current``."""
    if against is not None:
        return _pick(versions, against, what)
    return versions[current.version - 2] if current.version > 1 else None


def spec_context(ws: Workspace, number: int, against: int | None) -> dict[str, Any]:
    versions = ws.metadata.specs.list(ws.project.id)
    current = _spec_at(versions, number)
    base_number = against if against is not None else number - 1
    base = _spec_at(versions, base_number) if base_number >= 1 else None
    diff, problem = None, None
    if base is not None:
        try:
            diff = diff_specs(base.content, current.content, f"v{base_number}", f"v{number}")
        except SpecError as err:  # a stored text that no longer parses: show the text diff
            problem = str(err)
    return {
        "title": f"Spec · version {number}",
        "section": "documents",
        "versions": list(enumerate(versions, start=1))[::-1],
        "number": number,
        "current": current,
        "base": base,
        "base_number": base_number,
        "diff": diff,
        "text_diff": unified_diff(base.content, current.content) if base and not diff else None,
        "problem": problem,
    }


def _spec_at(versions: list[SpecVersion], number: int) -> SpecVersion:
    if 1 <= number <= len(versions):
        return versions[number - 1]
    raise NotFoundError(
        f"The spec has no version {number}; its versions are 1 to {len(versions)}."
        if versions
        else "No spec version is stored yet: `meguri spec save` stores one."
    )
