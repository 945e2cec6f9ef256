"""Model cards: what a model version is for, what it was built from, how well it does.

:func:`card_facts` reads it all from the stores, nothing invented: the run's spec version
(objective, intended use, stakeholders, constraints, targets, success criteria), the training
run (metrics, params, resource use), its candidates (child runs), its evaluation artifacts
(``evaluation/test_*.json``, ``plots/*.plotly.json``), its dataset versions with their sources'
quality reports, and its CheckResults; what the stores lack is listed under ``missing`` and said
in the card. :func:`render_card` renders the JSON-serialisable facts as GitHub Markdown and a
self-contained HTML page (inline CSS and SVG, no script, no external URL).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, partial
from typing import Any

import numpy as np
import orjson

from meguri.errors import SpecError
from meguri.spec import ProjectSpec, parse_spec
from meguri.store import Workspace
from meguri.store.metadata import ArtifactRef, CheckResult, DatasetVersion, Run
from meguri.train._train import LOWER_IS_BETTER

FORMAT = "meguri.card"
FORMAT_VERSION = 1
#: A test part under this many rows, or a 95% interval of the primary metric wider than this,
#: gets a limitation note on the width of its intervals.
SMALL_TEST_ROWS, WIDE_INTERVAL = 500, 0.05
WORST_SLICE_NOTES = 3
MAX_POINTS = 200
MAX_BARS = 15
_KEY_PLOTS = ["roc", "pr", "calibration", "confusion_matrix", "residuals", "residuals_histogram"]
_KEY_PLOTS += ["feature_importance", "permutation_importance"]

Facts = dict[str, Any]


@dataclass(frozen=True)
class ModelCard:
    """A model version's card: ``markdown`` and ``html`` both rendered from ``facts``."""

    markdown: str
    html: str
    facts: Facts


def model_card(
    workspace: Workspace,
    *,
    run_id: str,
    model_name: str,
    version: str | int,
    spec: ProjectSpec | None = None,
    spec_version_id: str | None = None,
) -> ModelCard:
    """The card of ``model_name`` version ``version``, trained by run ``run_id``, from the
    stores (NotFoundError when the run does not exist). The spec is ``spec`` when given, else
    the stored spec version ``spec_version_id``, else the run's own spec version."""
    run = workspace.metadata.runs.get_run(run_id)
    missing: list[str] = []
    spec_facts, spec = _spec_section(workspace, run, spec, spec_version_id, missing)
    artifacts = {a.name: a for a in workspace.metadata.runs.list_artifacts(run.id)}
    parts, sources = _data_section(workspace, run, missing)
    evaluation = _evaluation(workspace, run, artifacts, parts)
    missing += _evaluation_missing(evaluation)
    checks = workspace.metadata.checks.for_subject("run", run.id)
    facts: Facts = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"name": model_name, "version": str(version)},
        "spec": spec_facts,
        "intended_use": _intended_use(spec),
        "run": _run_section(run),
        "data": {"versions": parts, "sources": sources},
        "evaluation": evaluation,
        "criteria": _criteria(spec, checks, evaluation["intervals"] or {}),
        "leaderboard": _leaderboard(workspace, run),
        "resources": _resources(run, spec),
        "plots": _plots(workspace, artifacts, missing),
        "missing": missing,
    }
    facts["limitations"] = limitations(facts)
    return render_card(_jsonable(facts))


def render_card(facts: Mapping[str, Any]) -> ModelCard:
    """Markdown and HTML of ``facts`` (a stored ``ModelCard.facts``), rendered again."""
    markdown = _environment(False).get_template("card.md.j2").render(f=facts)
    html = _environment(True).get_template("card.html.j2").render(f=facts)
    return ModelCard(markdown, html, dict(facts))


# -- the spec ---------------------------------------------------------------------------------


def _spec_section(
    ws: Workspace,
    run: Run,
    spec: ProjectSpec | None,
    spec_version_id: str | None,
    missing: list[str],
) -> tuple[Facts | None, ProjectSpec | None]:
    version_id = spec_version_id or run.spec_version_id
    stored = ws.metadata.specs.get(version_id) if version_id else None
    if spec is None and stored is not None:
        try:
            spec = parse_spec(stored.content, source=f"spec version {stored.id}")
        except SpecError as err:
            missing.append(
                f"spec version {stored.id} no longer parses ({err}); its goals are left out"
            )
    if spec is None:
        missing.append(
            "spec: the run records no spec version, so objective, intended use and criteria "
            "are not stated; train with spec_version_id= or pass spec="
        )
        return None, None
    facts = _spec_facts(spec)
    facts |= {"version_id": version_id, "hash": stored.hash if stored else None}
    facts["saved_at"] = _when(stored.created_at) if stored else None
    return facts, spec


