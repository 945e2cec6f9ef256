"""Access control of the platform server, attacked over a real socket: routes without a rule,
anonymous callers on every route, escalation between roles and projects, forged, revoked and
expired tokens, session cookies (flags, tampering, logout), CSRF, Origin, Host and the login
rate limit. Each refusal is a clear 4xx and leaves the stores as they were."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from meguri.serve._server import app_in_background
from meguri.server import Access, ServerSettings, access, create_app, route_table
from meguri.store import Workspace, open_workspace

PASSWORD = "correct horse battery staple"
PUBLIC = {("POST", "/login"), ("GET", "/api/v1/openapi.json")}


@dataclass
class Env:
    ws: Workspace
    url: str
    app: object
    tokens: dict[str, str]

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)  # type: ignore[arg-type]

    def bearer(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def add_user(ws: Workspace, name: str, role: str | None, *, admin: bool = False) -> str:
    ws.metadata.access.create_user(name, by="owner", password=PASSWORD, is_admin=admin)
    if role is not None:
        ws.metadata.access.set_role(ws.project.id, name, role, by="owner")
    return ws.metadata.access.create_token(name, name="test", by="owner")[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    ws = open_workspace(tmp_path_factory.mktemp("auth"), project="demo", user="owner")
    ws.metadata.projects.ensure("other", "owner")
    tokens = {role: add_user(ws, role, role) for role in ("viewer", "editor", "admin")}
    tokens["root"] = add_user(ws, "root", None, admin=True)
    settings = ServerSettings(secret_key="k" * 48, login_max_failures=5, login_window_s=60)
    app = create_app(settings, workspace=ws)
    with app_in_background(app) as url:
        yield Env(ws, url, app, tokens)
    ws.close()


def snapshot(ws: Workspace) -> tuple[object, ...]:
    """What an attack must not change: the audit chain's head, every experiment and run, the
    models, datasets, users, tokens and the artifact files."""
    meta = ws.metadata
    projects = meta.projects.list()
    experiments = [e for p in projects for e in meta.runs.list_experiments(p.id)]
    blobs = sorted(p.name for p in (ws.root / ".meguri" / "artifacts").rglob("*") if p.is_file())
    return (
        meta.audit.head(),
        [e.id for e in experiments],
        meta.runs.count([e.id for e in experiments]) if experiments else 0,
        [
            (p.name, len(meta.models.list_models(p.id)), len(meta.datasets.list(p.id)))
            for p in projects
        ],
        [
            (u.name, u.disabled, len(meta.access.list_tokens(u.name)))
            for u in meta.access.list_users()
        ],
        blobs,
    )


def concrete(path: str) -> str:
    """A route's path with sample values: the project 'demo', anything else 'x'."""
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: "demo" if m[1] == "project" else "x", path)


def rules(env: Env) -> list[tuple[str, str, Access | None]]:
    table = route_table(env.app.router.routes)  # type: ignore[attr-defined]
    return [(m, r.path, r.rule) for r in table for m in r.methods]


def test_public_routes_are_exactly_login_and_the_openapi_document(env: Env) -> None:
    assert {(m, p) for m, p, rule in rules(env) if rule is Access.PUBLIC} == PUBLIC
    assert all(rule is not None for _, _, rule in rules(env))


def test_a_route_added_without_a_rule_is_refused_to_everyone(env: Env) -> None:
    calls: list[str] = []
    app = env.app

    @app.post("/api/v1/projects/{project}/unguarded")  # type: ignore[attr-defined]
    def unguarded(project: str) -> dict[str, str]:
        calls.append(project)
        return {"ran": project}

    def raw(request: object) -> PlainTextResponse:
        calls.append("raw")
        return PlainTextResponse("ran")

    app.router.routes.append(Route("/raw", raw, methods=["GET"]))  # type: ignore[attr-defined]
    misdeclared = {"openapi_extra": {"x-meguri-access": "everyone"}}
    app.get("/api/v1/typo", **misdeclared)(lambda: calls.append("typo"))  # type: ignore[attr-defined]
    with env.client() as http:
        for method, path in (
            ("POST", "/api/v1/projects/demo/unguarded"),
            ("GET", "/raw"),
            ("GET", "/api/v1/typo"),
        ):
            assert http.request(method, path).status_code == 401
            answer = http.request(method, path, headers=env.bearer("root"))
            assert answer.status_code == 403, (path, answer.text)
            assert answer.json()["error"]["code"] == "forbidden"
    assert calls == []


