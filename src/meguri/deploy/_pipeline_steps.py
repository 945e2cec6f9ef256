"""The steps of ``meguri run``: what each reads from the spec and what it does.

Each step is a function ``(Context) -> outputs`` (a small JSON-able dict of ids and digests:
dataset versions, run ids, model versions) that calls the phase APIs; :data:`STEPS` lists them
in order with the spec sections that enter their cache keys (:mod:`meguri.deploy._pipeline`
adds the upstream steps' outputs and the code version). A step that cannot run raises a
:class:`~meguri.errors.MeguriError` whose message is the reason the pipeline stops.

Data in memory is handed from one step to the next through ``Context.memory`` when they ran
in the same execution; a step whose upstream came from the cache reads what it needs back from
the store (the split is reproducible by row hash, the fitted transform is an artifact).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meguri.errors import GateFailedError, MeguriError, PipelineError

if TYPE_CHECKING:
    import polars as pl

    from meguri.data import PreparedData
    from meguri.spec import DataSource, ProjectSpec
    from meguri.spec._deploy import DeployEnvironment
    from meguri.store import Workspace
    from meguri.train import ActiveRun


@dataclass
class Context:
    """What a step sees: the spec, the store, the outputs of the steps before it."""

    spec: ProjectSpec
    workspace: Workspace
    spec_version_id: str
    model_name: str
    pipeline_run_id: str
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    run: ActiveRun | None = None
    say: Callable[[str], None] = lambda _message: None


@dataclass(frozen=True)
class Step:
    """One node of the pipeline: ``needs`` are the steps whose outputs enter its cache key,
    ``reads`` the spec sections that do; ``fingerprint`` (ingest) identifies what outside
    the spec it reads, None when that cannot be known cheaply (the step then always runs)."""

    name: str
    needs: tuple[str, ...]
    reads: Callable[[ProjectSpec], Any]
    action: Callable[[Context], dict[str, Any]]
    fingerprint: Callable[[ProjectSpec], str | None] | None = None
    description: str = ""
    stale: Callable[[Context, dict[str, Any]], str | None] | None = None
    """Given a cached result's outputs, why they no longer hold (the live world moved on:
    the endpoint stopped, it serves another version), or None when they still do."""


# -- data ------------------------------------------------------------------------------------


def source_of(spec: ProjectSpec) -> DataSource:
    """The source the pipeline ingests: the spec's first ``data.sources`` entry."""
    if not spec.data.sources:
        raise PipelineError(
            "data.sources is empty: add a source (e.g. `uri: bundled://breast_cancer`) so that "
            "the pipeline has something to ingest"
        )
    return spec.data.sources[0]


def source_fingerprint(spec: ProjectSpec) -> str | None:
    """Size and modification time of a local or bundled source file; None for anything else
    (a URL, a database): ingest then always runs, and its content hash decides the rest."""
    uri = source_of(spec).uri
    if uri.startswith("bundled://"):
        from meguri import datasets

        try:
            path = datasets.path(uri[len("bundled://") :])
        except (KeyError, MeguriError):
            return None
    elif "://" in uri and not uri.startswith("file://"):
        return None
    else:
        path = Path(uri.removeprefix("file://")).expanduser().resolve()
    try:
        stat = path.stat()
    except OSError:
        return None
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def ingest(ctx: Context) -> dict[str, Any]:
    from meguri.data._catalog import ingest_frame

    source = source_of(ctx.spec)
    ctx.say(f"ingesting {source.uri}")
    version, frame = ingest_frame(source, name=source.name, workspace=ctx.workspace)
    ctx.memory["frame"] = frame
    return {"dataset_version": version.id, "ref": version.ref, "rows": version.row_count}


def _source_frame(ctx: Context) -> pl.DataFrame:
    frame = ctx.memory.get("frame")
    if frame is None:
        from meguri.data import read

        frame = read(ctx.outputs["ingest"]["dataset_version"], workspace=ctx.workspace).collect()
        ctx.memory["frame"] = frame
    return frame


def validate(ctx: Context) -> dict[str, Any]:
    from meguri.data import check_version, get_version, profile_version

    ws, frame = ctx.workspace, _source_frame(ctx)
    version = get_version(ctx.outputs["ingest"]["dataset_version"], workspace=ws)
    target = ctx.spec.requirements.functional.target
    ctx.say(f"profiling and checking {version.ref}")
    found = profile_version(version, target=target, frame=frame, workspace=ws)
    report = check_version(version, ctx.spec, data_profile=found, frame=frame, workspace=ws)
    report.raise_for_errors()
    return {"checks": len(report.results), "warnings": len(report.warnings), "errors": 0}