def _spec_facts(spec: ProjectSpec) -> Facts:
    functional, limits = spec.requirements.functional, spec.requirements.non_functional
    budget = spec.resources.compute_budget
    return {
        "project": spec.project,
        "objective": spec.objective.model_dump(),
        "task": functional.task,
        "target": functional.target,
        "inputs": functional.inputs,
        "non_functional": limits.model_dump(exclude_none=True),
        "constraints": spec.constraints.model_dump(),
        "stakeholders": [{"name": m.name, "role": m.role} for m in spec.resources.team],
        "uncovered_skills": spec.resources.uncovered_skills(),
        "compute_budget": budget.model_dump(exclude_none=True),
    }


def _intended_use(spec: ProjectSpec | None) -> Facts | None:
    if spec is None:
        return None
    functional = spec.requirements.functional
    return {
        "purpose": spec.objective.expected_outcome,
        "predicts": f"{functional.target} ({functional.task.replace('_', ' ')})",
        "inputs": functional.inputs or "every column but the target and the excluded ones",
        "never_uses": spec.constraints.excluded_columns,
        "explainability": spec.requirements.non_functional.explainability,
    }


# -- the run, its data and its candidates ------------------------------------------------------


_RUN_FIELDS = ("id", "name", "experiment_id", "created_by", "code_version", "host")
_RUN_TAGS = {"algorithm": "best_algorithm", "best_run": "best_run", "gates": "gates"}


def _run_section(run: Run) -> Facts:
    return {
        **{key: getattr(run, key) for key in _RUN_FIELDS},
        **{key: run.tags.get(tag) for key, tag in _RUN_TAGS.items()},
        "status": str(run.status),
        "started_at": _when(run.created_at),
        "ended_at": _when(run.ended_at),
        "primary_metric": run.params.get("metric"),
        "params": dict(sorted(run.params.items())),
        "tags": dict(sorted(run.tags.items())),
    }


def _data_section(ws: Workspace, run: Run, missing: list[str]) -> tuple[list[Facts], list[Facts]]:
    ids = run.inputs.get("dataset_version", [])
    if not ids:
        missing.append("data: the run records no input dataset versions (run.log_input)")
    found = ws.metadata.datasets.get_versions(ids)
    parts = [_version_facts(ws, found[i]) for i in ids if i in found]
    parent_ids = [p for v in found.values() for p in v.parents if p not in found]
    parents = ws.metadata.datasets.get_versions(parent_ids)
    sources = [_version_facts(ws, parents[p]) for p in dict.fromkeys(parent_ids) if p in parents]
    if ids and not any(v["quality"] for v in parts + sources):
        missing.append("data quality: no quality report is stored for the run's data")
    return parts, sources


_VERSION_FIELDS = ("id", "ref", "content_hash", "source_uri", "operation")


def _version_facts(ws: Workspace, version: DatasetVersion) -> Facts:
    part = version.lineage.get("part")
    return {
        **{key: getattr(version, key) for key in _VERSION_FIELDS},
        "role": part if isinstance(part, str) else version.operation,
        "rows": version.row_count,
        "columns": len(version.schema),
        "bytes": version.byte_size,
        "parents": list(version.parents),
        "created_at": _when(version.created_at),
        "quality": _quality(ws, version.quality_digest),
    }


def _quality(ws: Workspace, digest: str | None) -> Facts | None:
    if digest is None:
        return None
    from meguri.data import QualityReport

    report = QualityReport.from_json(ws.artifacts.get_bytes(digest))
    failed = [r for r in report.results if not r.passed]
    return {
        "checks": len(report.results),
        "passed": len(report.results) - len(failed),
        "failed": [
            {"name": r.name, "severity": r.severity, "message": r.message, "rows": r.failing_rows}
            for r in failed
        ],
    }


def _leaderboard(ws: Workspace, run: Run) -> Facts:
    children = ws.metadata.runs.search(
        [run.experiment_id], f"parent_run_id = '{run.id}'", max_results=10_000
    )
    metric = run.params.get("metric", "")
    rows = [_candidate(c, metric, run.tags.get("best_run")) for c in children]
    rows = [r for r in rows if r["role"] == "candidate"]
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    rows.sort(key=lambda r: math.inf if r["cv_mean"] is None else sign * r["cv_mean"])
    trials = sum(1 for c in children if c.tags.get("role") != "candidate")
    return {"metric": metric, "candidates": rows, "other_child_runs": trials}


