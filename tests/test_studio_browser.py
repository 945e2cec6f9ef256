"""The Studio in a real browser: Playwright driving Debian's chromium (``/usr/bin/chromium``;
no browser is ever downloaded), against the Studio served by uvicorn on loopback under a strict
Content-Security-Policy (``script-src 'self'``), so an inline script would be a console error.

Each page loads without console errors and with every Plotly figure drawn; the key flows work:
find a run with the filter (htmx swaps the table, the URL follows), sort and page, compare two
runs, promote a model (and see a failing gate refuse another), see a firing alert. Screenshots
go to ``$MEGURI_SCREENSHOTS`` (else a pytest temporary folder); their paths are printed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test_studio_support import XSS, World, build_world, serving, studio_app, sweep_metrics

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright drives the browser")
expect = sync_api.expect
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = build_world(tmp_path_factory.mktemp("studio-browser"))
    yield built
    built.ws.close()


@pytest.fixture(scope="module")
def base_url(world: World) -> Iterator[str]:
    with serving(studio_app(world.ws)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("MEGURI_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Tab:
    """A browser page that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any, base_url: str, shots: Path) -> None:
        self.context = browser.new_context(
            base_url=base_url, viewport={"width": 1400, "height": 900}
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.shots = shots
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, url: str) -> Any:
        response = self.page.goto(url, wait_until="load")
        assert response is not None and response.status == 200, url
        self.figures_drawn()
        return self.page

    def figures_drawn(self) -> int:
        """Wait until every figure of the page is drawn by Plotly; their number. (Waits use
        locators: a predicate in JavaScript would be an eval, which the page's CSP refuses.)"""
        count = int(self.page.locator("[data-figure]").count())
        drawn = self.page.locator("[data-figure]:has(.main-svg)")
        expect(drawn).to_have_count(count, timeout=30_000)
        return count

    def rows(self, count: int) -> list[str]:
        """Wait for the runs table to have ``count`` rows; the runs' names."""
        expect(self.page.locator("table.runs tbody tr")).to_have_count(count)
        return list(self.page.locator("table.runs tbody tr td:nth-child(2)").all_inner_texts())

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path


@pytest.fixture
def tab(browser: Any, base_url: str, shots: Path) -> Iterator[Tab]:
    opened = Tab(browser, base_url, shots)
    yield opened
    opened.context.close()
    assert opened.errors == [], opened.errors


def test_every_page_loads_without_console_errors(tab: Tab, world: World) -> None:
    one, two = world.sweep_runs[:2]
    pages = {
        "01-overview": "/", "02-data": "/data", "03-dataset": "/data/breast_cancer",
        "04-lineage": "/data/breast_cancer-train", "05-experiments": "/experiments",
        "06-runs": f"/experiments/{world.sweep.id}", "07-run": f"/runs/{world.passing.run_id}",
        "08-compare": f"/compare?runs={one.id}&runs={two.id}", "09-models": "/models",
        "10-model": "/models/bc", "11-deployments": "/deployments",
        "12-deployment": "/deployments/production", "13-monitoring": "/monitoring",
        "14-monitoring-production": "/monitoring/production", "15-documents": "/documents",
        "16-document": "/documents/design-notes", "17-spec-diff": "/specs/2", "18-audit": "/audit",
    }  # fmt: skip
    drawn = {}
    for name, url in pages.items():
        tab.open(url)
        drawn[name] = tab.figures_drawn()
        assert tab.errors == [], (url, tab.errors)
        tab.shot(name)
    assert drawn["03-dataset"] >= 30 and drawn["07-run"] >= 4
    assert drawn["14-monitoring-production"] >= 5
    # The card is sandboxed: shown in its frame, with no access to the page.
    tab.open("/models/bc")
    frame = tab.page.frame_locator("iframe.card-frame")
    assert frame.locator("h1").first.inner_text().startswith("Model card")


