"""Ground truth from files or records (``meguri feedback``), written beside the captures.

Labels often arrive days after the predictions (a churned customer, a repaid loan). The
servers accept them one post at a time (``POST /feedback``); this module takes them in bulk::

    record_feedback(ws, "production", "labels.csv")          # CSV, Parquet or JSON lines
    record_feedback(ws, "production", [{"request_id": "r-1", "label": 1}])

Columns: ``request_id``, optional ``row`` (the row's index in its request; 0 when absent or
empty) and ``label``. The labels are checked against the task of the model the environment
serves (one of a classifier's labels; a finite number for a regression) and written as the
server writes them: one Parquet part under the environment's capture folder
``_feedback/date=YYYY-MM-DD/``, written under a hidden temporary name and renamed, with the
schema of :func:`meguri.serve._capture.feedback_schema`; with encryption at rest on it is
sealed as the servers seal theirs (built in memory, never in clear on disk; the file given as
``source`` is the caller's and is only read). Nothing is written when any record
is refused. Of records with the same ``(request_id, row)`` in one batch, the last one wins;
across batches, the latest written wins (:func:`meguri.monitor._capture.scan_feedback`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from meguri.errors import MeguriError, MonitorError
from meguri.monitor._capture import capture_keys, capture_url
from meguri.serve._capture import (
    FEEDBACK_FOLDER,
    MAX_REQUEST_ID,
    LabelRule,
    feedback_schema,
    write_part,
)
from meguri.serve._sealed_parts import is_local

if TYPE_CHECKING:
    from meguri.store import Workspace
    from meguri.store.artifacts import KeyRing
    from meguri.store.metadata import Deployment

__all__ = ["FeedbackResult", "record_feedback"]

FeedbackSource = str | Path | Sequence[Mapping[str, Any]]
_READERS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "ndjson",
    ".ndjson": "ndjson",
    ".json": "ndjson",
}


@dataclass(frozen=True)
class FeedbackResult:
    """What one call wrote: ``rows`` labels (after ``duplicates`` were dropped: the last
    record of a ``(request_id, row)`` wins) in the Parquet part ``path``."""

    environment: str
    rows: int
    duplicates: int
    path: str
    request_ids: tuple[str, ...]
    """The distinct request ids labelled (to find the windows to recompute)."""


def record_feedback(ws: Workspace, environment: str, source: FeedbackSource) -> FeedbackResult:
    """Check ground truth from ``source`` (a CSV, Parquet or JSON-lines file, or a list of
    records) and write it to ``environment``'s capture folder (see the module docstring)."""
    deployment = _deployment(ws, environment)
    rule = _label_rule(ws, deployment)
    frame, what, labelled = _read(source, rule)
    checked = _checked(frame, what, None if labelled else rule)
    unique = checked.unique(["request_id", "row"], keep="last", maintain_order=True)
    path = _write(capture_url(ws, environment), unique, capture_keys(ws))
    request_ids = tuple(unique["request_id"].unique(maintain_order=True).to_list())
    return FeedbackResult(
        environment, unique.height, checked.height - unique.height, path, request_ids
    )


def _deployment(ws: Workspace, environment: str) -> Deployment:
    found = ws.metadata.deployments.find(ws.project.id, environment)
    if found is None:
        known = sorted(d.environment for d in ws.metadata.deployments.list(ws.project.id))
        raise MonitorError(
            f"feedback: no deployment to environment {environment!r} in this project "
            f"(deployed: {', '.join(known) or 'none'}); name one of those"
        )
    return found


def _label_rule(ws: Workspace, deployment: Deployment) -> LabelRule | None:
    """The label rule of the model version the environment serves now (its primary)."""
    from meguri.serve._signature import Signature

    if deployment.current_revision_id is None:
        return None
    revision = ws.metadata.deployments.get_revision(deployment.current_revision_id)
    primary = next((t for t in revision.targets if t.role == "primary"), None)
    if primary is None:
        return None
    version = ws.metadata.models.get_version(primary.model_version_id)
    return LabelRule(Signature.from_dict(version.signature).output)