def test_every_route_refuses_anonymous_callers_and_writes_nothing(env: Env) -> None:
    before = snapshot(env.ws)
    with env.client() as http:
        for method, path, rule in rules(env):
            if rule is Access.PUBLIC:
                continue
            answer = http.request(method, concrete(path), json={})
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer")
            if method == "HEAD":
                continue
            body = answer.json()
            assert body.get("error", body).get("code", body.get("error_code")) in (
                "unauthenticated",
                "UNAUTHENTICATED",
            )
    assert snapshot(env.ws) == before


@pytest.mark.parametrize(
    ("who", "refused"),
    [
        ("viewer", {Access.EDITOR, Access.ADMIN, Access.PLATFORM_ADMIN}),
        ("editor", {Access.ADMIN, Access.PLATFORM_ADMIN}),
        ("admin", {Access.PLATFORM_ADMIN}),
    ],
)
def test_no_role_reaches_a_route_above_it(env: Env, who: str, refused: set[Access]) -> None:
    before = snapshot(env.ws)
    with env.client(headers=env.bearer(who)) as http:
        for method, path, rule in rules(env):
            if rule in refused:
                answer = http.request(method, concrete(path), json={"role": "admin"})
                assert answer.status_code == 403, (who, method, path, answer.text)
    assert snapshot(env.ws) == before


def test_a_role_holds_on_its_own_project_only(env: Env) -> None:
    before = snapshot(env.ws)
    with env.client(headers=env.bearer("admin")) as http:
        assert http.get("/api/v1/projects/demo/runs").status_code == 200
        assert http.get("/api/v1/projects/other/runs").status_code == 403
        grab = http.put("/api/v1/projects/other/roles/admin", json={"role": "admin"})
        assert grab.status_code == 403
        assert (
            http.get("/projects/other/api/2.0/mlflow/experiments/get?experiment_id=0").status_code
            == 403
        )
        assert http.get("/api/v1/projects/nowhere/runs").status_code == 404
    assert snapshot(env.ws) == before
    assert env.ws.metadata.access.role_of(env.ws.metadata.projects.get("other").id, "admin") is None


def test_forged_malformed_revoked_expired_and_disabled_tokens_are_refused(env: Env) -> None:
    access = env.ws.metadata.access
    access.create_user("temp", by="owner")
    access.set_role(env.ws.project.id, "temp", "editor", by="owner")
    revoked, revoked_secret = access.create_token("temp", name="r", by="owner")
    access.revoke_token(revoked.id, by="owner")
    _, expiring = access.create_token("temp", name="e", by="owner", expires_at=time.time() + 0.5)
    _, disabled = access.create_token("temp", name="d", by="owner")
    good = env.tokens["editor"]
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    time.sleep(0.6)
    access.create_user("gone", by="owner")
    _, gone = access.create_token("gone", name="g", by="owner")
    access.disable_user("gone", by="owner")
    before = snapshot(env.ws)
    with env.client() as http:
        for header in (
            f"Bearer {forged}",
            f"Bearer {revoked_secret}",
            f"Bearer {expiring}",
            f"Bearer {gone}",
            f"Basic {good}",
            "Bearer",
            f"Bearer {good}x",
            f"Token {good}",
        ):
            answer = http.post(
                "/api/v1/projects/demo/runs", json={}, headers={"Authorization": header}
            )
            assert answer.status_code == 401, header
            assert answer.json()["error"]["code"] == "bad_token"
        assert (
            http.get("/api/v1/me", headers={"Authorization": f"Bearer {disabled}"}).status_code
            == 200
        )
    assert snapshot(env.ws) == before


def _login(
    http: httpx.Client, user: str, password: str = PASSWORD, **headers: str
) -> httpx.Response:
    return http.post("/login", json={"username": user, "password": password}, headers=headers)


