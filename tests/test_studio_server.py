"""The Studio mounted in the platform server, as ``meguri ui`` composes them: behind the real
access middleware, every Studio route declares its rule; a user signs in with a password, reads
the pages with the session cookie, and promotes with the CSRF token the page carries, recorded
in the audit log under their name. A viewer reads but cannot promote; nobody signed in reads
nothing but the static files."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from meguri.studio import create_router
from test_studio_support import World, build_world, serving

server = pytest.importorskip("meguri.server", reason="the platform server mounts the Studio")
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = build_world(tmp_path_factory.mktemp("studio-server"))
    access = built.ws.metadata.access
    for name, role in (("carol", "admin"), ("vic", "viewer")):
        access.create_user(name, by="test", password=PASSWORD)
        access.set_role(built.ws.project.id, name, role, by="test")
    yield built
    built.ws.close()


@pytest.fixture(scope="module")
def app(world: World) -> object:
    settings = server.ServerSettings(root=world.ws.root)
    return server.create_app(settings, workspace=world.ws, extra_routers=[create_router()])


@pytest.fixture(scope="module")
def base_url(app: object) -> Iterator[str]:
    with serving(app) as url:  # type: ignore[arg-type]
        yield url


@contextmanager
def _signed_in(base_url: str, name: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"Origin": base_url}, timeout=60) as client:
        response = client.post("/login", data={"username": name, "password": PASSWORD})
        assert response.status_code == 200, response.text
        yield client


def _csrf(page: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert found is not None and found.group(1)
    return found.group(1)


def test_every_studio_route_declares_its_rule(app: object) -> None:
    from meguri.server._access import route_table

    table = route_table(app.routes)  # type: ignore[attr-defined]
    rules = {r.name: str(r.rule) for r in table if r.name.startswith("studio_")}
    assert len(rules) == 23 and "None" not in rules.values()
    assert rules.pop("studio_static") == "public" and rules.pop("studio_promote") == "admin"
    assert rules.pop("studio_login") == "public"
    assert set(rules.values()) == {"viewer"}


def test_sign_in_read_and_promote(base_url: str, world: World) -> None:
    with httpx.Client(base_url=base_url) as nobody:
        assert nobody.get("/").status_code == 401
        assert nobody.get("/static/studio.css").status_code == 200
    with _signed_in(base_url, "carol") as carol:
        for url in ("/", "/data", f"/experiments/{world.sweep.id}", "/models/bc", "/audit"):
            assert carol.get(url).status_code == 200, url
        token = _csrf(carol.get("/models/bc").text)
        forged = carol.post("/models/bc/versions/1/promote", data={"csrf_token": "forged"})
        assert forged.status_code == 403
        done = carol.post("/models/bc/versions/1/promote", data={"csrf_token": token})
        assert done.status_code == 303, done.text
    event = world.ws.metadata.audit.events(newest_first=True, limit=1)[0]
    assert (event.actor, event.action, event.subject_id) == (
        "carol",
        "model.promoted",
        world.passing.id,
    )


def test_a_viewer_reads_but_cannot_promote(base_url: str) -> None:
    with _signed_in(base_url, "vic") as vic:
        page = vic.get("/models/bc")
        assert page.status_code == 200 and 'id="promote-form"' not in page.text
        refused = vic.post("/models/bc/versions/1/promote", data={"csrf_token": _csrf(page.text)})
        assert refused.status_code == 403


def test_a_browser_is_sent_to_sign_in_and_back(base_url: str) -> None:
    """Chromium (Debian's, never a downloaded one) opens a page without a session, lands on the
    sign-in page, signs in and is taken back to the page it asked for, with no console error."""
    from pathlib import Path

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright drives the browser")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("needs Debian's chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium))
        try:
            page = browser.new_page(base_url=base_url)
            errors: list[str] = []
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.goto("/models", wait_until="load")
            assert "/login?next=%2Fmodels" in page.url
            page.fill("input[name=username]", "carol")
            page.fill("input[name=password]", "wrong password, twelve+")
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r".*/login\?failed=1.*"))
            assert page.locator("#login-failed").is_visible()
            page.fill("input[name=username]", "carol")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r".*/models$"))
            assert "carol" in page.locator("header .who").inner_text()
            assert errors == [], errors
        finally:
            browser.close()
