"""Check results: each success criterion measured where its evidence appeared.

A check result links a criterion of a spec version to a subject (``run``, ``model_version``,
``deployment``) with the measured value, the verdict and the evidence (JSON: e.g. the dataset
version and the confidence interval). Results are appended, never updated: the history of a
criterion is the requirement traceability matrix the Studio, model cards and gates read.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from meguri.store._ids import new_id
from meguri.store.metadata._engine import Database
from meguri.store.metadata._entities import CheckResult, NewAuditEvent
from meguri.store.metadata._schema import check_results
from meguri.store.metadata.repositories.audit import record


class CheckRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, results: Sequence[CheckResult]) -> list[CheckResult]:
        """Append ``results`` (their ``id`` and ``created_at`` are assigned here) at once, with
        one audit event per checked subject."""
        now = time.time()  # a microsecond apart: reading back keeps the recorded order
        stored = [_stamped(r, now + i * 1e-6) for i, r in enumerate(results)]
        if stored:
            with self._db.write() as conn:
                conn.execute(check_results.insert(), [_row(r) for r in stored])
                record(conn, _events(stored))
        return stored

    def for_subject(self, kind: str, subject_id: str) -> list[CheckResult]:
        query = sa.select(check_results).where(
            check_results.c.subject_kind == kind, check_results.c.subject_id == subject_id
        )
        return self._select(query.order_by(check_results.c.created_at, check_results.c.id))

    def history(self, project_id: str, criterion_id: str | None = None) -> list[CheckResult]:
        """Every result of the project (or of one criterion), newest first."""
        query = sa.select(check_results).where(check_results.c.project_id == project_id)
        if criterion_id is not None:
            query = query.where(check_results.c.criterion_id == criterion_id)
        return self._select(query.order_by(check_results.c.created_at.desc()))

    def _select(self, query: sa.Select[Any]) -> list[CheckResult]:
        with self._db.read() as conn:
            return [_result(row._mapping) for row in conn.execute(query)]


def _events(results: Sequence[CheckResult]) -> list[NewAuditEvent]:
    """One ``checks.recorded`` event per (project, subject) of ``results``."""
    groups: dict[tuple[str, str, str], list[CheckResult]] = {}
    for r in results:
        groups.setdefault((r.project_id, r.subject_kind, r.subject_id), []).append(r)
    return [
        NewAuditEvent(
            group[0].created_by,
            "checks.recorded",
            kind,
            subject,
            project_id,
            {"checks": [_summary(r) for r in group]},
        )
        for (project_id, kind, subject), group in groups.items()
    ]


def _summary(result: CheckResult) -> dict[str, Any]:
    return {
        "id": result.id,
        "criterion": result.criterion_id,
        "stage": result.stage,
        "value": result.value,
        "passed": result.passed,
    }


def _stamped(result: CheckResult, now: float) -> CheckResult:
    return replace(result, id=result.id or new_id("chk"), created_at=result.created_at or now)


def _row(result: CheckResult) -> dict[str, Any]:
    value = None if result.value is None or math.isnan(result.value) else result.value
    return {
        "id": result.id,
        "project_id": result.project_id,
        "spec_version_id": result.spec_version_id,
        "criterion_id": result.criterion_id,
        "stage": result.stage,
        "metric": result.metric,
        "comparison": result.comparison,
        "threshold": result.threshold,
        "value": value,
        "passed": result.passed,
        "subject_kind": result.subject_kind,
        "subject_id": result.subject_id,
        "evidence_json": json.dumps(result.evidence, sort_keys=True, default=str),
        "created_at": result.created_at,
        "created_by": result.created_by,
    }


def _result(row: Any) -> CheckResult:
    fields = {k: v for k, v in row.items() if k != "evidence_json"}
    fields["passed"] = bool(fields["passed"])
    return CheckResult(**fields, evidence=json.loads(row["evidence_json"]))