# -- reading ---------------------------------------------------------------------------------
def _read(source: FeedbackSource, rule: LabelRule | None) -> tuple[pl.DataFrame, str, bool]:
    """The records as a table, what to call them, and whether their labels are already the
    feedback table's text (a list of records, checked one by one against ``rule``)."""
    if isinstance(source, str | Path):
        return _read_file(Path(source)), str(source), False
    records = list(source)
    if not records:
        raise MonitorError("feedback: the list of records is empty; give at least one")
    if not all(isinstance(r, Mapping) for r in records):
        raise MonitorError("feedback: records must be mappings {request_id, row, label}")
    if rule is None:
        frame = pl.DataFrame([dict(r) for r in records], infer_schema_length=None, strict=False)
        _check_columns(frame.columns, "the records")
        return frame, "the records", False
    rest = [{k: v for k, v in r.items() if k != "label"} for r in records]
    frame = pl.DataFrame(rest, infer_schema_length=None, strict=False)
    _check_columns([*frame.columns, "label"], "the records")
    return frame.with_columns(label=_record_labels(records, rule)), "the records", True


def _record_labels(records: Sequence[Mapping[str, Any]], rule: LabelRule) -> pl.Series:
    """Each record's label as the feedback table's text, judged alone as the servers judge a
    posted label (in a table, Polars would first give the column one type, so a record's label
    would be read by its neighbours': ``[1, false]`` is no ``[1, 0]``). A missing label stays
    null, for :func:`_checked` to name."""
    labels = [r.get("label") for r in records]
    texts = [None if label is None else _record_label(label, rule) for label in labels]
    refused = [i for i, (label, text) in enumerate(zip(labels, texts, strict=True), 1)
               if label is not None and text is None]  # fmt: skip
    if refused:
        first = ", ".join(str(n) for n in refused[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        raise MonitorError(
            f"feedback: the records: label is not {rule.expected()} (record {first}{more}, "
            "counting from 1); nothing was written"
        )
    return pl.Series("label", texts, dtype=pl.String)


def _record_label(label: Any, rule: LabelRule) -> str | None:
    """``rule.text(label)``, a regression target also given as the text of a number (as a file
    gives it: ``"2.5"``)."""
    if rule.regression and isinstance(label, str):
        try:
            return rule.text(float(label))
        except ValueError:
            return None
    return rule.text(label)


def _read_file(path: Path) -> pl.DataFrame:
    kind = _READERS.get(path.suffix.lower())
    if kind is None:
        raise MonitorError(
            f"feedback: cannot read {path}: give a .csv, .parquet or .jsonl (JSON lines) file"
        )
    if not path.is_file():
        raise MonitorError(f"feedback: {path} does not exist or is not a file")
    try:
        frame = _scan(path, kind)
        _check_columns(frame.collect_schema().names(), str(path))
        wanted = [c for c in ("request_id", "row", "label") if c in frame.collect_schema()]
        return frame.select(wanted).collect()
    except MeguriError:
        raise
    except Exception as exc:  # Polars' parse errors, named and translated
        raise MonitorError(f"feedback: cannot read {path} as {kind}: {exc}") from None


def _scan(path: Path, kind: str) -> pl.LazyFrame:
    if path.stat().st_size == 0:
        raise MonitorError(f"feedback: {path} is empty; it needs request_id and label columns")
    if kind == "csv":
        return pl.scan_csv(path, schema_overrides={"request_id": pl.String})
    if kind == "parquet":
        return pl.scan_parquet(path)
    return pl.scan_ndjson(path, infer_schema_length=None)


def _check_columns(present: Sequence[str], what: str) -> None:
    for column in ("request_id", "label"):
        if column not in present:
            raise MonitorError(
                f"feedback: {what} has no column {column!r} (columns present: "
                f"{', '.join(present) or 'none'}); give request_id, label and optionally row"
            )


# -- checking --------------------------------------------------------------------------------
def _checked(frame: pl.DataFrame, what: str, rule: LabelRule | None) -> pl.DataFrame:
    """``request_id``, ``row`` and the label as text; raises naming the first bad records."""
    if frame.height == 0:
        raise MonitorError(f"feedback: {what} holds no records")
    frame = frame.with_row_index("record", offset=1)
    ids = pl.col("request_id").cast(pl.String, strict=False)
    bad_id = ids.is_null() | (ids.str.len_chars() == 0) | (ids.str.len_chars() > MAX_REQUEST_ID)
    _refuse(
        frame,
        bad_id,
        what,
        f"request_id must be a non-empty text of at most {MAX_REQUEST_ID} characters",
    )
    row = _row(frame)
    _refuse(frame, row.is_null() | (row < 0), what, "row must be a whole number >= 0")
    _refuse(frame, pl.col("label").is_null(), what, "label is missing")
    label = _label(frame.schema["label"], rule)
    expected = rule.expected() if rule is not None else "a label"
    _refuse(frame, label.is_null(), what, f"label is not {expected}")
    return frame.select(ids.alias("request_id"), row.alias("row"), label.alias("label"))


def _row(frame: pl.DataFrame) -> pl.Expr:
    """The ``row`` column as Int64: 0 where absent or empty; null where not a whole number."""
    if "row" not in frame.columns:
        return pl.lit(0, dtype=pl.Int64)
    given = pl.col("row")
    number = given.cast(pl.Float64, strict=False)
    whole = number.is_finite() & (number == number.floor())
    converted = pl.when(whole).then(number.cast(pl.Int64, strict=False))
    return pl.when(given.is_null()).then(pl.lit(0, dtype=pl.Int64)).otherwise(converted)


def _label(dtype: pl.DataType, rule: LabelRule | None) -> pl.Expr:
    """The label as the feedback table's text (null where ``rule`` refuses it), compared as
    :class:`~meguri.serve._capture.LabelRule` compares: as text, then by number."""
    label = pl.col("label")
    if rule is None:
        return _key(label, dtype)
    if rule.regression:
        if dtype == pl.Boolean:
            return pl.lit(None, dtype=pl.String)  # a yes/no is no regression target
        number = label.cast(pl.Float64, strict=False)
        return pl.when(number.is_finite()).then(number.cast(pl.String))
    if not rule.texts:
        return _key(label, dtype)
    texts = rule.texts
    direct = _key(label, dtype).replace_strict(texts, default=None, return_dtype=pl.String)
    numeric = _key(label.cast(pl.Float64, strict=False), pl.Float64())
    return direct.fill_null(numeric.replace_strict(texts, default=None, return_dtype=pl.String))


def _key(label: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """:func:`meguri.serve._capture.label_key` in Polars: numbers by value, booleans as JSON
    spells them (Polars' own text for them), text as it is."""
    if dtype.is_float():
        whole = label.is_finite() & (label == label.floor())
        return (
            pl.when(whole)
            .then(label.cast(pl.Int64, strict=False).cast(pl.String))
            .when(label.is_finite())
            .then(label.cast(pl.String))
        )
    return label.cast(pl.String, strict=False)


def _refuse(frame: pl.DataFrame, bad: pl.Expr, what: str, problem: str) -> None:
    records = frame.filter(bad)["record"]
    if records.len():
        first = ", ".join(str(n) for n in records.head(5).to_list())
        more = f" and {records.len() - 5} more" if records.len() > 5 else ""
        raise MonitorError(
            f"feedback: {what}: {problem} (record {first}{more}, counting from 1); "
            "nothing was written"
        )


# -- writing ---------------------------------------------------------------------------------
def _write(url: str, frame: pl.DataFrame, keys: KeyRing | None) -> str:
    import fsspec

    moment = datetime.fromtimestamp(time.time(), UTC)
    day = moment.strftime("%Y-%m-%d")
    table = frame.with_columns(time=pl.lit(moment, dtype=pl.Datetime("us", "UTC"))).to_arrow()
    table = table.select(["request_id", "row", "label", "time"]).cast(feedback_schema())
    fs, root = fsspec.core.url_to_fs(url)
    folder = f"{root}/{FEEDBACK_FOLDER}/date={day}"
    path: str = write_part(fs, folder, table, local=is_local(fs), keys=keys)
    return path