def test_login_cookie_flags_and_csrf_on_every_cookie_write(env: Env) -> None:
    with env.client() as http:
        signed = _login(http, "editor")
        assert signed.status_code == 200
        cookies = signed.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("meguri_session="))
        csrf_cookie = next(c for c in cookies if c.startswith("meguri_csrf="))
        assert "HttpOnly" in session and "SameSite=lax" in session and "Secure" not in session
        assert "HttpOnly" not in csrf_cookie
        token, origin = signed.json()["csrf_token"], {"Origin": env.url}
        before = snapshot(env.ws)
        for headers in (
            {},
            origin,
            {**origin, "X-CSRF-Token": "wrong"},
            {"X-CSRF-Token": token},
            {"X-CSRF-Token": token, "Origin": "http://evil.example"},
            {"X-CSRF-Token": token, "Origin": "null"},
        ):
            refused = http.post("/api/v1/projects/demo/runs", json={}, headers=headers)
            assert refused.status_code == 403, headers
            assert refused.json()["error"]["code"] in ("csrf", "bad_origin")
        assert snapshot(env.ws) == before
        ok = http.post(
            "/api/v1/projects/demo/runs", json={}, headers={**origin, "X-CSRF-Token": token}
        )
        assert ok.status_code == 201 and ok.json()["created_by"] == "editor"
        referer = {"Referer": env.url + "/runs", "X-CSRF-Token": token}
        assert http.post("/api/v1/projects/demo/runs", json={}, headers=referer).status_code == 201
        assert http.get("/api/v1/me").json()["csrf_token"] == token
        assert (
            http.post(
                "/api/v1/me/tokens",
                json={"name": "laptop"},
                headers={**origin, "X-CSRF-Token": token},
            ).status_code
            == 201
        )
        form = {"csrf_token": token}
        assert http.post("/logout", data=form, headers=origin).status_code == 204


def test_secure_cookies_over_https_settings(env: Env, tmp_path: Path) -> None:
    ws = open_workspace(tmp_path, project="p", user="owner")
    ws.metadata.access.create_user("ana", by="owner", password=PASSWORD)
    app = create_app(ServerSettings(secret_key="k" * 48, secure_cookies=True), workspace=ws)
    try:
        with app_in_background(app) as url, httpx.Client(base_url=url) as http:
            cookies = _login(http, "ana").headers.get_list("set-cookie")
            assert all("Secure" in c for c in cookies)
    finally:
        ws.close()


def test_tampered_and_logged_out_session_cookies_are_refused(env: Env) -> None:
    with env.client() as http:
        signed = _login(http, "viewer")
        cookie = http.cookies["meguri_session"]
        payload, signature = cookie.split(".")
        import base64

        raw = base64.urlsafe_b64decode(payload + "==").replace(b'"viewer"', b'"root"')
        forged = base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + signature
        headers = {"X-CSRF-Token": signed.json()["csrf_token"], "Origin": env.url}
        assert http.post("/logout", headers=headers).status_code == 204
    with env.client(cookies={"meguri_session": forged}) as http:
        assert http.get("/api/v1/users").status_code == 401
    with env.client(cookies={"meguri_session": cookie}) as http:  # replayed after logout
        assert http.get("/api/v1/me").status_code == 401


def test_a_signed_out_cookie_stays_void_after_a_restart(env: Env) -> None:
    """Signing out is recorded in the store, not in the server's memory: a second server on
    the same store (a restart) refuses the copied cookie too."""
    with env.client() as http:
        signed = _login(http, "editor")
        cookie = http.cookies["meguri_session"]
        headers = {"X-CSRF-Token": signed.json()["csrf_token"], "Origin": env.url}
        assert http.post("/logout", headers=headers).status_code == 204
    settings = ServerSettings(secret_key="k" * 48)  # the same secret: the cookie still verifies
    with app_in_background(create_app(settings, workspace=env.ws)) as again:
        replay = httpx.get(f"{again}/api/v1/me", cookies={"meguri_session": cookie})
        assert replay.status_code == 401
        with httpx.Client(base_url=again) as http:  # while a fresh sign-in works there
            assert _login(http, "editor").status_code == 200
            assert http.get("/api/v1/me").status_code == 200


