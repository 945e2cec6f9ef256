"""The meguri side of the data benchmark, in its own process: ``python _data_meguri.py CSV``.

Stages, each through the functions ``meguri.data.prepare`` runs, holding what it holds:

``setup``    ``meguri.open_workspace`` on a fresh temporary folder (SQLite + local artifacts)
``ingest``   ``ingest_frame(csv)`` (read, checks, content hash, Parquet into the artifact store,
             the catalog row), keeping the table it read in memory, as ``prepare`` does
``profile``  ``profile(frame, target=...)``: every statistic, histograms, correlations
``split``    ``split(frame, SplitSpec(method="stratified", ...), consume=True)`` by row hash:
             the table is moved into the parts, a few columns at a time, as ``prepare`` does
``clean``    ``prepare_parts(parts, steps)``, what ``prepare`` runs: ``fit_transform`` on the
             training rows, each prepared part stored as a dataset version (the training part
             stored, then dropped; validation and test streamed through the fitted transform
             to their Parquet files, never collected). The raw parts stay in memory to the
             end, as ``PreparedData.raw`` keeps them.

``release`` changes nothing here: this side always holds what ``prepare`` holds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import polars as pl

import meguri
from _data_child import Stages, run
from _data_table import (
    BINS,
    NUMERIC,
    SPLIT_FRACTIONS,
    SPLIT_SEED,
    TARGET,
    TEXT,
    TOP,
    WITH_NULLS,
)
from meguri.data._catalog import ingest_frame, read
from meguri.data._pipeline import prepare_parts
from meguri.data._profile import DatasetProfile, profile
from meguri.data._split import split
from meguri.data._transform import FittedTransform
from meguri.spec._prepare import SplitSpec
from meguri.store import Workspace

STEPS: list[dict[str, Any]] = [
    {"impute": {"columns": WITH_NULLS, "strategy": "median", "indicator": True}},
    {"clip": {"columns": NUMERIC, "method": "iqr", "factor": 1.5}},
    {"scale": {"columns": NUMERIC, "method": "standard"}},
    {"one_hot": {"columns": TEXT}},
]


def main(csv: str, release: bool) -> dict[str, Any]:
    stages = Stages()
    checks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="meguri-bench-data-") as tmp:
        with stages.stage("setup"):
            ws = meguri.open_workspace(Path(tmp), project="bench")
        with stages.stage("ingest"):
            source, frame = ingest_frame(csv, name="bench", workspace=ws)
        checks["rows"] = frame.height
        with stages.stage("profile"):
            prof = profile(frame, target=TARGET, bins=BINS, top=TOP)
        with stages.stage("split"):
            result = split(frame, _split_spec(), target=TARGET, consume=True)
            del frame  # emptied by the split: the parts hold the rows
        parts = result.parts()
        checks["split"] = {name: _class_counts(part) for name, part in parts.items()}
        with stages.stage("clean"):
            transform, _, stored = prepare_parts(
                result, STEPS, target=TARGET, source=source, name="bench", workspace=ws
            )
        checks["clean"] = _clean_checks(transform, ws, stored["test"].id)
        ws.close()
    checks["profile"] = _profile_checks(prof)
    return stages.report(checks)


def _split_spec() -> SplitSpec:
    train, validation, test = SPLIT_FRACTIONS
    return SplitSpec(
        method="stratified",
        by=TARGET,
        train=train,
        validation=validation,
        test=test,
        seed=SPLIT_SEED,
    )


def _class_counts(part: pl.DataFrame) -> dict[str, int]:
    counts = part.get_column(TARGET).value_counts(name="n")
    return {str(value): int(n) for value, n in counts.iter_rows()}


def _profile_checks(prof: DatasetProfile) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for column in prof.columns:
        entry: dict[str, Any] = {
            "count": column.count,
            "nulls": column.nulls,
            "distinct": column.distinct,
        }
        if column.numeric is not None:
            stats = column.numeric
            entry.update(min=stats.min, max=stats.max, mean=stats.mean, std=stats.std)
            entry["quantiles"] = list(stats.quantiles.values())
            entry["histogram"] = list(stats.histogram.counts) if stats.histogram else None
        if column.top:
            entry["top"] = {str(v.value): v.count for v in column.top}
        columns[column.name] = entry
    corr = prof.correlations
    pairs = {
        f"{a}|{b}": corr.matrix[i][j]
        for i, a in enumerate(corr.columns)
        for j, b in enumerate(corr.columns)
        if i < j
    }
    return {"columns": columns, "correlations": pairs}


def _clean_checks(transform: FittedTransform, ws: Workspace, test_id: str) -> dict[str, Any]:
    """What the transform learned, and the stored test part's column means (read lazily)."""
    learned = {step.kind: step.learned for step in transform.steps}
    test = read(test_id, workspace=ws)
    means = test.select(pl.exclude(TARGET).cast(pl.Float64).mean()).collect().row(0, named=True)
    return {
        "medians": learned["impute"]["values"],
        "bounds": learned["clip"]["bounds"],
        "scale": learned["scale"]["stats"],
        "columns": sorted(transform.output_schema),
        "test_means": means,
    }


if __name__ == "__main__":
    run(main)
