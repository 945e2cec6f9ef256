"""The Studio's pages over HTTP, on a project built with the real SDK (see
``test_studio_support``): each page renders, shows what the store holds, refuses what it must,
and escapes what users wrote."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from importlib import resources

import httpx
import pytest
from fastapi import FastAPI

from test_studio_support import (
    SWEEP_RUNS,
    XSS,
    Caller,
    World,
    build_world,
    figures,
    parse,
    serving,
    studio_app,
    sweep_metrics,
    window_figures,
)

HTMX_SHA256 = "e209dda5c8235479f3166defc7750e1dbcd5a5c1808b7792fc2e6733768fb447"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = build_world(tmp_path_factory.mktemp("studio"))
    yield built
    built.ws.close()


@pytest.fixture(scope="module")
def app(world: World) -> FastAPI:
    return studio_app(world.ws)


@pytest.fixture(scope="module")
def base_url(app: FastAPI) -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
def client(app: FastAPI, base_url: str) -> Iterator[httpx.Client]:
    app.state.caller = Caller()  # ann, project admin, with a CSRF token
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c


def page_urls(world: World) -> list[str]:
    one, two = world.sweep_runs[:2]
    return [
        "/", "/data", "/data/breast_cancer", "/data/breast_cancer-train", "/experiments",
        f"/experiments/{world.sweep.id}", f"/runs/{one.id}", f"/runs/{world.passing.run_id}",
        f"/compare?runs={one.id}&runs={two.id}", "/models", "/models/bc", "/deployments",
        "/deployments/production", "/monitoring", "/monitoring/production", "/documents",
        "/documents/design-notes", "/specs/1", "/specs/2", "/audit",
    ]  # fmt: skip


def test_every_page_renders(client: httpx.Client, world: World) -> None:
    for url in page_urls(world):
        response = client.get(url)
        assert response.status_code == 200, (url, response.text[:500])
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["cache-control"] == "no-store"
        assert parse(response.text).find_all("h1"), url


def test_pages_carry_no_inline_script(client: httpx.Client, world: World) -> None:
    """Every <script> is either a file of /static/ or JSON data: the pages run under a
    script-src 'self' policy."""
    for url in page_urls(world):
        for script in parse(client.get(url).text).find_all("script"):
            src, kind = script.attrs.get("src", ""), script.attrs.get("type")
            assert src.startswith("/static/") or kind == "application/json", (url, script)


# -- overview ------------------------------------------------------------------------------------


def test_traceability_matrix_follows_each_criterion_to_its_checks(
    client: httpx.Client, world: World
) -> None:
    page = parse(client.get("/").text)
    rows = {c: page.by_id(f"criterion-{c}").rows() for c in ("drift-production",
            "latency-staging", "recall-test", "auc-test")}  # fmt: skip
    # Production: the newest check is the last window's, which drifted (0.66 > 0.3).
    drift = rows["drift-production"]
    assert "drift_share <= 0.3 on production" in drift[0][1]
    assert drift[0][2].startswith("fail") and "12 checks, newest 8 shown" in drift[0][2]
    assert "bc@1, bc@2 in production" in drift[0][3]
    assert "2026-01-01 11:00:00 – 2026-01-01 12:00:00" in drift[0][3]
    assert [r[-3] for r in drift] == ["fail"] * 4 + ["pass"] * 4  # windows 11 to 4
    # Staging: each version's own check; the newest (bc@2, 80 ms) fails.
    latency = rows["latency-staging"]
    assert latency[0][3].startswith("bc@2") and latency[0][5] == "80" and latency[0][6] == "fail"
    assert latency[1][0].startswith("bc@1") and latency[1][2] == "12.5" and latency[1][3] == "pass"
    # Test split: one check per trained run, each on the version registered from it; spec v2.
    recall = rows["recall-test"]
    assert recall[0][1] == "recall >= 0.88 on test" and len(recall) == 2
    assert {recall[0][3].split()[0], recall[1][0].split()[0]} == {"bc@1", "bc@2"}
    assert {len(r) for r in rows["auc-test"]} == {9, 6}  # first row with the criterion cells


def test_overview_counts(client: httpx.Client) -> None:
    cards = {
        c.find_all("div")[1].text(): c.find_all("div")[0].text()
        for c in parse(client.get("/").text).find_all("a", "card")
    }
    assert cards["models"] == "1" and cards["deployments"] == "2"
    assert cards["firing alerts"] == "1" and cards["documents"] == "1"


# -- experiments ---------------------------------------------------------------------------------


def _names(page: str) -> list[str]:
    table = parse(page).find_all("table", "runs")[0]
    return [row[1] for row in table.rows()]


def test_runs_filter_sort_and_columns(client: httpx.Client, world: World) -> None:
    params = {
        "q": "params.lr = '0.1' and metrics.accuracy >= 0.78",
        "sort": "metrics.accuracy desc",
        "cols": ["metrics.accuracy", "params.depth"],
    }
    response = client.get(f"/experiments/{world.sweep.id}", params=params)
    assert response.status_code == 200
    expected = []  # computed from the fixture's own formula, not from the store
    for i in range(SWEEP_RUNS):
        p, points = sweep_metrics(i)
        final = points[4][1]
        if p["lr"] == "0.1" and final >= 0.78:
            expected.append((final, f"trial-{i:02d}", p["depth"]))
    expected.sort(reverse=True)
    table = parse(response.text).find_all("table", "runs")[0]
    assert [r[1] for r in table.rows()] == [name for _, name, _ in expected]
    heads = [" ".join(h.text().split()) for h in table.find_all("th")]
    assert heads[-2:] == ["metrics.accuracy ▼", "params.depth"]
    assert [r[-1] for r in table.rows()] == [depth for _, _, depth in expected]


def test_runs_pages_server_side(client: httpx.Client, world: World) -> None:
    url = f"/experiments/{world.sweep.id}"
    first = client.get(url, params={"size": 25, "sort": "name asc"})
    second = client.get(url, params={"size": 25, "sort": "name asc", "page": 2})
    names = sorted([f"trial-{i:02d}" for i in range(SWEEP_RUNS)] + [XSS])
    assert _names(first.text) == names[:25] and _names(second.text) == names[25:]
    assert "runs 1–25 of 31" in parse(first.text).by_id("runs-range").text()
    assert 'rel="next"' in first.text and 'rel="next"' not in second.text


def test_runs_table_answers_htmx_with_the_fragment(client: httpx.Client, world: World) -> None:
    response = client.get(f"/experiments/{world.sweep.id}", headers={"HX-Request": "true"})
    assert response.status_code == 200 and response.headers["vary"] == "HX-Request"
    assert "<html" not in response.text and "<header" not in response.text
    assert len(_names(response.text)) == SWEEP_RUNS + 1


def test_history_restore_gets_the_whole_page(client: httpx.Client, world: World) -> None:
    headers = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
    response = client.get(f"/experiments/{world.sweep.id}", headers=headers)
    assert "<html" in response.text and len(_names(response.text)) == SWEEP_RUNS + 1


def test_a_malformed_filter_is_a_400_that_says_why(client: httpx.Client, world: World) -> None:
    response = client.get(f"/experiments/{world.sweep.id}", params={"q": "metrics.accuracy >>"})
    assert response.status_code == 400
    assert "Cannot read the filter clause" in parse(response.text).by_id("runs-error").text()
    response = client.get(f"/experiments/{world.sweep.id}", params={"sort": "bogus desc"})
    assert response.status_code == 400
    assert "unknown attribute 'bogus'" in parse(response.text).by_id("runs-error").text()


def test_compare_two_runs(client: httpx.Client, world: World) -> None:
    one, two = world.sweep_runs[0], world.sweep_runs[1]
    response = client.get("/compare", params={"runs": [one.id, two.id]})
    rows = {r[0]: r[1:] for r in parse(response.text).find_all("table", "compare")[0].rows()}
    assert rows["lr differs"] == [one.params["lr"], two.params["lr"]]
    assert rows["team"] == ["b", "a"]
    assert rows["accuracy"] == [f"{one.metrics['accuracy'].value:.6g}",
                                f"{two.metrics['accuracy'].value:.6g}"]  # fmt: skip
    specs = figures(response.text)
    bars = next(f for f in specs.values() if f["data"][0]["type"] == "bar")  # type: ignore[index]
    assert [t["name"] for t in bars["data"]] == ["trial-00", "trial-01"]  # type: ignore[index]
    lines = [f for f in specs.values() if f["data"][0]["type"] == "scatter"]  # type: ignore[index]
    accuracy = next(f for f in lines if f["layout"]["title"]["text"] == "accuracy")  # type: ignore[index]
    assert accuracy["data"][0]["y"] == [p[1] for p in sweep_metrics(0)[1][:5]]  # type: ignore[index]


def test_compare_needs_two_to_ten_runs(client: httpx.Client, world: World) -> None:
    response = client.get("/compare", params={"runs": [world.sweep_runs[0].id]})
    assert response.status_code == 400 and "Choose 2 to 10 runs" in response.text


def test_run_page_draws_metric_history_and_stored_plots(client: httpx.Client, world: World) -> None:
    run = world.sweep_runs[3]
    specs = figures(client.get(f"/runs/{run.id}").text)
    history = [f for f in specs.values() if f["layout"]["title"]["text"] == "accuracy"]  # type: ignore[index]
    assert history[0]["data"][0]["x"] == [0, 1, 2, 3, 4]  # type: ignore[index]
    assert history[0]["data"][0]["y"] == [p[1] for p in sweep_metrics(3)[1][:5]]  # type: ignore[index]
    trained = figures(client.get(f"/runs/{world.passing.run_id}").text)
    assert sum(k.startswith("artifact-plot-") for k in trained) >= 4  # ROC, PR, calibration, ...


# -- models --------------------------------------------------------------------------------------


def test_model_page_shows_versions_gates_and_card(client: httpx.Client, world: World) -> None:
    page = parse(client.get("/models/bc", params={"version": 2}).text)
    assert "gates fail" in page.text() and "latency-staging" in page.text()
    frame = page.find_all("iframe")[0]
    assert frame.attrs["sandbox"] == "" and frame.attrs["src"] == "/models/bc/versions/2/card"
    card = client.get(frame.attrs["src"])
    assert card.status_code == 200 and card.headers["content-security-policy"].startswith(
        "sandbox;"
    )
    stored = world.ws.artifacts.get_bytes(world.failing.card_html_digest or "")
    assert card.content == stored


def test_promote_checks_role_token_and_gates(
    client: httpx.Client, app: FastAPI, world: World
) -> None:
    models = world.ws.metadata.models
    url = "/models/bc/versions/1/promote"
    form = {"alias": "production", "csrf_token": "csrf-test-token"}
    app.state.caller = Caller(role="editor")
    assert client.post(url, data=form).status_code == 403
    assert 'id="promote-form"' not in client.get("/models/bc").text
    app.state.caller = Caller()
    assert client.post(url, data={**form, "csrf_token": "forged"}).status_code == 403
    assert client.post(url, data={"alias": "production"}).status_code == 403
    assert models.find_alias(world.passing.model_id, "production") is None
    done = client.post(url, data=form)
    assert done.status_code == 303
    assert done.headers["location"] == "/models/bc?version=1&promoted=production"
    assert models.find_alias(world.passing.model_id, "production").id == world.passing.id  # type: ignore[union-attr]
    assert models.aliases(world.passing.model_id)[0].updated_by == "ann"
    notice = parse(client.get(done.headers["location"]).text).by_id("notice").text()
    assert notice == "bc@1 is now 'production'."
    # bc@2 fails its staging gate: refused with the reason, unless overridden with one.
    refused = client.post("/models/bc/versions/2/promote", data=form)
    assert (
        refused.status_code == 409
        and "latency-staging" in parse(refused.text).by_id("notice").text()
    )
    assert models.find_alias(world.passing.model_id, "production").id == world.passing.id  # type: ignore[union-attr]
    claimed = client.get("/models/bc", params={"version": 2, "promoted": "production"}).text
    assert 'id="notice"' not in claimed  # a crafted link cannot claim a promotion
    forced = {**form, "override_reason": "hotfix approved by Dr. Silva"}
    assert client.post("/models/bc/versions/2/promote", data=forced).status_code == 303
    override = [e for e in models.events(world.passing.model_id) if e.kind == "gate_override"]
    assert override[0].detail["reason"] == "hotfix approved by Dr. Silva"


def test_promote_refuses_other_content_types(client: httpx.Client) -> None:
    response = client.post("/models/bc/versions/1/promote", json={"alias": "production"})
    assert response.status_code == 415


# -- deployments, monitoring, data, documents ---------------------------------------------------


def test_deployment_traffic_split_and_revisions(client: httpx.Client) -> None:
    page = parse(client.get("/deployments/production").text)
    assert "bc@1 (primary): 90% · bc@2 (canary): 10%" in " ".join(page.text().split())
    revisions = page.find_all("table", "wide")[0].rows()
    assert [r[0] for r in revisions] == ["2 ◀", "1"] and revisions[0][1] == "baking"


def test_monitoring_charts_and_alerts(client: httpx.Client, world: World) -> None:
    response = client.get("/monitoring/production")
    specs = figures(response.text)
    share = next(
        f for f in specs.values() if f["layout"]["title"]["text"] == "Share of drifted columns"
    )  # type: ignore[index]
    assert share["data"][0]["y"] == [window_figures(i)["drift.share"] for i in range(12)]  # type: ignore[index]
    accuracy = next(
        f for f in specs.values() if f["layout"]["title"]["text"] == "Accuracy on labelled rows"
    )  # type: ignore[index]
    assert [s["y0"] for s in accuracy["layout"]["shapes"]] == [0.93]  # type: ignore[index]
    assert [s["y0"] for s in share["layout"]["shapes"]] == [0.3]  # type: ignore[index]
    page = parse(response.text)
    assert "drift-share-high" in page.by_id("firing").text()
    alerts = {r[0]: r for r in page.find_all("table", "alerts")[0].rows()}
    assert alerts["drift-share-high"][2] == "firing" and alerts["latency-high"][2] == "resolved"
    report = client.get("/monitoring/production/report")
    assert report.headers["content-security-policy"].startswith("sandbox allow-scripts;")
    document = client.get("/monitoring/production/report.json").json()
    assert len(document["windows"]) == 12 and document["summary"]["firing"] == ["drift-share-high"]
    assert client.get("/monitoring/nowhere").status_code == 404


def test_data_catalog_schema_profile_and_lineage(client: httpx.Client, world: World) -> None:
    version = world.ws.metadata.datasets.version(world.ws.project.id, "breast_cancer")
    page = client.get("/data/breast_cancer").text
    schema = [r[0] for r in parse(page).find_all("table")[2].rows()]
    assert schema == list(version.schema)
    plots = [k for k in figures(page) if k.startswith("profile-")]
    assert len(plots) == len(version.schema)
    child = parse(client.get("/data/breast_cancer-train").text)
    svg = child.find_all("svg", "lineage")[0]
    assert [t.text() for t in svg.find_all("text")][::2] == [
        "breast_cancer@1",
        "breast_cancer-train@1",
    ]
    assert len(svg.find_all("path")) == 1


def test_document_and_spec_diffs(client: httpx.Client) -> None:
    document = parse(client.get("/documents/design-notes").text)
    assert document.by_id("document").find_all("h1")[0].text() == "Design notes"
    diff = document.find_all("pre", "diff")[0]
    assert [s.text() for s in diff.find_all("span", "del")] == ["-We rank the cases."]
    assert [s.text() for s in diff.find_all("span", "add")] == [
        "+We rank the riskiest cases first."
    ]
    lines = diff.text().splitlines()
    assert lines[:3] == ["--- v1", "+++ v2", "@@ -1,5 +1,5 @@"]  # the five lines of each
    assert "-We rank the cases." in lines and "+We rank the riskiest cases first." in lines
    spec = parse(client.get("/specs/2").text)
    changes = [li.text() for li in spec.find_all("ul", "changes")[0].find_all("li")]
    assert any(
        c.startswith("~ success_criteria[recall-test].threshold: 0.9 → 0.88") for c in changes
    )


def test_audit_log_lists_and_verifies(client: httpx.Client, world: World) -> None:
    page = parse(client.get("/audit", params={"verify": "true"}).text)
    assert "The chain is intact" in page.by_id("verification").text()
    events = page.find_all("table", "audit")[0].rows()
    seqs = [int(r[0]) for r in events]
    assert seqs and seqs == sorted(seqs, reverse=True)  # newest first
    first = parse(client.get("/audit", params={"after_seq": 0, "limit": 50}).text)
    seqs = [int(r[0]) for r in first.find_all("table", "audit")[0].rows()]
    assert seqs == sorted(seqs) and len(seqs) <= 50


def test_audit_page_without_an_audit_log() -> None:
    from types import SimpleNamespace

    from meguri.studio._pages_audit import audit_context

    bare = SimpleNamespace(metadata=SimpleNamespace(), project=None)
    context = audit_context(bare, None, 100, False, False)  # type: ignore[arg-type]
    assert context["available"] is False and context["events"] == []


# -- access, errors, static files ------------------------------------------------------------------


def test_nobody_and_roleless_users_are_refused(
    client: httpx.Client, app: FastAPI, world: World
) -> None:
    app.state.caller = Caller(name=None)
    for url in page_urls(world):
        assert client.get(url).status_code == 401, url
    app.state.caller = Caller(role=None)
    assert client.get("/").status_code == 403
    app.state.caller = Caller(role=None, is_admin=True)  # a site admin without a project role
    assert client.get("/").status_code == 200
    app.state.caller = Caller(name=None)
    assert client.get("/static/studio.css").status_code == 200


def test_errors_are_pages_with_4xx(client: httpx.Client, world: World) -> None:
    unknown = [
        "/models/nope",
        "/experiments/exp-nope",
        "/runs/run-nope",
        "/data/nope",
        "/deployments/nowhere",
        "/specs/99",
        "/documents/nope",
        "/models/bc?version=9",
    ]
    for url in unknown:
        response = client.get(url)
        assert response.status_code == 404, url
        assert "Traceback" not in response.text and parse(response.text).by_id("error").text()
    assert client.get(f"/experiments/{world.sweep.id}", params={"page": 0}).status_code == 422


def test_static_files_are_immutable_and_vendored(client: httpx.Client) -> None:
    htmx = client.get("/static/htmx.min.js")
    assert hashlib.sha256(htmx.content).hexdigest() == HTMX_SHA256
    assert htmx.headers["cache-control"] == "public, max-age=31536000, immutable"
    plotly = client.get("/static/plotly.min.js")
    bundled = resources.files("plotly") / "package_data" / "plotly.min.js"
    assert plotly.content == bundled.read_bytes()
    for bad in ("/static/..%2f__init__.py", "/static/README.md", "/static/nope.js"):
        assert client.get(bad).status_code == 404, bad
    page = client.get("/").text
    version = hashlib.sha256(htmx.content).hexdigest()[:16]
    assert f'src="/static/htmx.min.js?v={version}"' in page


# -- escaping ------------------------------------------------------------------------------------


def test_user_strings_are_escaped_never_evaluated(client: httpx.Client, world: World) -> None:
    xss = world.xss_run
    compared = f"/compare?runs={xss.id}&runs={world.sweep_runs[0].id}"
    urls = [
        f"/runs/{xss.id}",
        f"/experiments/{world.sweep.id}",
        "/specs/2",
        "/documents",
        "/documents/design-notes",
        "/",
        compared,
    ]
    for url in urls:
        page = client.get(url).text
        assert "<script>alert(1)</script>" not in page, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;{{7*7}}" in page, url
        assert not re.search(r"alert\(1\)</script>\s*49", page), url
        assert XSS in parse(page).text(), url  # shown as text, exactly as written
    compare = client.get("/compare", params={"runs": [xss.id, world.sweep_runs[0].id]}).text
    bars = next(f for f in figures(compare).values() if f["data"][0]["type"] == "bar")  # type: ignore[index]
    assert bars["data"][0]["name"] == "&lt;script&gt;alert(1)&lt;/script&gt;{{7*7}}"  # type: ignore[index]