def _candidate(child: Run, metric: str, best_run: str | None) -> Facts:
    mean, sd = child.metrics.get(f"cv/{metric}_mean"), child.metrics.get(f"cv/{metric}_std")
    return {
        "run_id": child.id,
        "name": child.name,
        "algorithm": child.params.get("algorithm", child.name),
        "role": child.tags.get("role", "candidate"),
        "status": str(child.status),
        "cv_mean": None if mean is None else mean.value,
        "cv_std": None if sd is None else sd.value,
        "chosen": child.id == best_run,
    }


def _resources(run: Run, spec: ProjectSpec | None) -> Facts:
    size = run.metrics.get("model_size_bytes")
    limits = spec.requirements.non_functional if spec else None
    budget = spec.resources.compute_budget if spec else None
    return {
        "wall_seconds": run.wall_seconds,
        "cpu_seconds": run.cpu_seconds,
        "peak_memory_bytes": run.peak_memory_bytes,
        "model_size_bytes": None if size is None else size.value,
        "training_time_budget_minutes": limits.training_time_budget_minutes if limits else None,
        "max_model_size_mb": limits.max_model_size_mb if limits else None,
        "memory_budget_gb": budget.memory_gb if budget else None,
        "skipped_by_budget": run.tags.get("skipped_by_budget"),
        "too_large": {k[10:]: v for k, v in run.tags.items() if k.startswith("too_large.")},
    }


# -- evaluation -------------------------------------------------------------------------------


_NO_INTERVALS = (
    "confidence intervals: the run has no evaluation/test_intervals.json, so the test metrics "
    "are point estimates only"
)
_NO_SLICES = "slices: the run has no evaluation/test_slices.json (no error analysis)"
_EMPTY_SLICES = (
    "slices: no slice of the test part reached the minimum slice size, so no per-slice metric "
    "could be reported; a larger test part gives them"
)


def _evaluation(
    ws: Workspace, run: Run, artifacts: Mapping[str, ArtifactRef], parts: Sequence[Facts]
) -> Facts:
    stages: dict[str, dict[str, float]] = {"validation": {}, "test": {}}
    for key, point in sorted(run.metrics.items()):
        stage, _, name = key.partition("/")
        if stage in stages and not name.startswith("fairness/"):
            stages[stage][name] = point.value
    read = partial(_artifact_json, ws, artifacts)
    intervals, slices = read("test_intervals"), read("test_slices")
    worst, fairness = read("test_worst_rows"), read("test_fairness")
    return {
        "primary_metric": run.params.get("metric"),
        "test_rows": next((p["rows"] for p in parts if p["role"] == "test"), None),
        **stages,
        "intervals": intervals and {k: [float(v[0]), float(v[1])] for k, v in intervals.items()},
        "slices": slices and {"count": len(slices["slices"]), "worst": slices["slices"][:10]},
        "worst_rows": worst and {"count": len(worst["rows"]), "top": worst["rows"][:5]},
        "fairness": fairness and {c: r["gaps"] for c, r in fairness["columns"].items()},
    }


def _evaluation_missing(evaluation: Facts) -> list[str]:
    found = [] if evaluation["test"] else ["evaluation: the run logged no test/* metrics"]
    found += [] if evaluation["intervals"] else [_NO_INTERVALS]
    slices = evaluation["slices"]
    return found + ([_NO_SLICES] if slices is None else [] if slices["count"] else [_EMPTY_SLICES])


def _artifact_json(ws: Workspace, artifacts: Mapping[str, ArtifactRef], name: str) -> Any:
    ref = artifacts.get(f"evaluation/{name}.json")
    return None if ref is None else orjson.loads(ws.artifacts.get_bytes(ref.digest))


# -- success criteria -------------------------------------------------------------------------


_RULE = ("id", "metric", "stage", "comparison", "threshold", "description")


def _criteria(
    spec: ProjectSpec | None, checks: Sequence[CheckResult], intervals: Mapping[str, Any]
) -> list[Facts]:
    """Each criterion of the spec with its latest check for the run (or none yet), then the
    checks of criteria the spec no longer has."""
    latest = {c.criterion_id: c for c in sorted(checks, key=lambda c: c.created_at)}
    rows: list[Facts] = []
    for c in spec.success_criteria if spec else []:
        rule: tuple[Any, ...] = (c.id, c.metric, c.measured_on, c.comparison, c.threshold)
        row = dict(zip(_RULE, (*rule, c.description), strict=True))
        rows.append(row | _outcome(latest.pop(c.id, None), intervals))
    for check in latest.values():
        rule = (check.criterion_id, check.metric, check.stage, check.comparison, check.threshold)
        rows.append(dict(zip(_RULE, (*rule, None), strict=True)) | _outcome(check, intervals))
    return rows