def test_find_a_run_sort_and_page(tab: Tab, world: World) -> None:
    page = tab.open(f"/experiments/{world.sweep.id}")
    page.fill("#runs-filter", "params.lr = '0.1' and metrics.accuracy >= 0.78")
    with page.expect_response(lambda r: "q=params.lr" in r.url):
        page.press("#runs-filter", "Enter")
    finals = {f"trial-{i:02d}": sweep_metrics(i) for i in range(30)}
    expected = {n for n, (p, points) in finals.items() if p["lr"] == "0.1" and points[4][1] >= 0.78}
    names = tab.rows(len(expected))
    assert set(names) == expected and "q=params.lr" in page.url
    assert page.locator("header.top").count() == 1  # a swap, not a nested page
    # Choose a column: ticking it re-renders the table with it (the chooser stays open).
    page.click("details#columns summary")
    with page.expect_response(lambda r: "cols=tags.team" in r.url):
        page.check("input[name=cols][value='tags.team']")
    expect(page.locator("table.runs thead")).to_contain_text("tags.team")
    expect(page.locator("details#columns")).to_have_attribute("open", "")
    tab.shot("20-find-a-run")
    # Back restores the whole page as it was before the column was chosen (htmx pushed both
    # URLs; a page missing from htmx's history cache is loaded again, whole).
    page.go_back()
    expect(page).to_have_url(re.compile(r"q=params\.lr(?!.*tags\.team)"))
    expect(page.locator("header.top")).to_have_count(1)
    assert set(tab.rows(len(expected))) == expected
    expect(page.locator("table.runs thead")).not_to_contain_text("tags.team")
    # Sort by a column header (htmx again), then page through the whole experiment.
    page.fill("#runs-filter", "")
    with page.expect_response(lambda r: "/experiments/" in r.url):
        page.press("#runs-filter", "Enter")
    with page.expect_response(lambda r: "sort=name" in r.url):
        page.click("table.runs thead a:text('name')")
    expect(page.locator("table.runs thead")).to_contain_text("name ▼")
    everything = sorted([f"trial-{i:02d}" for i in range(30)] + [XSS], reverse=True)
    assert tab.rows(31) == everything
    page.select_option("select[name=size]", "25")
    assert tab.rows(25) == everything[:25]
    with page.expect_response(lambda r: "after=" in r.url):
        page.click("a[rel=next]")
    assert tab.rows(6) == everything[25:]
    assert "runs 26–31" in page.inner_text("#runs-range")
    tab.shot("21-sorted-page-2")


def test_compare_two_runs(tab: Tab, world: World) -> None:
    page = tab.open(f"/experiments/{world.sweep.id}")
    one, two = world.sweep_runs[4], world.sweep_runs[5]
    page.check(f"input[value='{one.id}']")
    page.check(f"input[value='{two.id}']")
    page.click("button[form=compare-form]")
    page.wait_for_url("**/compare?**")
    assert tab.figures_drawn() >= 2
    heads = page.locator("table.compare thead th").all_inner_texts()
    assert {h.split()[0] for h in heads[1:]} == {"trial-04", "trial-05"}
    tab.shot("22-compare")


def test_promote_a_model(tab: Tab, world: World) -> None:
    page = tab.open("/models/bc?version=1")
    page.select_option("select[name=alias]", "production")
    page.click("#promote")
    page.wait_for_url("**promoted=production**")
    assert page.inner_text("#notice") == "bc@1 is now 'production'."
    production = world.ws.metadata.models.find_alias(world.passing.model_id, "production")
    assert production is not None and production.id == world.passing.id
    tab.shot("23-promoted")
    page = tab.open("/models/bc?version=2")
    page.click("#promote")
    page.wait_for_load_state("networkidle")
    assert "latency-staging" in page.inner_text("#notice")  # the failing gate, named
    tab.shot("24-promotion-refused")
    refused = "the server responded with a status of 409 (Conflict)"  # as it should
    assert [e for e in tab.errors if refused in e] and tab.errors[0].endswith(refused)
    tab.errors[:] = [e for e in tab.errors if refused not in e]


def test_see_an_alert(tab: Tab) -> None:
    page = tab.open("/monitoring")
    firing = page.locator("table.alerts tr.firing")
    assert firing.count() == 1 and "drift-share-high" in firing.inner_text()
    page.click("table.alerts tr.firing a")
    page.wait_for_url("**/monitoring/production")
    assert tab.figures_drawn() >= 5
    assert "drift-share-high" in page.inner_text("#firing")
    tab.shot("25-alert")