def test_a_password_change_signs_every_other_browser_out(env: Env) -> None:
    access = env.ws.metadata.access
    access.create_user("pat", by="owner", password=PASSWORD)
    with env.client() as laptop, env.client() as phone:
        assert _login(laptop, "pat").status_code == 200
        signed = _login(phone, "pat")
        assert laptop.get("/api/v1/me").status_code == 200
        new = "a brand new passphrase"
        headers = {"X-CSRF-Token": signed.json()["csrf_token"], "Origin": env.url}
        body = {"current": PASSWORD, "new": new}
        assert phone.post("/api/v1/me/password", json=body, headers=headers).status_code == 204
        assert laptop.get("/api/v1/me").status_code == 401  # the other browser is out
        assert phone.get("/api/v1/me").json()["name"] == "pat"  # the changer got a new session
    with env.client() as http:
        assert _login(http, "pat").status_code == 401
        assert _login(http, "pat", new).status_code == 200
    access.set_password("pat", "reset by an admin!", by="owner")
    with env.client(cookies=dict(http.cookies)) as http:  # an admin's reset voids it too
        assert http.get("/api/v1/me").status_code == 401


def test_tokens_cannot_mint_tokens(env: Env) -> None:
    with env.client(headers=env.bearer("editor")) as http:
        answer = http.post("/api/v1/me/tokens", json={"name": "more"})
    assert answer.status_code == 403
    assert len(env.ws.metadata.access.list_tokens("editor")) <= 2


def test_login_rate_limit_per_user_and_address(env: Env) -> None:
    with env.client() as http:
        for _ in range(5):
            assert _login(http, "admin", "wrong password here").status_code == 401
        limited = _login(http, "admin")  # even the right password is not checked now
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert "meguri_session" not in http.cookies
        assert _login(http, "viewer").status_code == 200  # another user is not blocked
        unknown = _login(http, "nobody", "wrong password here")
        assert unknown.status_code == 401 and "Wrong user name or password" in unknown.text


def test_login_redirects_only_to_this_server(env: Env) -> None:
    with env.client(headers={"Accept": "text/html"}) as http:
        for target, expected in (
            ("/runs?x=1", "/runs?x=1"),
            ("//evil.example", "/"),
            ("https://evil.example", "/"),
            ("/\\evil.example", "/"),
        ):
            form = {"username": "editor", "password": PASSWORD, "next": target}
            answer = http.post("/login", data=form)
            assert answer.status_code == 303 and answer.headers["location"] == expected


def test_host_and_login_origin_checks(env: Env) -> None:
    port = env.url.rsplit(":", 1)[1]
    with env.client() as http:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
            answer = http.get("/api/v1/openapi.json", headers={"Host": host})
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_host"
        assert (
            http.get(
                "/api/v1/me", headers={**env.bearer("viewer"), "Host": f"localhost:{port}"}
            ).status_code
            == 200
        )
        cross = _login(http, "editor", Origin="http://evil.example")
        assert cross.status_code == 403 and "meguri_session" not in http.cookies


def test_the_router_runs_only_a_route_whose_rule_was_checked(tmp_path: Path) -> None:
    """The second lock: a route the guard did not authorise (here one added to an included
    router after the app was built, which the guard has not seen) is refused after routing."""
    calls: list[str] = []
    extra = APIRouter()

    @extra.get("/extra/seen", openapi_extra=access(Access.AUTHENTICATED))
    def seen() -> dict[str, bool]:
        return {"ok": True}

    ws = open_workspace(tmp_path, project="p", user="owner")
    ws.metadata.access.create_user("ana", by="owner")
    token = ws.metadata.access.create_token("ana", name="t", by="owner")[1]
    app = create_app(ServerSettings(secret_key="k" * 48), workspace=ws, extra_routers=[extra])
    bearer = {"Authorization": f"Bearer {token}"}
    try:
        with app_in_background(app) as url, httpx.Client(base_url=url) as http:
            assert http.get("/extra/seen", headers=bearer).json() == {"ok": True}

            @extra.get("/extra/late", openapi_extra=access(Access.PUBLIC))
            def late() -> None:
                calls.append("late")

            assert http.get("/extra/late").status_code == 401
            assert http.get("/extra/late", headers=bearer).status_code == 403
    finally:
        ws.close()
    assert calls == []
