"""The requirement traceability matrix: each success criterion of the spec, and every check
that measured it: where (the model version, or the production window), with which value,
passed or not, when, under which spec version.

The criteria come from the latest stored spec version (else from ``meguri.yaml`` in the
workspace); criteria that checks mention but the current spec no longer has are listed too,
marked as such, so no evidence disappears when the spec changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from meguri.errors import MeguriError
from meguri.spec import ProjectSpec, SuccessCriterion, parse_spec
from meguri.store import Workspace
from meguri.store.metadata import CheckResult, SpecVersion
from meguri.studio._render import when

__all__ = ["Evidence", "TraceRow", "current_spec", "traceability"]

#: Checks shown per criterion (the newest); the rest are counted.
EVIDENCE_SHOWN = 8


@dataclass(frozen=True)
class Subject:
    """What a check measured, in words, and the Studio page that shows it: ``route`` and
    its path ``params`` (``anchor``: an optional ``#`` fragment)."""

    text: str
    route: str
    params: dict[str, str]
    detail: str = ""


@dataclass(frozen=True)
class Evidence:
    check: CheckResult
    subject: Subject
    spec_number: int | None


@dataclass
class TraceRow:
    """One criterion: what it requires and the checks that measured it, newest first."""

    criterion_id: str
    requirement: str
    description: str | None
    in_spec: bool
    evidence: list[Evidence] = field(default_factory=list)
    total: int = 0

    @property
    def latest(self) -> Evidence | None:
        return self.evidence[0] if self.evidence else None

    @property
    def status(self) -> str:
        """``pass``/``fail`` by the latest check; ``not measured`` without one."""
        latest = self.latest
        if latest is None:
            return "not measured"
        return "pass" if latest.check.passed else "fail"


def current_spec(ws: Workspace) -> tuple[ProjectSpec | None, SpecVersion | None, str | None]:
    """The spec the project works to: ``(spec, stored version, problem)``. The latest stored
    version wins; without one, ``meguri.yaml`` in the workspace folder. ``problem`` says why
    there is no spec (none stored, or the stored text no longer validates)."""
    version = ws.metadata.specs.latest(ws.project.id)
    try:
        if version is not None:
            return parse_spec(version.content, f"spec version {version.id}"), version, None
        path = ws.root / "meguri.yaml"
        if path.is_file():
            return parse_spec(path.read_text(encoding="utf-8"), str(path)), None, None
    except MeguriError as err:
        return None, version, str(err)
    return None, None, "No spec is stored yet: run `meguri spec save` (or `meguri run`)."


def traceability(ws: Workspace, spec: ProjectSpec | None) -> list[TraceRow]:
    """The matrix: one row per criterion of ``spec``, then one per criterion only checks
    mention; each row's evidence newest first (at most :data:`EVIDENCE_SHOWN`)."""
    rows = {c.id: _row(c) for c in (spec.success_criteria if spec else [])}
    history = ws.metadata.checks.history(ws.project.id)  # newest first
    numbers = {v.id: i for i, v in enumerate(ws.metadata.specs.list(ws.project.id), start=1)}
    subjects = _Subjects(ws)
    for check in history:
        row = rows.get(check.criterion_id)
        if row is None:
            row = rows[check.criterion_id] = _orphan(check)
        row.total += 1
        if len(row.evidence) < EVIDENCE_SHOWN:
            spec_number = numbers.get(check.spec_version_id or "")
            row.evidence.append(Evidence(check, subjects.of(check), spec_number))
    return list(rows.values())


def _row(criterion: SuccessCriterion) -> TraceRow:
    return TraceRow(criterion.id, str(criterion), criterion.description, in_spec=True)


def _orphan(check: CheckResult) -> TraceRow:
    text = f"{check.metric} {check.comparison} {check.threshold:g} on {check.stage}"
    return TraceRow(check.criterion_id, text, None, in_spec=False)


class _Subjects:
    """Resolves check subjects to words and links, each subject once per matrix."""

    def __init__(self, ws: Workspace) -> None:
        self._ws = ws
        self._seen: dict[tuple[str, str], Subject] = {}

    def of(self, check: CheckResult) -> Subject:
        key = (check.subject_kind, check.subject_id)
        if key not in self._seen:
            self._seen[key] = self._resolve(check)
        return self._seen[key]

    def _resolve(self, check: CheckResult) -> Subject:
        kind, ident = check.subject_kind, check.subject_id
        try:
            if kind == "run":
                return self._run(ident)
            if kind == "model_version":
                version = self._ws.metadata.models.get_version(ident)
                return _model_subject([version.ref], version.name, f"{check.stage} test")
            if kind == "monitor_window":
                return _window_subject(check.evidence, check.stage)
        except MeguriError:
            pass  # the subject was removed: say what the check recorded
        return Subject(f"{kind} {ident}", "", {})

    def _run(self, run_id: str) -> Subject:
        versions = self._ws.metadata.models.versions_of_run(run_id)
        if versions:
            return _model_subject([v.ref for v in versions], versions[0].name, f"run {run_id}")
        return Subject(f"run {run_id}", "studio_run", {"run_id": run_id}, "not registered")


def _model_subject(refs: Iterable[str], name: str, detail: str) -> Subject:
    return Subject(", ".join(refs), "studio_model", {"name": name}, detail)


def _window_subject(evidence: dict[str, Any], stage: str) -> Subject:
    environment = str(evidence.get("environment") or stage)
    versions = evidence.get("model_versions")
    served = ", ".join(sorted(versions)) if isinstance(versions, dict) else ""
    start, end = evidence.get("start"), evidence.get("end")
    window = ""
    if isinstance(start, int | float) and isinstance(end, int | float):
        window = f"window {when(start)} – {when(end)}"
    text = f"{served} in {environment}" if served else environment
    return Subject(text, "studio_monitor_env", {"environment": environment}, window)