def prepare(ctx: Context) -> dict[str, Any]:
    from meguri.compute import executor
    from meguri.data import get_version, split
    from meguri.data._pipeline import _modelling_columns, prepare_parts

    ws, spec = ctx.workspace, ctx.spec
    target = spec.requirements.functional.target
    version = get_version(ctx.outputs["ingest"]["dataset_version"], workspace=ws)
    frame = _modelling_columns(_source_frame(ctx), spec)
    ctx.say("splitting and fitting the preparation steps on the training rows")
    parts = split(frame, spec.data.split, target=target)
    engine = executor("ray") if spec.pipeline.compute == "ray" else None
    transform, digest, stored = prepare_parts(
        parts, spec.data.prepare, target=target, source=version,
        name=source_of(spec).name, workspace=ws, engine=engine,
    )  # fmt: skip
    ctx.memory["raw"] = parts.parts()
    ctx.memory["transform"] = transform
    return {"parts": {p: v.id for p, v in stored.items()}, "transform_digest": digest}


def prepared_data(ctx: Context) -> PreparedData:
    """The :class:`PreparedData` of this execution, rebuilt from the store when ``prepare``
    came from the cache (same split by row hash, the stored transform, the stored reports)."""
    from meguri.data import (
        DatasetProfile,
        FittedTransform,
        PreparedData,
        QualityReport,
        attachment,
        get_version,
        split,
    )
    from meguri.data._pipeline import _modelling_columns

    ws, spec, out = ctx.workspace, ctx.spec, ctx.outputs["prepare"]
    target = spec.requirements.functional.target
    source = get_version(ctx.outputs["ingest"]["dataset_version"], workspace=ws)
    raw = ctx.memory.get("raw")
    if raw is None:
        raw = split(_modelling_columns(_source_frame(ctx), spec), spec.data.split, target=target)
        raw = raw.parts()
    transform = ctx.memory.get("transform") or FittedTransform.from_json(
        ws.artifacts.get_bytes(out["transform_digest"])
    )
    profile = DatasetProfile.from_json(attachment(source.id, "profile", workspace=ws) or b"")
    quality = QualityReport.from_json(attachment(source.id, "quality", workspace=ws) or b"")
    parts = {p: get_version(i, workspace=ws) for p, i in out["parts"].items()}
    return PreparedData(
        source, profile, quality, parts, transform, out["transform_digest"], target, raw=raw
    )


# -- model -----------------------------------------------------------------------------------


def train(ctx: Context) -> dict[str, Any]:
    from meguri.registry._package import log_model
    from meguri.train._train import train as train_model

    search = ctx.spec.model.search
    result = train_model(
        ctx.spec,
        workspace=ctx.workspace,
        spec_version_id=ctx.spec_version_id,
        prepared=prepared_data(ctx),
        progress=ctx.say,
        tags={"pipeline_run": ctx.pipeline_run_id},
    )
    ctx.say("packaging the best model (verified on held-out rows)")
    digest = log_model(result, ctx.workspace)
    return {
        "train_run": result.run_id,
        "algorithm": result.best.name,
        "tuned": search is not None,
        "package_digest": digest,
    }


def evaluate(ctx: Context) -> dict[str, Any]:
    """The held-out metrics of the trained model, beside those of the version now in
    production (if any): the evidence that the gate and a reviewer read."""
    from meguri.train import get_run

    run = get_run(ctx.outputs["train"]["train_run"], workspace=ctx.workspace)
    metrics = {k: p.value for k, p in run.metrics.items() if k.startswith(("validation/", "test/"))}
    if ctx.run is not None and metrics:
        ctx.run.log_metrics(metrics)
    return {"metrics": metrics, "production": _production(ctx)}


def _production(ctx: Context) -> dict[str, Any] | None:
    from meguri.registry import get_model_version

    try:
        version = get_model_version(f"{ctx.model_name}@production", workspace=ctx.workspace)
    except MeguriError:
        return None
    return {"model_version": version.id, "ref": version.ref, "metrics": dict(version.metrics)}


def gate(ctx: Context) -> dict[str, Any]:
    """Check the spec's validation and test criteria on the evaluated metrics (stored as
    check results of the training run, which promotion reads); a failure stops here."""
    from meguri.train._train import gate as check

    results = check(
        ctx.spec,
        ctx.outputs["evaluate"]["metrics"],
        workspace=ctx.workspace,
        spec_version_id=ctx.spec_version_id,
        subject_kind="run",
        subject_id=ctx.outputs["train"]["train_run"],
        evidence={"pipeline_run": ctx.pipeline_run_id},
    )
    failing = [r for r in results if not r.passed]
    if failing:
        detail = "; ".join(
            f"{r.criterion_id}: {r.metric} = {r.value} (needs {r.comparison} {r.threshold})"
            for r in failing
        )
        raise GateFailedError(
            f"{len(failing)} success criteria failed: {detail}. Improve the model or the data "
            "(or change success_criteria in the spec), then re-run `meguri run`"
        )
    return {"checks": [r.id for r in results], "passed": len(results)}