def _outcome(check: CheckResult | None, intervals: Mapping[str, Any]) -> Facts:
    if check is None:
        none = dict.fromkeys(("value", "check_id", "checked_at", "evidence", "interval"))
        return {"status": "not measured yet", **none}
    interval = intervals.get(check.metric) if check.stage == "test" else None
    return {
        "status": "pass" if check.passed else "fail",
        "value": check.value,
        "check_id": check.id,
        "checked_at": _when(check.created_at),
        "evidence": check.evidence.get("message"),
        "interval": None if interval is None else list(interval),
    }


# -- plots ------------------------------------------------------------------------------------


def _plots(ws: Workspace, artifacts: Mapping[str, ArtifactRef], missing: list[str]) -> list[Facts]:
    found = []
    for name in _KEY_PLOTS:
        ref = artifacts.get(f"plots/{name}.plotly.json")
        if ref is not None:
            figure = orjson.loads(ws.artifacts.get_bytes(ref.digest))
            found.append(
                {"name": name, "artifact": ref.name, "digest": ref.digest} | _figure(figure)
            )
    if not found:
        missing.append("plots: the run logged no evaluation plots (plots/*.plotly.json)")
    return found


def _figure(figure: Mapping[str, Any]) -> Facts:
    layout = figure.get("layout", {})
    traces = list(figure.get("data", []))
    kinds = {t.get("type", "scatter") for t in traces}
    out: Facts = {
        "title": _title(layout.get("title")),
        "x_title": _title(layout.get("xaxis", {}).get("title")),
        "y_title": _title(layout.get("yaxis", {}).get("title")),
    }
    if "heatmap" in kinds:
        heat = next(t for t in traces if t.get("type") == "heatmap")
        cells = [[_round(v) for v in row] for row in _array(heat.get("z"))]
        x, y = ([str(v) for v in _array(heat.get(k))] for k in "xy")
        return out | {"kind": "matrix", "z": cells, "x": x, "y": y}
    if "scatter" in kinds:
        lines = [_line(t) for t in traces if t.get("type", "scatter") == "scatter"]
        return out | {"kind": "lines", "series": lines}
    bar = next((t for t in traces if t.get("type") == "bar"), None)
    return out | ({"kind": "bars", **_bars(bar)} if bar else {"kind": "other"})


def _line(trace: Mapping[str, Any]) -> Facts:
    x, y = _array(trace.get("x")), _array(trace.get("y"))
    n = min(len(x), len(y))
    keep: list[int] = (
        np.unique(np.linspace(0, n - 1, min(n, MAX_POINTS)).round()).astype(int).tolist()
        if n
        else []
    )
    return {
        "name": str(trace.get("name") or ""),
        "x": [_round(x[i]) for i in keep],
        "y": [_round(y[i]) for i in keep],
    }


def _bars(trace: Mapping[str, Any]) -> Facts:
    horizontal = trace.get("orientation") == "h"
    values = _array(trace.get("x" if horizontal else "y"))
    labels = [str(v) for v in _array(trace.get("y" if horizontal else "x"))]
    order = sorted(range(len(values)), key=lambda i: -abs(float(values[i])))[:MAX_BARS]
    return {"labels": [labels[i] for i in order], "values": [_round(values[i]) for i in order]}


def _array(value: Any) -> list[Any]:
    """A Plotly JSON array: a list, or a typed array ``{"dtype", "bdata", "shape"}``."""
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            data = data.reshape([int(s) for s in str(shape).split(",")])
        return list(data.tolist())
    return list(value) if isinstance(value, list | tuple) else []


def _title(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("text") or "")
    return "" if value is None else str(value)


# -- limitations ------------------------------------------------------------------------------


def limitations(facts: Mapping[str, Any]) -> list[Facts]:
    """What the evidence says the model does not do well, or was not shown to do."""
    notes = _criterion_notes(facts["criteria"])
    notes += _slice_notes(facts["evaluation"])
    notes += _size_notes(facts["evaluation"])
    notes += _quality_notes(facts["data"])
    notes += _constraint_notes(facts["resources"])
    notes += [{"kind": "missing evidence", "text": text} for text in facts["missing"]]
    return notes


