"""The closed loop: an alert retrains on fresh data, and the new candidate earns its way back.

When an alert whose rule says ``retrain: true`` starts firing in ``monitor.retrain.environment``
(at most once per ``monitor.retrain.cooldown``; a firing skipped for the cooldown retrains at
the first monitor run after it, if it still fires), :func:`retrain_on_alerts`:

1. builds the fresh training table: the spec's data source read again (it may have grown) plus
   the production rows whose ground truth arrived as feedback (captured inputs, the label as
   the target), written as Parquet under ``.meguri/retrain/<alert id>/``, or, with encryption
   at rest on, only into this process's memory (fsspec ``memory://``, dropped once the pipeline
   has read it): the pipeline's ingest stores it as a dataset version, sealed like every
   artifact, which is its lasting copy, so no plaintext of it ever reaches the disk;
2. runs the whole pipeline (:func:`meguri.deploy.run_pipeline`) on a spec version whose first
   source is that table: ingest, quality, prepare, train, evaluate, **the same gates**, register,
   staging with its pre-promotion tests, promotion;
3. when the candidate passed, deploys it to the environment with a **canary** (the spec's
   strategy when it is one of canary/linear, else ``canary``): the supervisor bakes it against
   the environment's thresholds and rolls it back by itself on a breach. It is deployed as
   ``NAME@production`` (the alias the pipeline's promotion just moved to it), so a rollback
   also moves the alias back to the version the endpoint serves again.

Every step links back to the alert: the pipeline run's tag ``trigger``, the model version's tag
``trigger_alert``, the deployment revision's reason, and the alert's ``detail["retrain"]``
(pipeline run, spec version, model version, revision, outcome).
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import yaml

from meguri.errors import MeguriError, MonitorError
from meguri.monitor._capture import capture_keys, capture_url, scan_feedback, scan_predictions
from meguri.spec import ProjectSpec, duration_seconds
from meguri.store import Workspace
from meguri.store._workspace import STATE_DIR
from meguri.store.metadata import Alert, AlertState

__all__ = [
    "MEMORY_FOLDER",
    "Retraining",
    "forget_table",
    "fresh_training_data",
    "retrain_on_alerts",
]

Reporter = Callable[[str], None]
MEMORY_FOLDER = "memory://meguri-retrain"
"""Where the fresh training table lives with encryption at rest on (this process's memory)."""
_KEPT_OPTIONS = frozenset({"max_bytes"})
"""Read options of the spec's source that hold for the retraining table too."""


@dataclass(frozen=True)
class Retraining:
    alert_id: str
    outcome: str
    """``deployed`` (canary started), ``gated`` (the pipeline stopped the candidate),
    ``skipped`` (cooldown) or ``failed`` (an error, named in ``detail``; one that is no
    :class:`MeguriError` is recorded so, then raised)."""
    detail: dict[str, Any]


def retrain_on_alerts(
    ws: Workspace,
    spec: ProjectSpec,
    environment: str,
    alerts: Sequence[Alert],
    *,
    reporter: Reporter | None = None,
) -> list[Retraining]:
    """Retrain for each alert in ``alerts`` that just started firing and asks for it."""
    say = reporter or (lambda _message: None)
    rules = {rule.name: rule for rule in spec.monitor.alerts if rule.retrain}
    if environment != spec.monitor.retrain.environment:
        return []
    started = []
    for alert in alerts:
        if alert.rule not in rules or alert.state != AlertState.FIRING:
            continue
        previous = alert.detail.get("retrain")
        if isinstance(previous, dict) and previous.get("outcome") != "skipped":
            continue  # this firing already retrained; one skipped retries after the cooldown
        started.append(_retrain(ws, spec, environment, alert, say))
    return started


def _recent_retraining(ws: Workspace, environment: str, cooldown: float) -> Alert | None:
    since = time.time() - cooldown
    for alert in ws.metadata.monitor.alerts(ws.project.id, environment=environment):
        retrain = alert.detail.get("retrain")
        if not isinstance(retrain, dict) or retrain.get("outcome") == "skipped":
            continue
        if retrain.get("started_at", 0) >= since:
            return alert
    return None


def _retrain(
    ws: Workspace, spec: ProjectSpec, environment: str, alert: Alert, say: Reporter
) -> Retraining:
    cooldown = duration_seconds(spec.monitor.retrain.cooldown)
    recent = _recent_retraining(ws, environment, cooldown)
    detail: dict[str, Any] = {"started_at": time.time()}
    if recent is not None:
        detail |= {"outcome": "skipped", "why": f"cooldown: alert {recent.id} retrained"}
        if alert.detail.get("retrain", {}).get("why") == detail["why"]:
            return Retraining(alert.id, "skipped", alert.detail["retrain"])  # said already
        say(f"alert {alert.rule}: retraining skipped ({detail['why']}); retried after it")
        return _record(ws, alert, detail)
    say(f"alert {alert.rule} ({alert.id}) fired: retraining on fresh data")
    try:
        detail |= _run(ws, spec, environment, alert, say)
    except MeguriError as exc:
        detail |= {"outcome": "failed", "error": str(exc)}
        say(f"retraining for {alert.id} failed: {exc}")
    except Exception as exc:
        # not a condition meguri names: raised, but recorded first, so that the cooldown holds
        # and the next monitor run (which hands over every firing alert) does not start again
        _record(ws, alert, detail | {"outcome": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    return _record(ws, alert, detail)


def _record(ws: Workspace, alert: Alert, detail: dict[str, Any]) -> Retraining:
    ws.metadata.monitor.update_alert(alert.id, detail={"retrain": detail})
    return Retraining(alert.id, str(detail.get("outcome")), detail)


def _run(
    ws: Workspace, spec: ProjectSpec, environment: str, alert: Alert, say: Reporter
) -> dict[str, Any]:
    from meguri.deploy import deploy, run_pipeline, spec_environment
    from meguri.registry import tag

    table, rows = fresh_training_data(ws, spec, environment, alert.id)
    say(
        f"fresh training data: {rows['source']} source rows + {rows['feedback']} labelled "
        "production rows"
    )
    try:
        served = ws.metadata.deployments.get(ws.project.id, environment).model_name
        result = run_pipeline(_with_source(spec, table), workspace=ws, model_name=served)
    finally:
        forget_table(table)  # read by the ingest step, stored there as a dataset version
    ws.metadata.runs.log_batch(result.run_id, tags={"trigger": f"alert:{alert.id}"})
    detail: dict[str, Any] = {
        "pipeline_run": result.run_id,
        "spec_version": result.spec_version_id,
        "rows": rows,
        "data": table,
    }
    registered = next((s for s in result.steps if s.name == "register"), None)
    if registered is not None and "ref" in registered.outputs:
        detail["model_version"] = registered.outputs["ref"]
        if registered.cached_from is None:  # a version from the cache keeps its own alert
            tag(registered.outputs["ref"], {"trigger_alert": alert.id}, workspace=ws)
    if not result.ok:
        failed = result.failed
        assert failed is not None
        say(f"the candidate stopped at {failed.name}: {failed.error}")
        return detail | {"outcome": "gated", "step": failed.name, "error": failed.error}
    ref = detail.get("model_version")
    if ref is None:
        raise MonitorError("the retraining pipeline registered no model version")
    settings = spec_environment(spec, environment, declared=False)
    if settings.strategy.kind not in ("canary", "linear"):
        canary = settings.strategy.model_copy(update={"kind": "canary", "steps": None})
        settings = settings.model_copy(update={"strategy": canary})
    chosen = settings.strategy.kind
    say(f"deploying {ref} to {environment} with a {chosen} rollout")
    revision = deploy(
        _promoted(ws, ref),
        env=environment,
        workspace=ws,
        environment=settings,
        reason=f"retrained for alert {alert.id} ({alert.rule})",
    )
    # the revision's own strategy: a candidate the live revision already serves (the pipeline
    # found every step cached) or an endpoint not running is switched at once, not canaried
    return detail | {
        "outcome": "deployed",
        "revision": revision.number,
        "strategy": revision.strategy,
    }


def _promoted(ws: Workspace, ref: str) -> str:
    """``NAME@production`` when the pipeline's promotion points it at ``ref`` (as it just
    did): deployed by the alias, a canary rolled back takes the alias back to the version the
    endpoint serves again; else ``ref`` itself."""
    from meguri.registry import get_model_version

    by_alias = f"{ref.partition('@')[0]}@production"
    try:
        same = get_model_version(by_alias, workspace=ws).ref == ref
    except MeguriError:
        same = False
    return by_alias if same else ref


def fresh_training_data(
    ws: Workspace, spec: ProjectSpec, environment: str, alert_id: str
) -> tuple[str, dict[str, int]]:
    """The spec's source read again plus the labelled production rows (in the order
    production saw them), as one Parquet file: its path, or its ``memory://`` URL with
    encryption at rest on (see the module docstring; :func:`forget_table` drops it)."""
    from meguri.data._catalog import ingest_frame

    target = spec.requirements.functional.target
    if not spec.data.sources:
        raise MonitorError("data.sources is empty: retraining needs the spec's data source")
    _, source = ingest_frame(spec.data.sources[0], workspace=ws)  # read again: it may have grown
    url, keys = capture_url(ws, environment), capture_keys(ws)
    labelled = (
        scan_predictions(url, keys=keys)
        .join(
            scan_feedback(url, keys=keys).select("request_id", "row", "label"),
            on=["request_id", "row"],
        )
        # in the order production saw them: the same rows give the same table, so the same
        # dataset version (a join and a folder listing promise no order)
        .sort("time", "request_id", "row")
        .collect()
    )
    columns = [c for c in source.columns if c != target and c in labelled.columns]
    feedback = pl.DataFrame()
    if labelled.height and columns:
        feedback = labelled.select(
            *[pl.col(c).cast(source.schema[c], strict=False) for c in columns],
            _label(source.schema[target]).alias(target),
        )
        missing = [c for c in source.columns if c not in feedback.columns]
        feedback = feedback.with_columns(
            pl.lit(None, dtype=source.schema[c]).alias(c) for c in missing
        ).select(source.columns)
        feedback = feedback.filter(pl.col(target).is_not_null())
    table = pl.concat([source, feedback], how="vertical") if feedback.height else source
    private = keys is not None or ws.artifacts.encrypts_at_rest
    where = _in_memory(table, alert_id) if private else _on_disk(ws, table, alert_id)
    return where, {"source": source.height, "feedback": feedback.height}


def _on_disk(ws: Workspace, table: pl.DataFrame, alert_id: str) -> str:
    folder = ws.root / STATE_DIR / "retrain" / alert_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "data.parquet"
    temp = folder / f".data-{uuid.uuid4().hex}.tmp"
    table.write_parquet(temp)
    temp.replace(path)
    return str(path)


def _in_memory(table: pl.DataFrame, alert_id: str) -> str:
    """``table`` as a Parquet file in fsspec's in-process memory filesystem; its URL."""
    import fsspec

    buffer = io.BytesIO()
    table.write_parquet(buffer)
    url = f"{MEMORY_FOLDER}/{alert_id}-{uuid.uuid4().hex[:8]}/data.parquet"
    with fsspec.open(url, "wb") as out:
        out.write(buffer.getbuffer())
    return url


def forget_table(where: str) -> None:
    """Drop a table :func:`fresh_training_data` kept in memory (a file on disk stays: it is
    the record of what the retraining read)."""
    if not where.startswith(f"{MEMORY_FOLDER}/"):
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(where)
    fs.rm(path.rsplit("/", 1)[0], recursive=True)


def _label(dtype: pl.DataType) -> pl.Expr:
    label = pl.col("label")
    if dtype == pl.Boolean:
        return label.str.to_lowercase().is_in(["true", "1"])
    return label.cast(dtype, strict=False)


def _with_source(spec: ProjectSpec, table: str) -> str:
    """The spec's YAML with its first source reading ``table`` (a Parquet file): its name,
    description, declared types (``schema:``, as the YAML spells it) and memory budget kept,
    the read options of its own format (a CSV separator, a database table, an Excel sheet,
    credentials) dropped, as a Parquet file takes none of them."""
    document = spec.model_dump(mode="json", exclude_unset=True, by_alias=True)
    source = document["data"]["sources"][0]
    kept = {k: v for k, v in source.pop("options", {}).items() if k in _KEPT_OPTIONS}
    source |= {"uri": table, "format": "parquet"} | ({"options": kept} if kept else {})
    return yaml.safe_dump(document, sort_keys=False)
