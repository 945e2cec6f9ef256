"""Pre-promotion tests for real: a small trained and registered model, served on loopback, its
functional, performance and security checks stored and counted by promotion."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import typer
from typer.testing import CliRunner

import meguri
from meguri import registry
from meguri.cli import _checks, _models
from meguri.deploy._checks import CRITERIA, PrePromotionSettings, pre_promotion_tests
from meguri.deploy._checks_load import load_test
from meguri.errors import GateFailedError
from meguri.serve import LoadedModel, Prediction, ServeSettings, serve_in_background
from meguri.spec import parse_spec
from meguri.spec._versions import save_spec_version
from meguri.store import Workspace
from meguri.testing.specs import quick_spec_text
from meguri.train import train

FAST = PrePromotionSettings(duration_s=1.0, concurrency=8)


def _spec_text(latency_ms: str = "500", throughput: str = "20") -> str:
    """The bundled example: linear only, 2 folds, scaling only; targets this shared machine
    meets (``latency_p95_ms`` and the ``latency-staging`` criterion) unless told otherwise."""
    text = quick_spec_text("checks", scale_only=True)
    text = text.replace("    threshold: 50\n", f"    threshold: {latency_ms}\n")
    text = text.replace("    latency_p95_ms: 50\n", f"    latency_p95_ms: {latency_ms}\n")
    return text.replace("    throughput_rps: 100\n", f"    throughput_rps: {throughput}\n")


@dataclass(frozen=True)
class Trained:
    ws: Workspace
    ref: str
    version_id: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    ws = meguri.open_workspace(tmp_path_factory.mktemp("checks"), project="checks")
    text = _spec_text()
    spec_version, _ = save_spec_version(ws.metadata, ws.project.id, text, created_by=ws.user)
    result = train(parse_spec(text), workspace=ws, spec_version_id=spec_version.id)
    version = registry.register_model(result, "cancer", workspace=ws)
    yield Trained(ws, version.ref, version.id)
    ws.close()


def _by_criterion(report: Any) -> dict[str, Any]:
    return {c.criterion_id: c for c in report.checks}


def test_a_good_version_passes_and_promotion_counts_the_checks(trained: Trained) -> None:
    ws = trained.ws
    report = pre_promotion_tests(trained.ref, workspace=ws, settings=FAST)
    assert report.passed, report.summary()
    checks = _by_criterion(report)
    assert set(checks) == {*CRITERIA, "latency-staging"}
    stored = ws.metadata.checks.for_subject("model_version", trained.version_id)
    assert {c.id for c in stored} >= {c.id for c in report.checks}
    version = registry.get_model_version(trained.ref, workspace=ws)
    assert all(c.spec_version_id == version.spec_version_id for c in report.checks)
    functional = checks["pre-promotion/functional"].evidence
    assert functional["golden"]["rows"] > 50 and functional["json"]["max_abs_diff"] <= 1e-9
    assert functional["csv"]["label_mismatches"] == 0
    assert [(b["case"], b["status"]) for b in functional["bad_inputs"]] == [
        ("missing_column", 400), ("wrong_type", 400), ("extra_column", 400)
    ]  # fmt: skip
    perf = checks["pre-promotion/performance"]
    assert perf.metric == "latency_p95_ms" and perf.threshold == 500.0
    assert perf.evidence["requests"] > 50 and perf.evidence["errors"] == 0
    assert report.measured["latency_p95_ms"] == perf.value == checks["latency-staging"].value
    assert report.measured["roc_auc"] > 0.9  # the served predictions on the golden rows
    findings = {f["check"]: f for f in checks["pre-promotion/security"].evidence["findings"]}
    assert findings["auth"]["statuses"] == [401, 401, 200]
    assert findings["headers"]["passed"] and findings["headers"]["banners"] in (
        {}, {"server": ["uvicorn"]}
    )  # fmt: skip
    assert findings["error_bodies"]["scanned"] >= 9 and not findings["error_bodies"]["leaked"]
    promoted = registry.promote(trained.ref, workspace=ws)
    assert promoted.aliases == ("production",)
    gates = {r.criterion_id for r in registry.check_gates(trained.ref, workspace=ws).results}
    assert gates >= {*CRITERIA, "auc-test", "latency-staging"}


class _Shifted(LoadedModel):
    """Another model: the real one with its probabilities moved by 1e-6."""

    def __init__(self, inner: LoadedModel) -> None:
        super().__init__(inner.name, inner.version, inner.signature, inner.runtime)
        self.inner = inner

    def predict(self, batch: Mapping[str, Any]) -> Prediction:
        found = self.inner.predict(batch)
        assert found.probabilities is not None
        shifted = np.clip(found.probabilities + np.array([1e-6, -1e-6]), 0, 1)
        return Prediction(found.values, shifted)


def test_a_server_with_another_model_fails_functional(trained: Trained) -> None:
    model = _Shifted(registry.load_model(trained.ref, workspace=trained.ws))
    with serve_in_background(model, ServeSettings(port=0, auth_token="s3cret")) as url:
        report = pre_promotion_tests(
            trained.ref, workspace=trained.ws, url=url, auth_token="s3cret", settings=FAST
        )
    checks = _by_criterion(report)
    functional = checks["pre-promotion/functional"]
    assert not functional.passed and functional.value == 2 * functional.evidence["golden"]["rows"]
    assert 5e-7 < functional.evidence["json"]["max_abs_diff"] < 2e-6
    assert checks["pre-promotion/security"].passed and checks["pre-promotion/performance"].passed
    assert report.failing == [functional]


def test_an_impossible_latency_target_fails_and_blocks_promotion(trained: Trained) -> None:
    ws = trained.ws
    text = _spec_text(latency_ms="0.001", throughput="1000000")
    strict, _ = save_spec_version(ws.metadata, ws.project.id, text, created_by=ws.user)
    report = pre_promotion_tests(
        trained.ref, workspace=ws, spec_version_id=strict.id, settings=FAST
    )
    perf = _by_criterion(report)["pre-promotion/performance"]
    assert not perf.passed and perf.spec_version_id == strict.id
    assert (perf.metric, perf.comparison, perf.threshold) == ("latency_p95_ms", "<=", 0.001)
    assert "throughput_rps" in perf.evidence["message"]
    assert {c.criterion_id for c in report.failing} == {
        "pre-promotion/performance", "latency-staging"
    }  # fmt: skip
    with pytest.raises(GateFailedError, match=r"pre-promotion/performance \(staging latency"):
        registry.promote(trained.ref, workspace=ws)


def test_no_declared_target_records_the_figures(trained: Trained) -> None:
    ws = trained.ws
    text = (
        _spec_text()
        .replace("    latency_p95_ms: 500\n", "")
        .replace("    throughput_rps: 20\n", "")
    )
    text = text.replace("metric: latency_p95_ms", "metric: latency_p99_ms")
    loose, _ = save_spec_version(ws.metadata, ws.project.id, text, created_by=ws.user)
    report = pre_promotion_tests(trained.ref, workspace=ws, spec_version_id=loose.id, settings=FAST)
    perf = _by_criterion(report)["pre-promotion/performance"]
    assert perf.passed and perf.threshold == float("inf") and perf.value is not None
    assert "latency_p95_ms: no target declared" in perf.evidence["message"]
    staging = _by_criterion(report)["latency-staging"]
    assert staging.metric == "latency_p99_ms" and staging.value == report.measured["latency_p99_ms"]
    assert report.passed, report.summary()


def test_a_server_without_the_configured_token_fails_security(trained: Trained) -> None:
    model = registry.load_model(trained.ref, workspace=trained.ws)
    with serve_in_background(model, ServeSettings(port=0)) as url:
        report = pre_promotion_tests(
            trained.ref, workspace=trained.ws, url=url, auth_token="configured", settings=FAST
        )
        security = _by_criterion(report)["pre-promotion/security"]
        assert not security.passed and security.value == 1
        findings = {f["check"]: f for f in security.evidence["findings"]}
        assert findings["auth"] == {"check": "auth", "passed": False, "statuses": [200, 200, 200]}
        assert _by_criterion(report)["pre-promotion/functional"].passed
    folder = registry.download_package(trained.ref, workspace=trained.ws)
    victim = folder / "transform.json"
    original = victim.read_bytes()
    victim.write_bytes(original + b" ")
    try:
        tampered = pre_promotion_tests(trained.ref, workspace=trained.ws, settings=FAST)
    finally:
        victim.write_bytes(original)
    checks = _by_criterion(tampered)
    assert not any(checks[c].passed for c in CRITERIA)
    assert "does not load" in checks["pre-promotion/functional"].evidence["message"]
    (files,) = checks["pre-promotion/security"].evidence["findings"]
    assert files["check"] == "package_files" and not files["passed"]
    assert files["wrong"][0].startswith("transform.json (sha256")


def test_the_asyncio_generator_counts_answers_and_refusals(trained: Trained) -> None:
    model = registry.load_model(trained.ref, workspace=trained.ws)
    row = {c.name: 1.0 for c in model.signature.inputs}
    body = orjson.dumps({"dataframe_records": [row]})
    headers = {"content-type": "application/json"}
    with serve_in_background(model, ServeSettings(port=0, auth_token="t")) as url:
        ok = load_test(url + "/invocations", body, headers={**headers, "authorization": "Bearer t"},
                       duration_s=0.5, concurrency=4, generator="asyncio")  # fmt: skip
        refused = load_test(url + "/invocations", body, headers=headers, duration_s=0.3,
                            concurrency=2, generator="asyncio")  # fmt: skip
    assert ok.generator == "asyncio" and ok.requests > 20 and ok.errors == 0
    assert ok.rps > 0 and 0 < ok.p50_ms <= ok.p95_ms <= ok.p99_ms
    assert refused.requests > 0 and refused.errors == refused.requests and refused.rps == 0


def test_cli_models_test(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("MEGURI_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(trained.ws.root)
    (trained.ws.root / "meguri.yaml").write_text(_spec_text())  # names the project: checks
    app = typer.Typer()
    _models.register(app)
    _checks.register(app)
    out = CliRunner().invoke(app, ["models", "test", trained.ref, "--duration", "1"])
    assert out.exit_code == 0, (out.output, out.exception)
    for text in ("pre-promotion/functional", "pre-promotion/security", "all passed"):
        assert text in out.output, out.output
    strict = _spec_text(latency_ms="0.001")
    (trained.ws.root / "meguri.yaml").write_text(strict)
    ws = trained.ws
    version, _ = save_spec_version(ws.metadata, ws.project.id, strict, created_by=ws.user)
    model = registry.load_model(trained.ref, workspace=ws)
    args = ["models", "test", trained.ref, "--spec-version", version.id, "--duration", "1"]
    with serve_in_background(model, ServeSettings(port=0)) as url:
        out = CliRunner().invoke(app, [*args, "--url", url])
    assert out.exit_code == 1 and "failing: pre-promotion/performance" in out.output


def test_leaks_and_version_banners_are_found(tmp_path: Path) -> None:
    from meguri.deploy._checks import _banner, _leaks
    from meguri.deploy._checks_http import Endpoint, Reply

    endpoint = Endpoint("http://127.0.0.1:9")
    endpoint.replies += [
        Reply(200, {"server": "uvicorn"}, b"{}"),
        Reply(400, {"server": "uvicorn"}, b'{"error": {"message": "bad column"}}'),
    ]
    assert _leaks(endpoint, tmp_path)["passed"] and _banner(endpoint)["passed"]
    endpoint.replies += [
        Reply(500, {"server": "gunicorn/22.0"}, b"Traceback (most recent call last):"),
        Reply(422, {"x-powered-by": "Express"}, f"cannot read {tmp_path}/x".encode()),
    ]
    leaks, banner = _leaks(endpoint, tmp_path), _banner(endpoint)
    assert not leaks["passed"] and "500: Traceback" in leaks["leaked"]
    assert f"422: {tmp_path}" in leaks["leaked"] and "422: /tmp" in leaks["leaked"]
    assert not banner["passed"] and banner["versioned"] == ["server: gunicorn/22.0"]