def _criterion_notes(criteria: Sequence[Facts]) -> list[Facts]:
    notes = []
    for c in criteria:
        rule = f"{c['metric']} {c['comparison']} {c['threshold']:g} on {c['stage']}"
        if c["status"] == "fail":
            text = f"{c['id']} fails: {_fmt(c['value'])}, required {rule}."
            notes.append(_note("failing criterion", text))
        elif c["status"] == "not measured yet":
            text = f"{c['id']} ({rule}) has no evidence yet; it is checked at {c['stage']}."
            notes.append(_note("unverified criterion", text))
        elif _interval_crosses(c):
            lo, hi = (_fmt(v) for v in c["interval"])
            text = (
                f"{c['id']} passes on the point estimate {_fmt(c['value'])}, but its 95% "
                f"interval [{lo}, {hi}] crosses the threshold {c['threshold']:g}."
            )
            notes.append(_note("uncertain criterion", text))
    return notes


def _interval_crosses(c: Facts) -> bool:
    if not c.get("interval"):
        return False
    lo, hi = c["interval"]
    if c["comparison"] in (">=", ">"):
        return bool(lo < c["threshold"])
    return bool(c["comparison"] in ("<=", "<") and hi > c["threshold"])


def _slice_notes(evaluation: Facts) -> list[Facts]:
    slices = evaluation["slices"] or {"worst": []}
    worse = [s for s in slices["worst"] if (s.get("worse_by") or 0) > 0]
    return [
        _note(
            "weak slice",
            f"{s['feature']} = {s['slice']} ({s['rows']} test rows): {s['metric']} "
            f"{_fmt(s['value'])} against {_fmt(s['overall'])} overall, "
            f"worse by {_fmt(s['worse_by'])}.",
        )
        for s in worse[:WORST_SLICE_NOTES]
    ]


def _size_notes(evaluation: Facts) -> list[Facts]:
    rows, metric = evaluation["test_rows"], evaluation["primary_metric"]
    interval = (evaluation["intervals"] or {}).get(metric)
    wide = interval is not None and interval[1] - interval[0] > WIDE_INTERVAL
    if not (rows is not None and rows < SMALL_TEST_ROWS) and not wide:
        return []
    text = f"The test part has {'an unknown number of' if rows is None else rows} rows"
    if interval is not None:
        lo, hi = interval
        text += f"; the 95% interval of {metric} is [{_fmt(lo)}, {_fmt(hi)}]"
        text += f" (width {_fmt(hi - lo)})"
    return [_note("small test set", text + ": expect production figures anywhere in that range.")]


def _quality_notes(data: Facts) -> list[Facts]:
    return [
        _note("data quality", f"{v['ref']}: {f['name']} ({f['severity']}): {f['message']}")
        for v in [*data["sources"], *data["versions"]]
        for f in (v["quality"] or {}).get("failed", [])
    ]


def _constraint_notes(res: Facts) -> list[Facts]:
    texts = []
    if res["skipped_by_budget"]:
        texts.append(f"The training-time budget ran out before trying {res['skipped_by_budget']}.")
    for name, size in res["too_large"].items():
        texts.append(f"{name} was left out: its model ({size}) exceeds max_model_size_mb.")
    budget, wall = res["training_time_budget_minutes"], res["wall_seconds"]
    if budget is not None and wall is not None and wall > budget * 60:
        texts.append(f"Training took {wall / 60:.1f} min, over the budget of {budget:g} min.")
    limit, size = res["max_model_size_mb"], res["model_size_bytes"]
    if limit is not None and size is not None and size > limit * 2**20:
        texts.append(f"The model is {size / 2**20:.2f} MiB, over max_model_size_mb {limit:g}.")
    memory, peak = res["memory_budget_gb"], res["peak_memory_bytes"]
    if memory is not None and peak is not None and peak > memory * 2**30:
        texts.append(f"Peak memory {peak / 2**30:.2f} GiB exceeds the budget of {memory:g} GB.")
    return [_note("constraint", text) for text in texts]


def _note(kind: str, text: str) -> Facts:
    return {"kind": kind, "text": text}


# -- rendering ------------------------------------------------------------------------------


@cache
def _environment(autoescape: bool) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("meguri.registry", "templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters |= {"num": _num, "md": _md}
    return env


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{float(value):.{digits}f}"


def _md(value: Any) -> str:
    """Text safe in a Markdown table cell: HTML-escaped, pipes escaped, on one line."""
    text = "–" if value is None else " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("`", "\\`")


# -- helpers ----------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"


def _round(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(value) else round(float(value), 6)
    return value


def _when(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


def _jsonable(facts: Facts) -> Facts:
    """The facts through JSON (NaN and infinities become null), so they store as they render."""
    loaded = orjson.loads(orjson.dumps(facts, option=orjson.OPT_SERIALIZE_NUMPY))
    assert isinstance(loaded, dict)
    return loaded