def register(ctx: Context) -> dict[str, Any]:
    from meguri.registry import register_model

    version = register_model(
        ctx.outputs["train"]["train_run"],
        ctx.model_name,
        workspace=ctx.workspace,
        tags={"pipeline_run": ctx.pipeline_run_id},
    )
    return {"model_version": version.id, "ref": version.ref}


# -- deployment ------------------------------------------------------------------------------


def _deploy_api(module: str, function: str, step: str) -> Callable[..., Any]:
    try:
        return getattr(import_module(f"meguri.deploy.{module}"), function)  # type: ignore[no-any-return]
    except (ImportError, AttributeError):
        raise PipelineError(
            f"The step {step!r} is not available in this meguri: meguri.deploy.{module}."
            f"{function} is missing. Run the pipeline without it: `meguri run --no-deploy` "
            "(or `--until register`)"
        ) from None


def _plain(value: Any) -> Any:
    """A deploy API's answer as JSON-able outputs: its id/ref/state fields, or its text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    fields = ("id", "ref", "env", "state", "revision", "url", "passed")
    found = {f: _plain(getattr(value, f)) for f in fields if hasattr(value, f)}
    return found or str(value)


STAGING = "staging"


def staging_environment(spec: ProjectSpec) -> DeployEnvironment:
    """``deploy.environments.staging`` of the spec (defaults when absent; port 0 = a free
    one), its p99 threshold defaulting to ``requirements.non_functional.latency_p95_ms``."""
    from meguri.deploy._deployments import spec_environment

    return spec_environment(spec, STAGING, declared=False)


def deploy_staging(ctx: Context) -> dict[str, Any]:
    """A real endpoint on 127.0.0.1 serving the registered version: the first deploy serves it
    at once, a later one follows the environment's strategy, waited for until it settles (a
    rollout rolled back fails the step with the supervisor's reason)."""
    deploy = _deploy_api("_deployments", "deploy", "deploy_staging")
    wait_settled = _deploy_api("_deployments", "wait_settled", "deploy_staging")
    ref, settings = ctx.outputs["register"]["ref"], staging_environment(ctx.spec)
    ctx.say(f"deploying {ref} to {STAGING} ({settings.workers} worker(s))")
    revision = deploy(
        ref, env=STAGING, workspace=ctx.workspace, environment=settings,
        reason=f"pipeline {ctx.pipeline_run_id}",
    )  # fmt: skip
    if revision.state.is_active:
        strategy = settings.strategy
        ctx.say(f"rolling out ({revision.strategy}); waiting for it to settle")
        bake = strategy.bake_seconds * len(strategy.resolved_steps)
        revision = wait_settled(STAGING, workspace=ctx.workspace, timeout=bake + 60.0)
    return _served_outputs(ctx, ref, revision)


def _settled_target(revision: Any) -> Any:
    """The version ``revision`` serves all requests with once its rollout is over."""
    from meguri.deploy._rollout import phases

    return phases(revision)[-1][0][0]


def _served_outputs(ctx: Context, ref: str, revision: Any) -> dict[str, Any]:
    from meguri.deploy._deployments import status

    primary = _settled_target(revision)
    if primary.ref != ref or revision.state.value != "live":
        raise PipelineError(
            f"deploy_staging: revision {revision.number} of {STAGING} ended "
            f"{revision.state.value} ({revision.reason}) instead of serving {ref}; see "
            f"`meguri deploy history --env {STAGING}`, fix the cause, then `meguri run --resume`"
        )
    now = status(STAGING, workspace=ctx.workspace)
    if now.url is None:
        raise PipelineError(
            f"deploy_staging: the {STAGING} endpoint is not running after its deploy; see "
            f"`meguri deploy status --env {STAGING}` and its supervisor.log"
        )
    ctx.say(f"{STAGING} serves {ref} at {now.url} (revision {revision.number})")
    return {
        "deployment": {
            "id": now.deployment.id, "env": STAGING, "revision": revision.number,
            "model_version": primary.model_version_id, "ref": ref, "url": now.url,
        },
    }  # fmt: skip


