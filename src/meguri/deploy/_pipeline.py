"""``meguri run``: the spec end to end as a pipeline of cached steps.

ingest → validate → prepare → train (tune with ``model.search``) → evaluate → gate → register
→ deploy_staging → pre_promotion → promote (see :mod:`meguri.deploy._pipeline_steps`).

An execution is a run of experiment ``pipeline`` (tag ``kind=pipeline``) and each step a child
run (tag ``kind=step``) with params ``cache_key``, ``code_version``, ``spec_sections`` (sha256 of
the spec sections the step reads) and ``in.<step>`` (sha256 of each upstream step's outputs);
its tags are ``status`` (ran / cached / failed), ``cached_from`` (the step run whose outputs were
reused), ``outputs`` (JSON: dataset version ids, run ids, model version ids) and, when a cached
result was found but no longer holds, ``stale_cache`` (why). The cache key is
the sha256 of those inputs: before a step runs, a finished step run with the same key is looked
up and its outputs reused, so re-running with nothing changed only reads the store, and a change
re-runs from the first step it affects. A failed step stops the execution with the reason (the
pipeline run ends failed); running again (``resume=True`` names the run resumed) continues from
it with the cached outputs of the steps before. ``until`` stops after a step; ``from_step`` runs
a step and those after it again, and needs the steps before it cached.

A step acting on the live world (``deploy_staging``) also checks a cached result against it
(:attr:`Step.stale`): when the staging endpoint no longer serves the recorded version and
revision, the step runs again and says why.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

from meguri.deploy._pipeline_steps import (
    STEP_NAMES,
    STEPS,
    Context,
    Step,
)
from meguri.errors import MeguriError, PipelineError
from meguri.spec import ProjectSpec, parse_spec, save_spec_version
from meguri.store import Workspace, default_workspace
from meguri.store.metadata import RunStatus

if TYPE_CHECKING:
    from meguri.store.metadata import Run
    from meguri.train import ActiveRun

__all__ = [
    "EXPERIMENT",
    "STEP_NAMES",
    "PipelineError",
    "PipelineResult",
    "Reporter",
    "StepResult",
    "list_pipeline_runs",
    "pipeline_steps",
    "run_pipeline",
]

EXPERIMENT = "pipeline"
Status = Literal["ran", "cached", "failed"]


@dataclass(frozen=True)
class StepResult:
    name: str
    status: Status
    seconds: float
    run_id: str
    outputs: dict[str, Any] = field(default_factory=dict)
    cached_from: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class PipelineResult:
    """One execution: its run, the steps it reached (in order) and the wall time."""

    run_id: str
    steps: list[StepResult]
    seconds: float
    spec_version_id: str

    @property
    def failed(self) -> StepResult | None:
        return next((s for s in self.steps if s.status == "failed"), None)

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def all_cached(self) -> bool:
        return bool(self.steps) and all(s.status == "cached" for s in self.steps)

    def summary(self) -> str:
        """``"10 steps, all cached, 0.4 s"`` / ``"10 steps: 3 ran, 7 cached, 12.1 s"``."""
        n, took = len(self.steps), f"{self.seconds:.1f} s"
        if self.failed is not None:
            return f"failed at {self.failed.name} after {n} step(s), {took}: {self.failed.error}"
        if self.all_cached:
            return f"{n} steps, all cached, {took}"
        ran = sum(s.status == "ran" for s in self.steps)
        return f"{n} steps: {ran} ran, {n - ran} cached, {took}"


class Reporter(Protocol):
    """Progress callbacks of :func:`run_pipeline` (the CLI prints them with Rich)."""

    def start(self, step: str) -> None:
        """``step`` begins (looked up in the cache, then run if not found)."""

    def message(self, step: str, text: str) -> None:
        """Progress inside a running step."""

    def end(self, result: StepResult) -> None:
        """``step`` ended: ran, cached or failed."""


class _Silent:
    def start(self, step: str) -> None:
        pass

    def message(self, step: str, text: str) -> None:
        pass

    def end(self, result: StepResult) -> None:
        pass


# -- cache keys ------------------------------------------------------------------------------


def _sha(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def step_inputs(
    step: Step, spec: ProjectSpec, outputs: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """The inputs of ``step`` (its params) and, under ``cache_key``, their sha256."""
    from meguri import __version__

    inputs = {
        "step": step.name,
        "code_version": __version__,
        "spec_sections": _sha(step.reads(spec)),
    }
    inputs |= {f"in.{n}": _sha(outputs[n]) for n in step.needs}
    if step.fingerprint is not None:
        found = step.fingerprint(spec)
        inputs["source"] = _sha(found) if found is not None else "unknown (always runs)"
    return {**inputs, "cache_key": _sha(inputs)}


def _cached(ws: Workspace, key: str) -> Run | None:
    from meguri.train import search_runs

    found = search_runs(
        f"params.cache_key = '{key}' and tags.kind = 'step' and status = 'finished'",
        experiment=EXPERIMENT,
        max_results=1,
        workspace=ws,
    )
    return found[0] if found and "outputs" in found[0].tags else None


# -- one step --------------------------------------------------------------------------------


@dataclass
class _Execution:
    ctx: Context
    parent: ActiveRun
    reporter: Reporter
    use_cache: bool
    force: frozenset[str]
    results: list[StepResult] = field(default_factory=list)


def _volatile(inputs: dict[str, str]) -> bool:
    return inputs.get("source") == "unknown (always runs)"


def _run_step(ex: _Execution, step: Step) -> StepResult:
    from meguri.train import start_run

    ctx, started = ex.ctx, time.perf_counter()
    ex.reporter.start(step.name)
    inputs = step_inputs(step, ctx.spec, ctx.outputs)
    hit = None
    if ex.use_cache and step.name not in ex.force and not _volatile(inputs):
        hit = _cached(ctx.workspace, inputs["cache_key"])
    stale = _stale(ex, step, hit)
    if stale is not None:
        hit = None
        ex.reporter.message(step.name, f"cached result no longer holds: {stale}; running again")
    with start_run(
        step.name,
        experiment=EXPERIMENT,
        workspace=ctx.workspace,
        parent=ex.parent,
        spec_version=ctx.spec_version_id,
        params=inputs,
        tags={"kind": "step", "step": step.name},
    ) as run:
        if stale is not None:
            run.set_tags({"stale_cache": stale[:500]})
        result = _reuse(run, hit, started) if hit else _execute(ex, step, run, started)
    ctx.outputs[step.name] = result.outputs
    return result


def _stale(ex: _Execution, step: Step, hit: Run | None) -> str | None:
    """Why ``hit`` (a cached result of ``step``) no longer holds in the live world, if so."""
    if hit is None or step.stale is None:
        return None
    return step.stale(ex.ctx, orjson.loads(hit.tags["outputs"]))


def _reuse(run: ActiveRun, hit: Run, started: float) -> StepResult:
    source = hit.tags.get("cached_from") or hit.id
    outputs = orjson.loads(hit.tags["outputs"])
    run.set_tags({"status": "cached", "cached_from": source, "outputs": hit.tags["outputs"]})
    return StepResult(run.name, "cached", time.perf_counter() - started, run.id, outputs, source)


def _execute(ex: _Execution, step: Step, run: ActiveRun, started: float) -> StepResult:
    ctx = ex.ctx
    ctx.run = run
    ctx.say = lambda text: ex.reporter.message(step.name, text)
    try:
        outputs = step.action(ctx)
    except MeguriError as err:
        run.set_tags({"status": "failed"})
        raise _StepFailed(step.name, run.id, str(err), time.perf_counter() - started) from err
    finally:
        ctx.run = None
    text = orjson.dumps(outputs, option=orjson.OPT_SORT_KEYS).decode()
    run.set_tags({"status": "ran", "outputs": text})
    return StepResult(step.name, "ran", time.perf_counter() - started, run.id, orjson.loads(text))


class _StepFailed(Exception):
    def __init__(self, step: str, run_id: str, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.result = StepResult(step, "failed", seconds, run_id, error=reason)


# -- the pipeline ----------------------------------------------------------------------------


def pipeline_steps(
    *, until: str | None = None, from_step: str | None = None, deploy: bool = True
) -> tuple[list[Step], frozenset[str]]:
    """The steps an execution reaches, and those ``from_step`` forces to run again."""
    last = _index(until, "--until") if until else len(STEPS) - 1
    if not deploy:
        last = min(last, STEP_NAMES.index("register"))
    first = _index(from_step, "--from") if from_step else 0
    if first > last:
        raise PipelineError(
            f"--from {from_step} comes after the last step this run reaches "
            f"({STEP_NAMES[last]}); choose steps in the order {' → '.join(STEP_NAMES)}"
        )
    return list(STEPS[: last + 1]), frozenset(STEP_NAMES[first : last + 1])


def _index(name: str, option: str) -> int:
    if name not in STEP_NAMES:
        raise PipelineError(
            f"{option} {name!r}: no such step; the steps are {', '.join(STEP_NAMES)}"
        )
    return STEP_NAMES.index(name)


def _check_from(ex: _Execution, steps: list[Step], from_step: str | None) -> None:
    """With ``--from``, every step before it must have its result in the cache (checked up to
    a source that can only be known by reading it: from there the earlier steps run from the
    cache where they can)."""
    if from_step is None:
        return
    for step in steps:
        if step.name == from_step:
            return
        inputs = step_inputs(step, ex.ctx.spec, ex.ctx.outputs)
        if _volatile(inputs):
            return  # its outputs are known only by running it: it runs, then the check goes on
        hit = _cached(ex.ctx.workspace, inputs["cache_key"])
        if hit is None:
            raise PipelineError(
                f"--from {from_step}: the step {step.name!r} before it has no cached result for "
                "the current spec and data (they changed, or it never finished); run "
                f"`meguri run` without --from (or `--from {step.name}`)"
            )
        ex.ctx.outputs[step.name] = orjson.loads(hit.tags["outputs"])


def _spec_version(text: str | ProjectSpec, ws: Workspace) -> tuple[ProjectSpec, str]:
    if isinstance(text, ProjectSpec):
        import yaml

        dumped = text.model_dump(mode="json", exclude_unset=True, by_alias=True)
        text = yaml.safe_dump(dumped, sort_keys=False)
    version, _ = save_spec_version(ws.metadata, ws.project.id, text, created_by=ws.user)
    return parse_spec(text), version.id


def run_pipeline(
    spec: str | ProjectSpec,
    *,
    workspace: Workspace | None = None,
    until: str | None = None,
    from_step: str | None = None,
    deploy: bool = True,
    resume: bool = False,
    reporter: Reporter | None = None,
    model_name: str | None = None,
) -> PipelineResult:
    """Run the pipeline of ``spec`` (the YAML text, or a parsed spec) and record it.

    The model is registered under ``model_name`` (default: the project's name).

    Returns the result whether a step failed or not (see :attr:`PipelineResult.failed`);
    raises :class:`PipelineError` only when the request itself is wrong (an unknown step,
    ``from_step`` without cached results before it).
    """
    ws = workspace or default_workspace()
    parsed, version_id = _spec_version(spec, ws)
    steps, force = pipeline_steps(until=until, from_step=from_step, deploy=deploy)
    resumed = _last_failed(ws) if resume else None
    started = time.perf_counter()
    parent = _start(ws, version_id, steps, until, from_step, resumed)
    ctx = Context(parsed, ws, version_id, model_name or parsed.project, parent.id)
    use_cache = parsed.pipeline.cache or resume or from_step is not None
    ex = _Execution(
        ctx, parent, reporter or _Silent(), use_cache, force if from_step else frozenset()
    )
    with parent:
        _check_from(ex, steps, from_step)
        _run_all(ex, steps)
        _finish(ex, started)
    return PipelineResult(parent.id, ex.results, time.perf_counter() - started, version_id)


def _start(
    ws: Workspace,
    version_id: str,
    steps: Sequence[Step],
    until: str | None,
    from_step: str | None,
    resumed: str | None,
) -> ActiveRun:
    from meguri import __version__
    from meguri.train import start_run

    params = {"steps": ",".join(s.name for s in steps), "code_version": __version__}
    params |= {k: v for k, v in (("until", until), ("from", from_step)) if v}
    tags = {"kind": "pipeline", **({"resumed_from": resumed} if resumed else {})}
    return start_run(
        "pipeline", experiment=EXPERIMENT, workspace=ws, spec_version=version_id,
        params=params, tags=tags,
    )  # fmt: skip


def _run_all(ex: _Execution, steps: list[Step]) -> None:
    for step in steps:
        if step.name in ex.ctx.outputs and step.name not in ex.force:
            result = _reuse_checked(ex, step)
        else:
            try:
                result = _run_step(ex, step)
            except _StepFailed as failed:
                ex.results.append(failed.result)
                ex.reporter.end(failed.result)
                return
        ex.results.append(result)
        ex.reporter.end(result)


def _reuse_checked(ex: _Execution, step: Step) -> StepResult:
    """A step ``--from`` found in the cache: recorded as cached like any other."""
    ex.ctx.outputs.pop(step.name)
    return _run_step(ex, step)


def _finish(ex: _Execution, started: float) -> None:
    failed = next((r for r in ex.results if r.status == "failed"), None)
    counts = {s: sum(r.status == s for r in ex.results) for s in ("ran", "cached")}
    ex.parent.set_tags({"steps_ran": counts["ran"], "steps_cached": counts["cached"]})
    ex.parent.log_metric("seconds", time.perf_counter() - started)
    if failed is not None:
        ex.parent.set_tags({"failed_step": failed.name})
        ex.parent.end(RunStatus.FAILED, f"step {failed.name} failed: {failed.error}"[:2000])


def _last_failed(ws: Workspace) -> str | None:
    from meguri.train import search_runs

    found = search_runs(
        "tags.kind = 'pipeline'", experiment=EXPERIMENT, max_results=1, workspace=ws
    )
    return found[0].id if found and found[0].status == RunStatus.FAILED else None


def list_pipeline_runs(*, workspace: Workspace | None = None, max_results: int = 50) -> list[Run]:
    """The pipeline executions of the project, newest first."""
    from meguri.train import search_runs

    return search_runs(
        "tags.kind = 'pipeline'",
        experiment=EXPERIMENT,
        max_results=max_results,
        workspace=workspace,
    )


def step_runs(run_id: str, *, workspace: Workspace | None = None) -> list[Run]:
    """The step runs of pipeline execution ``run_id``, in the order they ran."""
    from meguri.train import search_runs

    found = search_runs(
        f"parent_run_id = '{run_id}'", ["created_at asc"], experiment=EXPERIMENT,
        workspace=workspace,
    )  # fmt: skip
    return found
