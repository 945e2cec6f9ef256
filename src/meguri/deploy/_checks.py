"""Pre-promotion tests: what a model version must pass, served, before it may reach production.

:func:`pre_promotion_tests` serves the version in this process on a free loopback port (or
tests a running endpoint given by ``url``) and stores one :class:`CheckResult` per criterion for
the version (``subject_kind="model_version"``), which :func:`meguri.registry.promote` counts:

``pre-promotion/functional``   the golden examples, the raw rows of the version's test part
                               (replayed from the recorded split of its source dataset version),
                               get the same labels and probabilities (within 1e-9) over HTTP,
                               as JSON and as CSV, as from the package loaded here; a missing, a
                               wrongly typed and an extra column are each refused with a 4xx
                               that names the column.
``pre-promotion/performance``  a closed-loop load test (``wrk`` when installed, else an asyncio
                               generator in a child process) of one-row requests: req/s, p50,
                               p95, p99 and errors against the spec's ``latency_p95_ms`` and
                               ``throughput_rps`` (a target not declared: the figures are
                               recorded with the note "no target declared"); no request may fail.
``pre-promotion/security``     oversized bodies (declared and chunked) get 413, malformed JSON
                               and CSV 400, no error body holds a stack trace or a path, the auth
                               token is required when one is configured, the package files match
                               the sha256 the registry recorded, and no header names a version.

On ``environment="staging"`` the spec's own success criteria ``measured_on: staging`` are
checked too, against the load figures (``latency_p95_ms``, ``latency_p50_ms``/``p99``,
``throughput_rps``, ``error_rate``) and the metrics of the served predictions on the golden rows
(``roc_auc``, ``rmse``, ...); one whose metric is none of these fails as not measured.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import re
import secrets
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import polars as pl

from meguri.deploy._checks_golden import Golden, golden_set
from meguri.deploy._checks_http import Endpoint, Reply
from meguri.deploy._checks_load import LoadFigures, load_test
from meguri.errors import MeguriError, PackageError
from meguri.store import Workspace, default_workspace
from meguri.store.metadata import CheckResult, ModelVersion

if TYPE_CHECKING:
    from meguri.serve import LoadedModel, Prediction
    from meguri.spec import Comparison, NonFunctionalRequirements, ProjectSpec

__all__ = ["CRITERIA", "PrePromotionReport", "PrePromotionSettings", "pre_promotion_tests"]

FUNCTIONAL = "pre-promotion/functional"
PERFORMANCE = "pre-promotion/performance"
SECURITY = "pre-promotion/security"
CRITERIA = (FUNCTIONAL, PERFORMANCE, SECURITY)
TOLERANCE = 1e-9
_LEAKS = ("Traceback", 'File "', "/home", "/tmp", "site-packages", "dist-packages")
_VERSIONED = re.compile(r"\d+\.\d+")


@dataclass(frozen=True)
class PrePromotionSettings:
    """How hard the tests push: the load test's length and concurrency, the body limit the
    endpoint is expected to enforce, and how many golden rows are compared."""

    duration_s: float = 3.0
    concurrency: int = 16
    max_body_bytes: int = 8 * 1024 * 1024
    max_golden_rows: int = 1_000
    generator: str = "auto"
    """``auto`` (wrk when installed), ``wrk`` or ``asyncio``."""


@dataclass(frozen=True)
class PrePromotionReport:
    """The stored results (the three pre-promotion criteria, then the spec's own criteria
    measured on the environment) and what was measured."""

    version: ModelVersion
    url: str
    environment: str
    checks: list[CheckResult]
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def failing(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failing

    def summary(self) -> str:
        """One line per check: verdict, criterion, the figure and what it needed."""
        lines = [f"{self.version.ref} on {self.environment} ({self.url}):"]
        for check in self.checks:
            verdict = "pass" if check.passed else "FAIL"
            value = "not measured" if check.value is None else f"{check.value:.4g}"
            note = str(check.evidence.get("message", ""))
            lines.append(
                f"  {verdict} {check.criterion_id}: {check.metric} = {value} "
                f"(needs {check.comparison} {check.threshold:g}) {note}".rstrip()
            )
        return "\n".join(lines)


@dataclass
class _Outcome:
    criterion: str
    metric: str
    comparison: str
    threshold: float
    value: float | None
    passed: bool
    evidence: dict[str, Any]


def pre_promotion_tests(
    ref: str,
    *,
    workspace: Workspace | None = None,
    url: str | None = None,
    environment: str = "staging",
    auth_token: str | None = None,
    spec_version_id: str | None = None,
    settings: PrePromotionSettings | None = None,
) -> PrePromotionReport:
    """Run the pre-promotion tests of version ``ref`` and store their results (see the module
    docstring). ``url``: a running endpoint serving it (else it is served here, with a fresh
    auth token); ``auth_token``: the token that endpoint is configured with (``None``: it has
    none); ``spec_version_id``: the spec whose targets apply (default: the version's)."""
    from meguri.registry import get_model_version, load_model

    ws = workspace or default_workspace()
    conf = settings or PrePromotionSettings()
    version = get_model_version(ref, workspace=ws)
    spec_id = spec_version_id or version.spec_version_id
    spec = _spec(ws, spec_id)
    measured: dict[str, float] = {}
    try:
        model = load_model(version.id, workspace=ws)
    except PackageError as err:
        outcomes, base = _unloadable(ws, version, err), url or "(not served)"
    else:
        outcomes, measured, base = _served(ws, version, model, spec, url, auth_token, conf)
    outcomes += _spec_criteria(spec, environment, measured)
    where = {"environment": environment, "url": base, "in_process": url is None}
    stored = ws.metadata.checks.record(
        [_result(ws, version, spec_id, environment, o, where) for o in outcomes]
    )
    return PrePromotionReport(version, base, environment, stored, measured)


def _served(
    ws: Workspace,
    version: ModelVersion,
    model: LoadedModel,
    spec: ProjectSpec | None,
    url: str | None,
    auth_token: str | None,
    conf: PrePromotionSettings,
) -> tuple[list[_Outcome], dict[str, float], str]:
    """The three checks against the endpoint serving ``model`` (started here if no ``url``)."""
    golden: Golden | str
    try:
        golden = golden_set(ws, version, model, max_rows=conf.max_golden_rows)
    except MeguriError as err:
        golden = str(err)
    with _endpoint(model, url, auth_token, conf) as endpoint:
        functional, served = _functional(endpoint, model, golden)
        performance, figures = _performance(endpoint, golden, spec, conf)
        security = _security(endpoint, ws, version, conf)
    return [functional, performance, security], {**served, **figures}, endpoint.base


def _unloadable(ws: Workspace, version: ModelVersion, err: PackageError) -> list[_Outcome]:
    """A package that does not load is not served: every check fails, security with the
    files that differ from those recorded."""
    message = f"the package does not load: {err}"
    findings = _files(ws, version)
    return [
        _Outcome(FUNCTIONAL, "failures", "==", 0, None, False, {"message": message}),
        _Outcome(PERFORMANCE, "latency_p95_ms", "<=", math.inf, None, False,
                 {"message": message}),
        _Outcome(SECURITY, "failures", "==", 0, sum(not f["passed"] for f in findings), False,
                 {"message": message, "findings": findings}),
    ]  # fmt: skip


def _spec(ws: Workspace, spec_version_id: str | None) -> ProjectSpec | None:
    if spec_version_id is None:
        return None
    from meguri.spec import parse_spec

    return parse_spec(ws.metadata.specs.get(spec_version_id).content)


@contextlib.contextmanager
def _endpoint(
    model: LoadedModel, url: str | None, token: str | None, conf: PrePromotionSettings
) -> Iterator[Endpoint]:
    if url is not None:
        yield Endpoint(url, token)
        return
    from meguri.serve import ServeSettings, serve_in_background

    token = secrets.token_urlsafe(24)
    served = ServeSettings(port=0, auth_token=token, max_body_bytes=conf.max_body_bytes)
    with serve_in_background(model, served) as base:
        yield Endpoint(base, token)


def _result(
    ws: Workspace,
    version: ModelVersion,
    spec_version_id: str | None,
    environment: str,
    outcome: _Outcome,
    where: Mapping[str, Any],
) -> CheckResult:
    return CheckResult(
        id="",
        project_id=ws.project.id,
        spec_version_id=spec_version_id,
        criterion_id=outcome.criterion,
        stage=environment,
        metric=outcome.metric,
        comparison=outcome.comparison,
        threshold=outcome.threshold,
        value=outcome.value,
        passed=outcome.passed,
        subject_kind="model_version",
        subject_id=version.id,
        created_at=0.0,
        created_by=ws.user,
        evidence={**outcome.evidence, **where},
    )


# -- functional -------------------------------------------------------------------------------


def _functional(
    endpoint: Endpoint, model: LoadedModel, golden: Golden | str
) -> tuple[_Outcome, dict[str, float]]:
    if isinstance(golden, str):
        message = f"no golden examples: {golden}"
        return _Outcome(FUNCTIONAL, "failures", "==", 0, None, False, {"message": message}), {}
    expected = model.predict(golden.batch)
    json_form, served = _compare_json(endpoint, golden, expected)
    csv_form = _compare_csv(endpoint, golden, expected)
    refusals = _bad_inputs(endpoint, golden)
    failures = json_form["failures"] + csv_form["failures"]
    failures += sum(not r["passed"] for r in refusals)
    evidence = {
        "message": f"{golden.rows} golden rows, {failures} failures",
        "golden": golden.source,
        "json": json_form,
        "csv": csv_form,
        "bad_inputs": refusals,
        "tolerance": TOLERANCE,
    }
    outcome = _Outcome(FUNCTIONAL, "failures", "==", 0, failures, failures == 0, evidence)
    return outcome, _served_metrics(model, golden, served)


def _compare_json(
    endpoint: Endpoint, golden: Golden, expected: Prediction
) -> tuple[dict[str, Any], Prediction | None]:
    body = orjson.dumps({"dataframe_split": {"columns": golden.names, "data": golden.records}})
    reply = endpoint.call("POST", "/invocations?probabilities=true", body, _JSON)
    if reply.status != 200:
        return _unanswered(reply), None
    doc = orjson.loads(reply.body)
    proba = doc.get("probabilities")
    got = _prediction(doc.get("predictions", []), None if proba is None else np.asarray(proba))
    return _differences(expected, got, golden.rows), got


def _compare_csv(endpoint: Endpoint, golden: Golden, expected: Prediction) -> dict[str, Any]:
    headers = {"content-type": "text/csv", "accept": "text/csv"}
    reply = endpoint.call("POST", "/invocations?probabilities=true", golden.csv, headers)
    if reply.status != 200:
        return _unanswered(reply)
    table = pl.read_csv(io.BytesIO(reply.body), has_header=False, infer_schema=False)
    first = table.to_series(0)
    proba = table.drop(first.name).cast(pl.Float64).to_numpy() if table.width > 1 else None
    if expected.probabilities is None and expected.values.dtype.kind == "f":  # regression
        return _differences(expected, _prediction(first.cast(pl.Float64), None), golden.rows)
    want = _prediction(expected.values.astype(str), expected.probabilities)
    return _differences(want, _prediction(first.to_numpy(), proba), golden.rows)


def _prediction(values: Any, probabilities: Any) -> Prediction:
    from meguri.serve import Prediction

    return Prediction(np.asarray(values, dtype=object), probabilities)


def _unanswered(reply: Reply) -> dict[str, Any]:
    return {"failures": 1, "status": reply.status, "body": reply.text[:300]}


def _differences(expected: Prediction, got: Prediction, rows: int) -> dict[str, Any]:
    want, have = expected.values, np.asarray(got.values, dtype=object)
    if len(have) != rows:
        return {"failures": rows, "rows": len(have), "message": f"{len(have)} predictions"}
    if want.dtype.kind == "f" and expected.probabilities is None:  # regression
        values = np.asarray(have, dtype=np.float64)
        diff = np.abs(values - want) / np.maximum(1.0, np.abs(want))
        bad = diff > TOLERANCE
        return {"failures": int(bad.sum()), "max_relative_diff": float(diff.max(initial=0.0))}
    bad = np.asarray(want, dtype=object) != have
    report: dict[str, Any] = {"label_mismatches": int(bad.sum())}
    if expected.probabilities is not None:
        have_p = np.asarray(got.probabilities, dtype=np.float64)
        if have_p.shape != expected.probabilities.shape:
            return {**report, "failures": rows, "probabilities_shape": list(have_p.shape)}
        gap = np.abs(have_p - expected.probabilities)
        row_gap = gap.max(axis=1) if gap.ndim == 2 else gap
        bad |= row_gap > TOLERANCE
        report["max_abs_diff"] = float(row_gap.max(initial=0.0))
    report["failures"] = int(bad.sum())
    report["first_bad_rows"] = np.flatnonzero(bad)[:10].tolist()
    return report


def _bad_inputs(endpoint: Endpoint, golden: Golden) -> list[dict[str, Any]]:
    record = dict(zip(golden.names, golden.records[0], strict=True))
    first, kind = golden.names[0], golden.types[0]
    wrong = {"double": "not a number", "long": "not a number", "boolean": "maybe"}
    cases = {
        "missing_column": (first, {k: v for k, v in record.items() if k != first}),
        "wrong_type": (first, {**record, first: wrong.get(kind, [1, 2])}),
        "extra_column": ("__meguri_unexpected__", {**record, "__meguri_unexpected__": 1}),
    }
    found = []
    for case, (column, doc) in cases.items():
        reply = endpoint.call("POST", "/invocations", orjson.dumps([doc]), _JSON)
        named = reply.error_column() == column or column in reply.text
        passed = 400 <= reply.status < 500 and named
        found.append({"case": case, "column": column, "status": reply.status, "passed": passed})
    return found


def _served_metrics(
    model: LoadedModel, golden: Golden, served: Prediction | None
) -> dict[str, float]:
    """The metrics of the served predictions on the golden rows (their labels known)."""
    if served is None or golden.target is None:
        return {}
    from meguri.train import evaluate

    task = {"binary": "binary_classification", "multiclass": "multiclass_classification"}
    output = model.signature.output
    name = task.get(output.task, "regression")
    values = np.asarray(served.values.tolist())
    if name == "regression":
        return evaluate(name, golden.target, values.astype(np.float64))
    labels = list(output.labels)
    return evaluate(name, golden.target, values, served.probabilities, labels=labels)


_JSON = {"content-type": "application/json"}


# -- performance ------------------------------------------------------------------------------


def _performance(
    endpoint: Endpoint,
    golden: Golden | str,
    spec: ProjectSpec | None,
    conf: PrePromotionSettings,
) -> tuple[_Outcome, dict[str, float]]:
    if isinstance(golden, str):
        message = "no example row to send: the golden examples are missing"
        return _Outcome(PERFORMANCE, "latency_p95_ms", "<=", math.inf, None, False,
                        {"message": message}), {}  # fmt: skip
    record = dict(zip(golden.names, golden.records[0], strict=True))
    try:
        figures = load_test(
            endpoint.base + "/invocations",
            orjson.dumps({"dataframe_records": [record]}),
            headers={**_JSON, **endpoint.auth},
            duration_s=conf.duration_s,
            concurrency=conf.concurrency,
            generator=conf.generator,
        )
    except MeguriError as err:
        return _Outcome(PERFORMANCE, "latency_p95_ms", "<=", math.inf, None, False,
                        {"message": str(err)}), {}  # fmt: skip
    nf = None if spec is None else spec.requirements.non_functional
    return _judge_load(figures, nf), figures.metrics()


def _judge_load(figures: LoadFigures, nf: NonFunctionalRequirements | None) -> _Outcome:
    from meguri.spec import compare

    latency = None if nf is None else nf.latency_p95_ms
    rps = None if nf is None else nf.throughput_rps
    targets: list[tuple[str, Comparison, float | None, float]] = [
        ("latency_p95_ms", "<=", latency, figures.p95_ms),
        ("throughput_rps", ">=", rps, figures.rps),
    ]
    failing = [t for t in targets if t[2] is not None and not compare(t[3], t[1], t[2])]
    notes = [f"{name}: no target declared" for name, _, target, _ in targets if target is None]
    if figures.errors:
        notes.append(f"{figures.errors} of {figures.requests} requests failed")
    passed = not failing and figures.errors == 0 and figures.requests > 0
    metric, comparison, target, value = (failing or targets)[0]
    verdicts = [f"{m} = {v:.4g} (needs {c} {t:g})" for m, c, t, v in targets if t is not None]
    message = "; ".join([*verdicts, *notes])
    evidence = {"message": message, **figures.to_dict(), "host": _host()}
    threshold = math.inf if target is None else float(target)
    return _Outcome(PERFORMANCE, metric, comparison, threshold, value, passed, evidence)


def _host() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average": list(os.getloadavg()), "python": sys.version}


def _spec_criteria(
    spec: ProjectSpec | None, environment: str, measured: Mapping[str, float]
) -> list[_Outcome]:
    """The spec's own success criteria ``measured_on: staging`` when ``environment`` is
    staging (production's are checked by monitoring): one not measured here fails, as a gate's
    missing result does."""
    if spec is None or environment != "staging":
        return []
    from meguri.spec import evaluate

    found = []
    for criterion in spec.criteria_on("staging"):
        outcome = evaluate(criterion, measured.get(criterion.metric))
        message = outcome.message
        if criterion.metric not in measured:
            message += f" (the pre-promotion tests measure {', '.join(sorted(measured))})"
        found.append(
            _Outcome(criterion.id, criterion.metric, criterion.comparison, criterion.threshold,
                     outcome.value, outcome.passed, {"message": message})
        )  # fmt: skip
    return found


# -- security ---------------------------------------------------------------------------------


def _security(
    endpoint: Endpoint,
    ws: Workspace,
    version: ModelVersion,
    conf: PrePromotionSettings,
) -> _Outcome:
    findings = [
        *_files(ws, version),
        *_oversized(endpoint, conf.max_body_bytes),
        *_malformed(endpoint),
        *_auth(endpoint),
    ]
    endpoint.call("GET", "/no-such-route")
    endpoint.call("GET", "/invocations")
    findings += [_leaks(endpoint, ws.root), _banner(endpoint)]
    failures = sum(not f["passed"] for f in findings)
    failed = ", ".join(f["check"] for f in findings if not f["passed"])
    message = f"{len(findings)} checks, failing: {failed}" if failed else f"{len(findings)} checks"
    evidence = {"message": message, "findings": findings}
    return _Outcome(SECURITY, "failures", "==", 0, failures, failures == 0, evidence)


def _finding(check: str, passed: bool, **detail: Any) -> dict[str, Any]:
    return {"check": check, "passed": passed, **detail}


def _files(ws: Workspace, version: ModelVersion) -> list[dict[str, Any]]:
    """Every file of the (downloaded) package against the sha256 the registry recorded."""
    from meguri.registry import download_package

    folder = download_package(version.id, workspace=ws)
    wrong = []
    for path, entry in sorted(version.files.items()):
        target = folder / path
        if not target.is_file():
            wrong.append(f"{path} (missing)")
            continue
        with target.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != entry.get("sha256"):
            wrong.append(f"{path} (sha256 {digest[:12]}…, recorded {str(entry['sha256'])[:12]}…)")
    listed = {str(p) for p in version.files}
    extra = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).as_posix() not in listed
    )
    wrong += [f"{path} (not in the package)" for path in extra]
    return [_finding("package_files", not wrong, files=len(version.files), wrong=wrong)]