def staging_stale(ctx: Context, outputs: dict[str, Any]) -> str | None:
    """Why a cached deploy_staging result no longer holds: the endpoint stopped, or it serves
    another revision or version than the one recorded; None while it still serves it."""
    from meguri.deploy._deployments import status

    recorded = outputs.get("deployment") or {}
    try:
        now = status(STAGING, workspace=ctx.workspace)
    except MeguriError:
        return f"there is no {STAGING} deployment any more"
    if now.url is None:
        return f"the {STAGING} endpoint is not running"
    current = now.revision
    if current is None or current.state.value != "live":
        return f"the {STAGING} endpoint has no live revision"
    primary = _settled_target(current)
    if primary.model_version_id != recorded.get("model_version"):
        return f"{STAGING} now serves {primary.ref}, not {recorded.get('ref')}"
    if now.url != recorded.get("url") or current.number != recorded.get("revision"):
        return f"{STAGING} now serves revision {current.number} at {now.url}"
    return None


def pre_promotion(ctx: Context) -> dict[str, Any]:
    """meguri.deploy._checks.pre_promotion_tests against the staging endpoint (its URL from
    the deploy step when it gives one, else the tests serve the version themselves)."""
    tests = _deploy_api("_checks", "pre_promotion_tests", "pre_promotion")
    ref = ctx.outputs["register"]["ref"]
    deployment = ctx.outputs.get("deploy_staging", {}).get("deployment")
    url = deployment.get("url") if isinstance(deployment, dict) else None
    ctx.say(f"running the pre-promotion tests on {ref}")
    from meguri.deploy._checks import PrePromotionSettings
    from meguri.deploy._deployments import endpoint_token

    staging = staging_environment(ctx.spec)
    # the staging endpoint is held to its own token and body limit (the security check)
    token = endpoint_token(staging, STAGING) if url is not None else None
    report = tests(
        ref, workspace=ctx.workspace, url=url, environment=STAGING, auth_token=token,
        spec_version_id=ctx.spec_version_id,
        settings=PrePromotionSettings(max_body_bytes=staging.max_body_bytes),
    )  # fmt: skip
    if not report.passed:
        raise GateFailedError(
            f"The pre-promotion tests failed:\n{report.summary()}\nFix the failing checks, "
            "then `meguri run --resume` continues from here"
        )
    return {
        "passed": len(report.checks),
        "checks": [c.id for c in report.checks],
        "measured": dict(report.measured),
    }


def promote(ctx: Context) -> dict[str, Any]:
    from meguri.registry import promote as promote_version

    version = promote_version(ctx.outputs["register"]["ref"], workspace=ctx.workspace)
    return {"model_version": version.id, "ref": version.ref, "alias": "production"}


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _data_sections(spec: ProjectSpec) -> Any:
    functional = spec.requirements.functional
    return {
        "split": _dump(spec.data.split),
        "prepare": [_dump(s) for s in spec.data.prepare],
        "excluded": spec.constraints.excluded_columns,
        "inputs": functional.inputs,
        "target": functional.target,
    }


def _quality_sections(spec: ProjectSpec) -> Any:
    return {"quality": _dump(spec.data.quality), "functional": _dump(spec.requirements.functional)}


def _train_sections(spec: ProjectSpec) -> Any:
    return {
        "model": _dump(spec.model),
        "task": spec.requirements.functional.task,
        "non_functional": _dump(spec.requirements.non_functional),
        "constraints": _dump(spec.constraints),
    }


STEPS: tuple[Step, ...] = (
    Step("ingest", (), lambda s: _dump(source_of(s)), ingest, source_fingerprint,
         "read the source; a new dataset version only if its content changed"),
    Step("validate", ("ingest",),
         _quality_sections,
         validate, description="profile and run the quality checks"),
    Step("prepare", ("ingest",), _data_sections, prepare,
         description="split, fit the preparation on train, store the parts"),
    Step("train", ("prepare", "validate"), _train_sections, train,
         description="cross-validate the candidates (tune with model.search), package the best"),
    Step("evaluate", ("train",), lambda s: None, evaluate,
         description="held-out metrics beside the production version's"),
    Step("gate", ("evaluate", "train"), lambda s: [_dump(c) for c in s.success_criteria], gate,
         description="the spec's validation and test criteria"),
    Step("register", ("gate", "train"), lambda s: s.project, register,
         description="the next version of the project's model"),
    Step("deploy_staging", ("register",), lambda s: _dump(staging_environment(s)),
         deploy_staging, description="serve the version on the staging endpoint (loopback)",
         stale=staging_stale),
    Step("pre_promotion", ("deploy_staging", "register"),
         lambda s: {"nf": _dump(s.requirements.non_functional), "deploy": _dump(s.deploy)},
         pre_promotion, description="functional, performance and security tests on staging"),
    Step("promote", ("pre_promotion", "register"), lambda s: None, promote,
         description="point production at the version (gated)"),
)  # fmt: skip
STEP_NAMES: tuple[str, ...] = tuple(s.name for s in STEPS)
DEPLOY_STEPS: tuple[str, ...] = ("deploy_staging", "pre_promotion", "promote")
