"""Rendering: one Jinja2 environment, its filters, the static files and the page response.

Autoescaping is on for every template (``autoescape=True``, not by file extension), so every
string a user typed (a run name, a spec description, a document) is escaped wherever it lands;
nothing a user wrote is ever compiled as a template. Data for the browser (Plotly figures)
travels in ``<script type="application/json">`` elements written by :func:`script_json`, whose
``<``, ``>`` and ``&`` are JSON escapes, so no ``</script>`` or ``<!--`` inside a name can end
the element. Pages carry no inline script at all: ``static/studio.js`` draws the figures, so
the Studio runs under a ``script-src 'self'`` Content-Security-Policy.
"""

from __future__ import annotations

import hashlib
import html
import math
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from meguri.studio._access import role_of

__all__ = ["Renderer", "StaticFiles", "script_json"]

_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def script_json(value: Any) -> Markup:
    """``value`` as JSON that is safe inside a ``<script>`` element (and inside HTML at all):
    no ``<``, ``>`` or ``&`` is left to end the element or start a comment."""
    text = orjson.dumps(value, option=_JSON_OPTIONS).decode()
    for raw, escaped in _ESCAPES.items():
        text = text.replace(raw, escaped)
    return Markup(text)  # every markup character is escaped above


def plot_text(value: object) -> str:
    """Text for Plotly, which reads a subset of HTML in titles and names: escape it."""
    return html.escape(str(value), quote=False)


def when(stamp: float | None) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS`` UTC ('' for none)."""
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def num(value: object, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; '' for none, NaN or non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "" if math.isnan(value) else str(value)
    return f"{value:.{digits}g}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


# -- static files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaticFile:
    """One file served under ``/static/``: its bytes and their sha256 (the cache-busting
    version in its URL)."""

    name: str
    content: bytes
    media_type: str

    @cached_property
    def version(self) -> str:
        return hashlib.sha256(self.content).hexdigest()[:16]


class StaticFiles:
    """The fixed set of files the Studio serves: its own (``static/``) and plotly.js from the
    installed ``plotly`` package. Only these names are served, so no request path ever
    reaches the file system."""

    _OWN = ("favicon.svg", "htmx.min.js", "studio.css", "studio.js")

    def __init__(self) -> None:
        self._files: dict[str, StaticFile] = {}

    def get(self, name: str) -> StaticFile | None:
        if name not in self._files:
            content = self._read(name)
            if content is None:
                return None
            media = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self._files[name] = StaticFile(name, content, media)
        return self._files[name]

    def _read(self, name: str) -> bytes | None:
        if name in self._OWN:
            return (resources.files("meguri.studio") / "static" / name).read_bytes()
        if name == "plotly.min.js":
            return (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
        return None


# -- the environment -----------------------------------------------------------------------------


def _loader(templates_dir: str | Path | None) -> jinja2.BaseLoader:
    package = jinja2.PackageLoader("meguri.studio", "templates")
    if templates_dir is None:
        return package
    return jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(templates_dir)), package])


@jinja2.pass_context
def _url(context: Mapping[str, Any], name: str, /, **params: object) -> str:
    """The path of route ``name`` with ``params`` (each quoted whole, so a name with ``?`` or
    ``#`` stays one path segment)."""
    request: Request = context["request"]
    quoted = {k: quote(str(v), safe="") for k, v in params.items()}
    return str(request.url_for(name, **quoted).path)


def _query(**params: object) -> str:
    """``?k=v&...`` from ``params`` (lists repeat the key; None values are left out)."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        pairs += [(key, str(v)) for v in values if v is not None and v != ""]
    return "?" + urlencode(pairs) if pairs else ""


class Renderer:
    """Renders the Studio's templates into responses."""

    def __init__(self, templates_dir: str | Path | None, static: StaticFiles) -> None:
        self.static = static
        env = jinja2.Environment(
            loader=_loader(templates_dir),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters |= {
            "when": when,
            "num": num,
            "duration": duration,
            "script_json": script_json,
        }
        env.globals |= {"url": _url, "query": _query, "static": self._static_url}
        self.env = env

    @jinja2.pass_context
    def _static_url(self, context: Mapping[str, Any], name: str) -> str:
        found = self.static.get(name)
        version = found.version if found is not None else "missing"
        return f"{_url(context, 'studio_static', name=name)}?v={version}"

    def page(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        status_code: int = 200,
    ) -> HTMLResponse:
        """The rendered page, or only its ``fragment`` block for an htmx request that asks for
        one (the runs table re-renders itself without the page around it)."""
        values = {**_common(request), **context}
        tmpl = self.env.get_template(template)
        if _wants_fragment(request) and "fragment" in tmpl.blocks:
            body = "".join(tmpl.blocks["fragment"](tmpl.new_context(values)))
        else:
            body = tmpl.render(values)
        headers = {"Cache-Control": "no-store", "Vary": "HX-Request"}
        return HTMLResponse(body, status_code=status_code, headers=headers)


def _wants_fragment(request: Request) -> bool:
    """An htmx request, except the one htmx sends to restore a page missing from its history
    cache, which needs the whole page."""
    headers = request.headers
    return (
        headers.get("HX-Request") == "true" and headers.get("HX-History-Restore-Request") != "true"
    )


def _common(request: Request) -> dict[str, Any]:
    """What every page shows: the user, their role and the CSRF token for forms."""
    user = getattr(request.state, "user", None)
    return {
        "request": request,
        "user_name": getattr(user, "name", None),
        "role": role_of(request),
        "csrf_token": getattr(request.state, "csrf_token", None) or "",
        "project": request.app.state.workspace.project,
    }
