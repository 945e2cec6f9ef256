"""Who may call which route: one rule declared on each route, deny where there is none.

A route declares its rule where it is registered, in its OpenAPI extension
``x-meguri-access`` (so the OpenAPI document shows what each operation needs)::

    @router.get("/runs/{run_id}", openapi_extra=access(Access.VIEWER))

Routes that are not FastAPI routes (a ``Mount`` of static files) carry the attribute
``meguri_access``. Packages that must not import the server (the Studio) write the same
string: ``openapi_extra={"x-meguri-access": "viewer"}``.

The levels, from least to most:

==================  ===========================================================================
``public``          anyone, signed in or not (``POST /login``, the OpenAPI document)
``authenticated``   any signed-in, enabled user (their own tokens, ``/logout``)
``viewer``          a role on the route's project: reads
``editor``          writes runs, datasets, model versions' descriptions, feedback
``admin``           promotes, deploys, rolls back, manages the project's roles
``platform_admin``  manages users (``User.is_admin``; a platform admin is admin everywhere)
==================  ===========================================================================

The project is the route's ``{project}`` path parameter, else the server's default project.
:func:`route_table` lists every route with its rule; a route without one is refused for every
caller (the middleware answers 403 once signed in, 401 before), which a test checks by adding a
route without a rule.

Two locks: the middleware finds the route as the router will, before anything runs, and checks
its rule; then an app-wide dependency (:func:`verify_routed`) checks that the route FastAPI
actually runs is the one that was authorised, so that any difference between the two ways of
matching refuses the request (403) instead of running it under another route's rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import HTTPException, Request
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from meguri.store.metadata import ROLES

__all__ = [
    "ACCESS_KEY",
    "ROUTED_KEY",
    "Access",
    "access",
    "route_rule",
    "route_table",
    "satisfies",
    "verify_routed",
]

ACCESS_KEY = "x-meguri-access"
#: Where the middleware notes, in the request's state, the route it authorised.
ROUTED_KEY = "meguri_authorised_route"


class Access(StrEnum):
    PUBLIC = "public"
    AUTHENTICATED = "authenticated"
    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"
    PLATFORM_ADMIN = "platform_admin"


_ROLE_RANK = {Access.VIEWER: 1, Access.EDITOR: 2, Access.ADMIN: 3}


def access(level: Access) -> dict[str, Any]:
    """The ``openapi_extra`` that declares a route's rule."""
    return {ACCESS_KEY: level.value}


def route_rule(route: BaseRoute) -> Access | None:
    """The rule declared on ``route``, or None (deny). An unknown value also denies."""
    extra = getattr(route, "openapi_extra", None)
    raw = extra.get(ACCESS_KEY) if isinstance(extra, dict) else None
    raw = raw if raw is not None else getattr(route, "meguri_access", None)
    try:
        return Access(raw) if raw is not None else None
    except ValueError:
        return None


def satisfies(role: str | None, needed: Access) -> bool:
    """Whether a project ``role`` (viewer, editor, admin or None) meets the project level
    ``needed``."""
    rank = _ROLE_RANK.get(Access(role), 0) if role in ROLES else 0
    return rank >= _ROLE_RANK[needed]


@dataclass(frozen=True)
class RouteRule:
    path: str
    methods: tuple[str, ...]
    rule: Access | None
    name: str


def route_table(routes: list[BaseRoute]) -> list[RouteRule]:
    """Every route with its methods and rule (None: denied to all), in routing order."""
    table = []
    for candidate, declared in _flattened(routes):
        methods = tuple(sorted(getattr(candidate, "methods", None) or ("*",)))
        path = str(getattr(candidate, "path_format", None) or getattr(candidate, "path", ""))
        name = getattr(candidate, "name", "") or ""
        table.append(RouteRule(path, methods, route_rule(declared), name))
    return table


@dataclass(frozen=True)
class Matched:
    """The route a request goes to, its rule and path parameters; ``route`` is None when no
    route matches the path (the router answers 404) and ``partial`` when only the method
    differs (405)."""

    route: BaseRoute | None
    rule: Access | None
    path_params: dict[str, Any]
    partial: bool = False


def _flattened(routes: list[BaseRoute]) -> Iterator[tuple[Any, BaseRoute]]:
    """Each route the router can pick (routes of included routers flattened) with the route
    as declared (which carries the rule)."""
    for context in iter_route_contexts(routes):
        yield context, context.original_route


_Matcher = Callable[[Scope], tuple[Match, Scope]]
#: Top-level routes (held, so their ids stay theirs) -> their flattened matchers.
_cache: dict[tuple[int, ...], tuple[tuple[BaseRoute, ...], list[tuple[_Matcher, BaseRoute]]]] = {}


def _matchers(routes: list[BaseRoute]) -> list[tuple[_Matcher, BaseRoute]]:
    """The flattened routes' ``matches`` methods, rebuilt when the app's routes change. A
    route added to an already included router is not seen until then: the router runs it, and
    :func:`verify_routed` refuses it, since no rule of it was checked (it fails closed)."""
    key = tuple(map(id, routes))
    found = _cache.get(key)
    if found is None:
        flat = [(candidate.matches, declared) for candidate, declared in _flattened(routes)]
        if len(_cache) > 64:
            _cache.clear()
        found = _cache[key] = (tuple(routes), flat)
    return found[1]


def match_route(routes: list[BaseRoute], scope: Scope) -> Matched:
    """The route the router will pick for ``scope``, found the same way (first full match in
    order; else the first that matches all but the method). The app re-checks after routing
    that the route it runs is this one (:func:`verify_routed`)."""
    partial: BaseRoute | None = None
    for matches, declared in _matchers(routes):
        found, child = matches(scope)
        if found is Match.FULL:
            return Matched(declared, route_rule(declared), dict(child.get("path_params", {})))
        if found is Match.PARTIAL and partial is None:
            partial = declared
    if partial is not None:
        return Matched(partial, route_rule(partial), {}, partial=True)
    return Matched(None, None, {})


def verify_routed(request: Request) -> None:
    """An app-wide dependency, the second lock: the route FastAPI runs must be the one the
    middleware authorised (else 403). Should the middleware's matching ever differ from the
    router's, the request is refused instead of running under another route's rule."""
    authorised = request.scope.get("state", {}).get(ROUTED_KEY)
    routed = request.scope.get("route")
    if authorised is None or routed is None or authorised is not routed:
        raise HTTPException(403, "This route was not authorised.")
