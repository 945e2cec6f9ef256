"""``meguri demo``: one full turn of the phases built so far, on a real bundled dataset.

Spec → spec version → data phase (ingest, profile + HTML report, quality checks, split,
preparation fitted on the training rows; all recorded with lineage) → training (every candidate
of the zoo cross-validated as a tracked run, the best evaluated on validation and test with
bootstrap intervals, plots, slices and fairness where declared) → the spec's criteria stored as
check results → the best model packaged (ONNX where exact, every file's sha256 recorded) and
registered, its model card written, staged, put through the pre-promotion tests (functional,
performance, security) and, with every gate passing, promoted to ``production`` → served over
HTTP on loopback and sent real requests in every protocol (SageMaker CSV and JSON, MLflow's
four JSON forms, Open Inference Protocol v2) → deployments: the version served by a supervised
endpoint in ``staging`` (``meguri.deploy``), the pre-promotion tests run against that URL, then
deployed to ``production``; a second, broken version (trained on the ten ``mean_*`` columns
only, so its signature refuses the 30-column rows the clients send) pushed to production as a
canary while traffic flows, and rolled back automatically on its schema violations →
monitoring (:mod:`meguri.cli._demo_monitor`): normal then shifted traffic, windows of drift and
quality, feedback and accuracy per window, an alert to a webhook, retraining on the labelled
production rows and its canary → the revision history → every endpoint stopped → a summary.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

if TYPE_CHECKING:
    import polars as pl

    from meguri.cli._demo_monitor import MonitorFigures
    from meguri.data import PreparedData
    from meguri.spec import ProjectSpec
    from meguri.store import Workspace
    from meguri.store.metadata import ModelVersion
    from meguri.train import TrainResult

console = Console(width=None if sys.stdout.isatty() else 120)
MODEL_NAME = "breast-cancer"
SAMPLE_ROWS = 3


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Where to create the demo project.")] = Path(
        "meguri-demo"
    ),
    no_ui: Annotated[
        bool, typer.Option("--no-ui", help="Exit at the end instead of serving the Studio.")
    ] = False,
    port: Annotated[int, typer.Option(help="Port of the Studio at the end.")] = 8000,
) -> None:
    """Create an example project from a bundled real dataset, take it once around the loop,
    then serve the Studio on 127.0.0.1 to browse it (Ctrl-C stops; --no-ui exits instead)."""
    from meguri.store import open_workspace

    began = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    spec_text = _ensure_spec(folder)
    ws = open_workspace(folder)
    try:
        spec, spec_version_id = _save_spec(ws, spec_text)
        prepared = _prepare_data(ws, spec)
        result = _train(ws, spec, spec_version_id, prepared)
        version = _register(ws, result)
        calls = _serve_and_call(ws, version, prepared)
        rollout = _deployments(ws, spec, version, prepared)
        _summary(ws, spec_version_id, prepared, result, version, calls)
        _rollout_summary(rollout)
        console.print(f"one full turn in {time.perf_counter() - began:.1f} s")
        if not no_ui:
            _studio(ws, port)
    finally:
        ws.close()


def _studio(ws: Workspace, port: int) -> None:
    """A demo user (admin of the project; a new password each run, shown once) and the
    Studio with the platform API on 127.0.0.1 until Ctrl-C."""
    import secrets

    from meguri.cli._server import serve_platform

    password = secrets.token_urlsafe(12)
    access = ws.metadata.access
    if access.find_user("demo") is None:
        access.create_user("demo", by=ws.user, password=password)
    else:
        access.set_password("demo", password, by=ws.user)
    access.set_role(ws.project.id, "demo", "admin", by=ws.user)
    console.print(
        Panel.fit(
            f"Studio: [bold]http://127.0.0.1:{port}/[/]\n"
            f"sign in as [bold]demo[/] with password [bold]{password}[/] (shown once)\n"
            "Ctrl-C stops it; `meguri demo --no-ui` exits here instead",
            title="browse the loop",
        )
    )
    with contextlib.suppress(KeyboardInterrupt):
        serve_platform(host="127.0.0.1", port=port, studio=True, workspace=ws)


def _ensure_spec(folder: Path) -> str:
    from meguri.spec import SPEC_FILE, render_example_spec

    path = folder / SPEC_FILE
    if not path.exists():
        path.write_text(render_example_spec("breast-cancer-demo"), encoding="utf-8")
        console.print(f"wrote the example spec [bold]{path}[/]")
    return path.read_text(encoding="utf-8")


def _save_spec(ws: Workspace, text: str) -> tuple[ProjectSpec, str]:
    from meguri.spec import parse_spec, save_spec_version

    spec = parse_spec(text)
    version, created = save_spec_version(
        ws.metadata, ws.project.id, text, created_by=ws.user, message="meguri demo"
    )
    console.print(f"spec version [bold]{version.id}[/] ({'new' if created else 'unchanged'})")
    return spec, version.id


def _prepare_data(ws: Workspace, spec: ProjectSpec) -> PreparedData:
    from meguri.cli._data_phase import print_prepared
    from meguri.data import prepare, render_profile_html

    with console.status("data phase…") as status:
        prepared = prepare(spec, workspace=ws, progress=lambda m: status.update(f"{m}…"))
    print_prepared(prepared)
    html = render_profile_html(prepared.profile, prepared.source.ref, quality=prepared.quality)
    report = _report_path(ws, f"{prepared.source.name}-profile.html")
    report.write_text(html, encoding="utf-8")
    console.print(f"profile and quality report: [bold]{report}[/]")
    return prepared


def _report_path(ws: Workspace, name: str) -> Path:
    folder = ws.root / "reports"
    folder.mkdir(exist_ok=True)
    return folder / name


def _train(
    ws: Workspace, spec: ProjectSpec, spec_version_id: str, prepared: PreparedData
) -> TrainResult:
    from meguri.cli._train import print_result
    from meguri.train import train

    with console.status("training…") as status:
        result = train(
            spec,
            workspace=ws,
            spec_version_id=spec_version_id,
            prepared=prepared,
            experiment="demo",
            progress=lambda m: status.update(f"{m}…"),
        )
    print_result(result)
    return result


def _register(ws: Workspace, result: TrainResult) -> ModelVersion:
    """Package and register the best model, write its card, stage it, promote it if it may."""
    from meguri.errors import GateFailedError
    from meguri.registry import promote, read_card, register_model, set_alias

    with console.status("packaging (ONNX, verified on held-out rows) and registering…"):
        version = register_model(result, MODEL_NAME, workspace=ws)
    console.print(
        f"registered [bold]{version.ref}[/] ({version.id}): runtime {version.runtime}, "
        f"{len(version.files)} files with their sha256"
    )
    for suffix, html in (("md", False), ("html", True)):
        card = _report_path(ws, f"{MODEL_NAME}-{version.version}-card.{suffix}")
        card.write_text(read_card(version.id, html=html, workspace=ws), encoding="utf-8")
    console.print(f"model card: [bold]{card}[/]")
    version = set_alias(version.id, "staging", workspace=ws)
    _pre_promotion(ws, version)
    try:
        version = promote(version.id, "production", workspace=ws)
    except GateFailedError as err:
        console.print(f"[yellow]not promoted to production:[/] {err}")
    console.print(f"aliases of {version.ref}: {', '.join(version.aliases) or '-'}")
    return version


def _pre_promotion(ws: Workspace, version: ModelVersion) -> None:
    """Functional, performance and security tests of the staged version, stored as checks."""
    from meguri.cli._checks import print_report
    from meguri.deploy._checks import PrePromotionSettings, pre_promotion_tests

    with console.status("pre-promotion tests (functional, a 2 s load test, security)…"):
        report = pre_promotion_tests(
            version.id, workspace=ws, settings=PrePromotionSettings(duration_s=2.0)
        )
    print_report(report)


def _serve_and_call(
    ws: Workspace, version: ModelVersion, prepared: PreparedData
) -> list[tuple[str, int, str, float]]:
    """Serve the version on loopback and call it in every protocol; (protocol, status,
    answer, milliseconds) per call."""
    from meguri.registry import load_model
    from meguri.serve import ServeSettings, serve_in_background

    started = time.perf_counter()
    model = load_model(f"{version.name}@staging", workspace=ws)
    settings = ServeSettings(
        port=0, capture_rate=1.0, capture_url=str(ws.root / ".meguri" / "capture")
    )
    rows = prepared.raw["test"].drop(prepared.target).head(SAMPLE_ROWS)
    with serve_in_background(model, settings) as url:
        console.print(
            f"serving {version.ref} at [bold]{url}[/] "
            f"(loaded and ready in {time.perf_counter() - started:.2f} s)"
        )
        _http(url + "/ping", None, "")  # the first connection pays for imports, not the model
        calls = [
            _call(url, name, path, body, kind)
            for name, path, body, kind in _requests(rows, model.name)
        ]
        metrics = _http(url + "/metrics", None, "")[1]
    requests = [line for line in metrics.splitlines() if line.startswith("meguri_requests_total")]
    console.print(f"/metrics: {len(requests)} request counters, e.g. {requests[:1]}")
    return calls


def _requests(rows: pl.DataFrame, name: str) -> list[tuple[str, str, bytes, str]]:
    import orjson

    columns = rows.columns
    records = rows.to_dicts()
    data = [list(r.values()) for r in records]
    csv = "\n".join(",".join("" if v is None else repr(float(v)) for v in r) for r in data)
    v2 = {
        "inputs": [
            {"name": c, "shape": [len(records)], "datatype": "FP64", "data": rows[c].to_list()}
            for c in columns
        ]
    }
    json = "application/json"
    partial = [{c: v for c, v in records[0].items() if c != columns[0]}]
    return [
        ("SageMaker text/csv", "/invocations", csv.encode(), "text/csv"),
        ("MLflow dataframe_split", "/invocations",
         orjson.dumps({"dataframe_split": {"columns": columns, "data": data}}), json),
        ("MLflow dataframe_records", "/invocations",
         orjson.dumps({"dataframe_records": records}), json),
        ("MLflow instances", "/invocations", orjson.dumps({"instances": records}), json),
        ("MLflow inputs", "/invocations", orjson.dumps({"inputs": rows.to_dict(as_series=False)}),
         json),
        ("Open Inference v2", f"/v2/models/{name}/infer", orjson.dumps(v2), json),
        ("bad input (a column missing)", "/invocations",
         orjson.dumps({"dataframe_records": partial}), json),
    ]  # fmt: skip


def _call(url: str, name: str, path: str, body: bytes, kind: str) -> tuple[str, int, str, float]:
    started = time.perf_counter()
    status, text = _http(url + path, body, kind)
    return name, status, text, (time.perf_counter() - started) * 1000


def _http(url: str, body: bytes | None, kind: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    headers = {"Content-Type": kind} if kind else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()


def _calls_table(calls: list[tuple[str, int, str, float]]) -> Table:
    table = Table(title="Requests to the served model", title_justify="left")
    for col in ("protocol", "status", "response", "ms"):
        table.add_column(col, justify="right" if col in ("status", "ms") else "left")
    for name, status, text, ms in calls:
        colour = "green" if status == 200 else "yellow"
        table.add_row(name, f"[{colour}]{status}[/]", text[:100], f"{ms:.1f}")
    return table


def _summary(
    ws: Workspace,
    spec_version_id: str,
    prepared: PreparedData,
    result: TrainResult,
    version: ModelVersion,
    calls: list[tuple[str, int, str, float]],
) -> None:
    run = ws.metadata.runs.get_run(result.run_id)
    peak = (run.peak_memory_bytes or 0) >> 20
    resources = f"wall {run.wall_seconds:.2f} s · cpu {run.cpu_seconds:.2f} s · peak {peak} MiB"
    parts = ", ".join(v.ref for v in prepared.parts.values())
    gates = "pass" if all(c.passed for c in result.checks) else "fail"
    console.print(_calls_table(calls))
    console.print(
        Panel.fit(
            f"project [bold]{ws.project.name}[/] in {ws.root}\n"
            f"spec version [bold]{spec_version_id}[/]\n"
            f"data {prepared.source.ref} → {parts}\n"
            f"run [bold]{run.id}[/] ({run.status.value}) · best {result.best.name} · {resources}\n"
            f"gates {gates} · model [bold]{version.ref}[/] ({', '.join(version.aliases)})",
            title="meguri demo",
        )
    )
    venv = sys.prefix != sys.base_prefix and "VIRTUAL_ENV" in os.environ
    activate = "" if venv else f"source {Path(sys.prefix) / 'bin' / 'activate'} && "
    console.print(
        f"Next: [bold]{activate}cd {ws.root}[/], then try `meguri runs list -e demo`, "
        f"`meguri models show {version.name}`, `meguri models card {version.ref}`, "
        f"`meguri serve {version.name}@production` (then `curl localhost:8080/ping`), "
        f"`meguri data lineage {prepared.parts['train'].ref}`, `meguri runs leaderboard -e demo`."
    )


# -- deployments -------------------------------------------------------------------------------

BAKE_SECONDS = 4.0


@dataclass
class Rollout:
    """What the deployment part measured."""

    staging_s: float = 0.0
    production_s: float = 0.0
    rollback_s: float = 0.0
    sent: int = 0
    failed: int = 0
    failed_after: int = 0
    reason: str = ""
    monitoring: MonitorFigures | None = None


def _deployments(
    ws: Workspace, spec: ProjectSpec, version: ModelVersion, prepared: PreparedData
) -> Rollout:
    """Staging endpoint → pre-promotion tests on its URL → production → a broken canary rolled
    back under traffic → the history; every endpoint stopped at the end."""
    from meguri.cli._demo_monitor import monitoring_phase
    from meguri.deploy import stop

    figures, started = Rollout(), list[str]()
    try:
        url = _deploy_timed(ws, version.ref, "staging", figures, started)
        _pre_promotion_on(ws, version, url)
        url = _deploy_timed(ws, version.ref, "production", figures, started)
        broken = _broken_version(ws, spec)
        _canary_under_traffic(ws, spec, broken, url, prepared, figures)
        figures.monitoring = monitoring_phase(ws, spec, prepared, url, console)
        console.print(_history_table(ws, "production"))
    finally:
        for env in started:
            stop(env, workspace=ws)
            console.print(f"stopped the {env} endpoint")
    return figures


def _deploy_timed(ws: Workspace, ref: str, env: str, figures: Rollout, started: list[str]) -> str:
    from meguri.deploy import deploy, status

    began = time.perf_counter()
    started.append(env)
    with console.status(f"deploying {ref} to {env} (a supervised endpoint on loopback)…"):
        # All at once: on a re-run the endpoint may still serve an earlier demo's version.
        revision = deploy(ref, env=env, workspace=ws, strategy="all_at_once", reason="meguri demo")
    took = time.perf_counter() - began
    setattr(figures, f"{env}_s", took)
    url = status(env, workspace=ws).url or ""
    console.print(
        f"deployed {ref} to [bold]{env}[/] at [bold]{url}[/]: revision {revision.number}, "
        f"{revision.strategy}, serving in {took:.2f} s"
    )
    return url


def _pre_promotion_on(ws: Workspace, version: ModelVersion, url: str) -> None:
    from meguri.cli._checks import print_report
    from meguri.deploy._checks import PrePromotionSettings, pre_promotion_tests

    with console.status(f"pre-promotion tests against the staging endpoint {url}…"):
        report = pre_promotion_tests(
            version.id, workspace=ws, url=url, environment="staging",
            settings=PrePromotionSettings(duration_s=2.0),
        )  # fmt: skip
    print_report(report)
    verdict = "pass" if report.passed else "FAIL"
    console.print(f"pre-promotion tests on staging ({url}): {verdict}")


def _broken_version(ws: Workspace, spec: ProjectSpec) -> ModelVersion:
    """A real second version that cannot take the live traffic: trained on the ten ``mean_*``
    measurements only, its signature refuses rows with the other 20 columns."""
    from meguri.registry import register_model
    from meguri.train import train

    functional = spec.requirements.functional
    narrow = spec.model_copy(
        update={
            "requirements": spec.requirements.model_copy(
                update={"functional": functional.model_copy(update={"inputs": _mean_columns()})}
            ),
            "constraints": spec.constraints.model_copy(update={"allowed_algorithms": ["linear"]}),
            "model": spec.model.model_copy(update={"cv_folds": 2, "search": None}),
        }
    )
    with console.status("training the broken version (10 mean_* columns, linear)…"):
        result = train(narrow, workspace=ws, experiment="demo-broken")
        broken = register_model(result, MODEL_NAME, workspace=ws, tags={"demo": "broken"})
    console.print(
        f"registered [bold]{broken.ref}[/], a broken version: trained on the 10 mean_* columns "
        "only, its signature refuses the 30-column rows that clients send"
    )
    return broken


def _mean_columns() -> list[str]:
    from meguri import datasets

    table = datasets.load("breast_cancer")
    return [c for c in table.column_names if c.startswith("mean_")]


def _canary_under_traffic(
    ws: Workspace,
    spec: ProjectSpec,
    broken: ModelVersion,
    url: str,
    prepared: PreparedData,
    figures: Rollout,
) -> None:
    from meguri.deploy import deploy, wait_settled
    from meguri.spec._deploy import DeployEnvironment, StrategySpec

    body = _v2_body(prepared)
    traffic = _Traffic(f"{url}/v2/models/{MODEL_NAME}/infer", body)
    canary = StrategySpec(kind="canary", steps=[50.0, 100.0], bake_seconds=BAKE_SECONDS)
    settings = spec.deploy.environments.get("production", DeployEnvironment())
    settings = settings.model_copy(update={"strategy": canary})
    console.print(
        f"deploying {broken.ref} to production as a canary (50% of requests, {BAKE_SECONDS:g} s "
        "bake, schema violations ≤ 5%) while clients send traffic…"
    )
    with traffic:
        began = time.perf_counter()
        deploy(broken.ref, env="production", workspace=ws, environment=settings, reason="retrain")
        settled = wait_settled("production", workspace=ws, timeout=60.0)
        figures.rollback_s = time.perf_counter() - began
        figures.sent, figures.failed = traffic.counts()
    figures.reason = settled.reason
    after = [_http(traffic.url, body, "application/json")[0] for _ in range(20)]
    figures.failed_after = sum(code != 200 for code in after)
    console.print(
        f"[bold]automatic rollback[/] after {figures.rollback_s:.2f} s: {settled.reason}; "
        f"{figures.failed} of {figures.sent} requests refused during the canary, "
        f"{figures.failed_after} of {len(after)} after the rollback"
    )


def _v2_body(prepared: PreparedData) -> bytes:
    import orjson

    rows = prepared.raw["test"].drop(prepared.target).head(SAMPLE_ROWS)
    inputs = [
        {"name": c, "shape": [rows.height], "datatype": "FP64", "data": rows[c].to_list()}
        for c in rows.columns
    ]
    return orjson.dumps({"inputs": inputs})


class _Traffic:
    """A client thread sending the same v2 request in a loop, counting the non-200 answers."""

    def __init__(self, url: str, body: bytes) -> None:
        self.url, self.body = url, body
        self._stop = threading.Event()
        self._codes: list[int] = []
        self._thread = threading.Thread(target=self._send, daemon=True)

    def _send(self) -> None:
        while not self._stop.is_set():
            self._codes.append(_http(self.url, self.body, "application/json")[0])
            time.sleep(0.02)

    def counts(self) -> tuple[int, int]:
        codes = list(self._codes)
        return len(codes), sum(code != 200 for code in codes)

    def __enter__(self) -> _Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def _history_table(ws: Workspace, env: str) -> Table:
    from meguri.deploy import history

    table = Table(title=f"Revisions of {env}", title_justify="left")
    for col in ("#", "strategy", "serves", "state", "reason"):
        table.add_column(col)
    for revision in history(env, workspace=ws):
        serves = ", ".join(f"{t.ref} ({t.role} {t.weight:g}%)" for t in revision.targets)
        table.add_row(
            str(revision.number), revision.strategy, serves, revision.state.value,
            revision.reason,
        )  # fmt: skip
    return table


def _rollout_summary(figures: Rollout) -> None:
    console.print(
        Panel.fit(
            f"staging deploy {figures.staging_s:.2f} s · production deploy "
            f"{figures.production_s:.2f} s\n"
            f"broken canary rolled back in {figures.rollback_s:.2f} s: {figures.reason}\n"
            f"requests failed: {figures.failed} of {figures.sent} during the canary "
            f"(the broken version's share), {figures.failed_after} after the rollback",
            title="deployments",
        )
    )
    if figures.monitoring is not None:
        _monitoring_summary(figures.monitoring)


def _monitoring_summary(m: MonitorFigures) -> None:
    def num(value: float | None, form: str = "{:.3f}") -> str:
        return "-" if value is None else form.format(value)

    console.print(
        Panel.fit(
            f"{m.sent} requests · {m.windows} windows · {m.labels} labels by feedback\n"
            f"drift share: normal {num(m.normal_drift, '{:.0%}')} → shifted "
            f"{num(m.shifted_drift, '{:.0%}')} · ROC AUC: normal {num(m.normal_auc)} → shifted "
            f"{num(m.shifted_auc)}\n"
            f"alerts: {', '.join(m.alerts) or 'none'} · webhook: {', '.join(m.webhook) or 'none'}\n"
            f"retraining: {m.retrain or 'none'}\ncanary: {m.canary or 'none'}\n"
            f"report: {m.report}",
            title="monitoring",
        )
    )