def _oversized(endpoint: Endpoint, limit: int) -> list[dict[str, Any]]:
    declared = endpoint.raw_post("/invocations", limit + 1, chunks=None)
    chunk = b" " * (1 << 20)
    chunked = endpoint.raw_post("/invocations", None, chunks=[chunk] * (limit // len(chunk) + 1))
    return [
        _finding("oversized_declared", declared.status == 413, status=declared.status),
        _finding("oversized_chunked", chunked.status == 413, status=chunked.status),
    ]


def _malformed(endpoint: Endpoint) -> list[dict[str, Any]]:
    bodies = {
        "malformed_json": (b'{"dataframe_split": {"data": [[1, 2', "application/json"),
        "malformed_csv": (b"\xff\xfe\x00,\x81\n", "text/csv"),
        "ragged_csv": (b"1,2,3\n4\n", "text/csv"),
    }
    found = []
    for check, (body, ctype) in bodies.items():
        reply = endpoint.call("POST", "/invocations", body, {"content-type": ctype})
        found.append(_finding(check, reply.status == 400, status=reply.status))
    return found


def _auth(endpoint: Endpoint) -> list[dict[str, Any]]:
    if endpoint.token is None:
        return [_finding("auth", True, note="no auth token is configured for this environment")]
    without = endpoint.call("GET", "/v2", auth=False)
    wrong = endpoint.call("GET", "/v2", headers={"authorization": "Bearer x"}, auth=False)
    right = endpoint.call("GET", "/v2")
    statuses = [without.status, wrong.status, right.status]
    return [_finding("auth", statuses == [401, 401, 200], statuses=statuses)]


def _leaks(endpoint: Endpoint, root: Path) -> dict[str, Any]:
    """No error body (of every reply so far) holds a stack trace or a file-system path."""
    import meguri

    markers = [*_LEAKS, str(root), os.path.dirname(meguri.__file__), sys.prefix]
    markers.append(os.path.expanduser("~"))
    errors = [r for r in endpoint.replies if r.status >= 400]
    leaked = sorted(
        {f"{r.status}: {m}" for r in errors for m in markers if len(m) > 1 and m in r.text}
    )
    return _finding("error_bodies", not leaked, scanned=len(errors), leaked=leaked)


def _banner(endpoint: Endpoint) -> dict[str, Any]:
    """Headers name no version: ``server: uvicorn`` is recorded, ``uvicorn/0.30`` fails."""
    seen: dict[str, set[str]] = {}
    for reply in endpoint.replies:
        for name in ("server", "x-powered-by", "via", "x-aspnet-version"):
            if name in reply.headers:
                seen.setdefault(name, set()).add(reply.headers[name])
    versioned = [f"{k}: {v}" for k, vs in seen.items() for v in vs if _VERSIONED.search(v)]
    shown = {k: sorted(v) for k, v in seen.items()}
    return _finding("headers", not versioned and "x-powered-by" not in seen,
                    banners=shown, versioned=versioned)  # fmt: skip
