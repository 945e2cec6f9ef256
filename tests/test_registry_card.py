"""Model cards from real lineage: one small real training, its card checked against the stores."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import meguri
from meguri.registry._card import ModelCard, model_card, render_card
from meguri.spec import parse_spec, render_example_spec
from meguri.spec._versions import save_spec_version
from meguri.store import Workspace
from meguri.train._train import TrainResult, gate, train

SCRIPT = "<script>alert('card')</script>"


def _spec_text() -> str:
    """The bundled example, fast: two quick algorithms, 2 folds, one preparation step, and a
    test part of 40% so that its quantile slices reach the minimum slice size."""
    text = render_example_spec("cards")
    start, end = text.index("  prepare:"), text.index("  # Reproducible by row hash")
    text = text[:start] + "  prepare:\n    - scale: {method: standard}\n" + text[end:]
    text = text.replace(
        "train: 0.7, validation: 0.15, test: 0.15", "train: 0.5, validation: 0.1, test: 0.4"
    )
    text = text.replace("  cv_folds: 5\n", "  cv_folds: 2\n")
    text = text.replace("Flag the likely malignant cases first.", f"Flag them first. {SCRIPT}")
    start = text.index("  allowed_algorithms:")
    end = text.index("\n", start)
    return text[:start] + "  allowed_algorithms: [linear, knn]" + text[end:]


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Workspace, TrainResult, str]]:
    ws = meguri.open_workspace(tmp_path_factory.mktemp("card"), project="cards")
    text = _spec_text()
    version, _ = save_spec_version(ws.metadata, ws.project.id, text, created_by=ws.user)
    result = train(parse_spec(text), workspace=ws, spec_version_id=version.id)
    yield ws, result, version.id
    ws.close()


@pytest.fixture(scope="module")
def card(trained: tuple[Workspace, TrainResult, str]) -> ModelCard:
    ws, result, _ = trained
    return model_card(ws, run_id=result.run_id, model_name="cancer", version=3)


def _parse_html(html: str) -> ET.Element:
    assert html.startswith("<!DOCTYPE html>")
    return ET.fromstring(html[html.index("<html") :])  # well-formed: every tag closed


def test_card_states_the_stored_metrics_and_intervals(
    trained: tuple[Workspace, TrainResult, str], card: ModelCard
) -> None:
    ws, result, _ = trained
    stored = ws.metadata.runs.get_run(result.run_id)
    auc = stored.metrics["test/roc_auc"].value
    assert auc == result.metrics["test/roc_auc"]
    low, high = result.intervals["roc_auc"]
    valid = result.metrics["validation/roc_auc"]
    row = f"| **roc_auc** | {valid:.4f} | {auc:.4f} | [{low:.4f}, {high:.4f}] |"
    assert row in card.markdown
    assert f"{auc:.4f}" in card.html and f"[{low:.4f}, {high:.4f}]" in card.html
    assert card.facts["evaluation"]["test"]["roc_auc"] == auc
    assert card.facts["evaluation"]["intervals"]["roc_auc"] == [low, high]
    assert card.facts["model"] == {"name": "cancer", "version": "3"}
    assert card.facts["run"]["algorithm"] == result.best.name
    json.dumps(card.facts, allow_nan=False)  # storable as it is


def test_each_criterion_has_its_result_and_evidence(
    trained: tuple[Workspace, TrainResult, str], card: ModelCard
) -> None:
    ws, result, spec_version = trained
    checks = {c.criterion_id: c for c in ws.metadata.checks.for_subject("run", result.run_id)}
    rows = {c["id"]: c for c in card.facts["criteria"]}
    assert set(checks) < set(rows)  # plus the staging and production ones, not measured yet
    for criterion_id, check in checks.items():
        assert rows[criterion_id]["status"] == ("pass" if check.passed else "fail")
        assert rows[criterion_id]["value"] == check.value
        assert rows[criterion_id]["check_id"] == check.id
        line = next(x for x in card.markdown.splitlines() if x.startswith(f"| `{criterion_id}`"))
        assert ("✅ pass" if check.passed else "❌ fail") in line
        assert f"{check.value:.4f}" in line and check.id in line
    assert rows["latency-staging"]["status"] == "not measured yet"
    kinds = {(n["kind"], n["text"].split(" ")[0]) for n in card.facts["limitations"]}
    assert ("unverified criterion", "latency-staging") in kinds
    assert card.facts["spec"]["version_id"] == spec_version


def test_data_versions_rows_and_quality_come_from_the_catalog(
    trained: tuple[Workspace, TrainResult, str], card: ModelCard
) -> None:
    _, result, _ = trained
    for part, version in result.prepared.parts.items():
        line = next(x for x in card.markdown.splitlines() if f"`{version.id}`" in x)
        assert line.startswith(f"| {part} | {version.ref} |")
        assert f"| {version.row_count:,} |" in line
        assert version.id in card.html
    source = result.prepared.source
    report = result.prepared.quality
    [facts] = card.facts["data"]["sources"]
    assert (facts["id"], facts["rows"]) == (source.id, source.row_count)
    assert facts["quality"]["checks"] == len(report.results)
    assert facts["quality"]["passed"] == sum(r.passed for r in report.results)


def test_slices_are_listed_worst_first_with_a_limitation(card: ModelCard) -> None:
    slices = card.facts["evaluation"]["slices"]["worst"]
    assert slices, "a 40% test part gives slices of at least 30 rows"
    worst = slices[0]
    assert [s["worse_by"] for s in slices] == sorted((s["worse_by"] for s in slices), reverse=True)
    assert f"| {worst['feature']} | {worst['slice']} | {worst['rows']} |" in card.markdown
    assert f"{worst['feature']} = {worst['slice']}" in card.html  # the SVG bar's label
    if worst["worse_by"] > 0:
        weak = [n["text"] for n in card.facts["limitations"] if n["kind"] == "weak slice"]
        assert weak[0].startswith(f"{worst['feature']} = {worst['slice']} ")


def test_leaderboard_resources_and_plots(
    trained: tuple[Workspace, TrainResult, str], card: ModelCard
) -> None:
    ws, result, _ = trained
    board = card.facts["leaderboard"]["candidates"]
    assert [c["algorithm"] for c in board] == [c.name for c in result.leaderboard]
    assert [c["cv_mean"] for c in board] == [c.cv["roc_auc"][0] for c in result.leaderboard]
    assert [c["chosen"] for c in board] == [
        c.run_id == result.best.run_id for c in result.leaderboard
    ]
    run = ws.metadata.runs.get_run(result.run_id)
    resources = card.facts["resources"]
    assert (resources["wall_seconds"], resources["cpu_seconds"]) == (
        run.wall_seconds,
        run.cpu_seconds,
    )
    assert resources["peak_memory_bytes"] == run.peak_memory_bytes
    assert f"| wall time | {run.wall_seconds:,.1f} s | 10.0 min |" in card.markdown
    plots = {p["name"]: p for p in card.facts["plots"]}
    assert plots["roc"]["kind"] == "lines" and plots["confusion_matrix"]["kind"] == "matrix"
    assert (
        sum(sum(row) for row in plots["confusion_matrix"]["z"])
        == result.prepared.parts["test"].row_count
    )
    root = _parse_html(card.html)
    assert len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) >= 2  # ROC and PR curves


def test_html_is_well_formed_self_contained_and_escapes_user_text(card: ModelCard) -> None:
    root = _parse_html(card.html)
    assert root.find("head/style") is not None
    assert root.find(".//script") is None and SCRIPT not in card.html
    assert "&lt;script&gt;alert(&#39;card&#39;)&lt;/script&gt;" in card.html
    assert "http://" not in card.html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in card.html
    assert SCRIPT not in card.markdown and "&lt;script&gt;" in card.markdown


def test_stored_facts_render_the_same_card(card: ModelCard) -> None:
    again = render_card(json.loads(json.dumps(card.facts)))
    assert again == card


def _bare_run(ws: Workspace, metrics: dict[str, Any]) -> str:
    with meguri.start_run("hand-made", experiment="manual", workspace=ws) as run:
        run.log_metrics(metrics)
    return run.id


def test_a_run_without_evidence_says_what_is_missing(
    trained: tuple[Workspace, TrainResult, str],
) -> None:
    ws, _, _ = trained
    run_id = _bare_run(ws, {"test/roc_auc": 0.81})
    card = model_card(ws, run_id=run_id, model_name="bare", version="1")
    missing = " ".join(card.facts["missing"])
    for what in ("spec:", "confidence intervals:", "slices:", "data:", "plots:"):
        assert what in missing
    assert "Not stated: no spec version is recorded for this run." in card.markdown
    assert "not computed" in card.markdown and "the run logged none" in card.markdown
    assert "No input dataset versions are recorded" in card.html
    assert {n["kind"] for n in card.facts["limitations"]} == {"missing evidence"}
    _parse_html(card.html)


def test_a_failing_criterion_is_a_limitation(trained: tuple[Workspace, TrainResult, str]) -> None:
    ws, _, _ = trained
    run_id = _bare_run(ws, {"test/roc_auc": 0.81})
    spec = parse_spec(_spec_text())
    gate(
        spec,
        {"test/roc_auc": 0.81},
        workspace=ws,
        spec_version_id=None,
        subject_kind="run",
        subject_id=run_id,
    )
    card = model_card(ws, run_id=run_id, model_name="bare", version=2, spec=spec)
    auc = next(c for c in card.facts["criteria"] if c["id"] == "auc-test")
    assert (auc["status"], auc["value"]) == ("fail", 0.81)
    failing = [n["text"] for n in card.facts["limitations"] if n["kind"] == "failing criterion"]
    assert "auc-test fails: 0.8100, required roc_auc >= 0.95 on test." in failing
    assert "❌ fail" in card.markdown and 'class="badge fail"' in card.html
    recall = next(c for c in card.facts["criteria"] if c["id"] == "recall-test")
    assert recall["status"] == "fail" and recall["value"] is None  # never measured: fails


def test_an_unknown_run_is_not_found(trained: tuple[Workspace, TrainResult, str]) -> None:
    ws, _, _ = trained
    with pytest.raises(meguri.errors.NotFoundError):
        model_card(ws, run_id="run-nope", model_name="x", version=1)


def test_card_is_fast(trained: tuple[Workspace, TrainResult, str], tmp_path: Path) -> None:
    import time

    ws, result, _ = trained
    started = time.perf_counter()
    model_card(ws, run_id=result.run_id, model_name="cancer", version=3)
    assert time.perf_counter() - started < 2.0
