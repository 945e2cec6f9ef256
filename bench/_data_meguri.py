"""The meguri side of the data benchmark, in its own process: ``python _data_meguri.py CSV``.

Stages, each through meguri's own functions (what ``meguri.data.prepare`` runs):

``setup``    ``meguri.open_workspace`` on a fresh temporary folder (SQLite + local artifacts)
``ingest``   ``ingest_frame(csv)`` (read, checks, content hash, Parquet into the artifact store,
             the catalog row), keeping the table it read in memory, as ``prepare`` does
``profile``  ``profile(frame, target=...)``: every statistic, histograms, correlations
``split``    ``split(frame, SplitSpec(method="stratified", ...))`` by row hash
``clean``    ``fit_transform(train, steps)`` on the training rows, then the fitted transform
             applied to validation and test (collected)
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import polars as pl

import meguri
from _data_child import PARTS, Stages, run
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
from meguri.data._catalog import ingest_frame
from meguri.data._profile import DatasetProfile, profile
from meguri.data._split import split
from meguri.data._transform import FittedTransform, fit_transform
from meguri.spec._prepare import SplitSpec

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
            _, frame = ingest_frame(csv, name="bench", workspace=ws)
        checks["rows"] = frame.height
        with stages.stage("profile"):
            prof = profile(frame, target=TARGET, bins=BINS, top=TOP)
        with stages.stage("split"):
            result = split(frame, _split_spec(), target=TARGET)
        parts = result.parts()
        checks["split"] = {name: _class_counts(part) for name, part in parts.items()}
        if release:  # keep nothing the next stages do not need
            del frame, result
        with stages.stage("clean"):
            transform, cleaned = _clean(parts, release)
        ws.close()
    checks["profile"] = _profile_checks(prof)
    checks["clean"] = _clean_checks(transform, cleaned["test"])
    return stages.report(checks)


def _clean(
    parts: dict[str, pl.DataFrame], release: bool
) -> tuple[FittedTransform, dict[str, pl.DataFrame]]:
    """Fit on the training rows, apply to the others; ``release`` drops each raw part once used."""

    def take(name: str) -> pl.DataFrame:
        return parts.pop(name) if release else parts[name]

    transform, train = fit_transform(take("train"), STEPS, target=TARGET, seed=SPLIT_SEED)
    cleaned = {"train": train}
    for name in PARTS[1:]:
        cleaned[name] = transform.apply(take(name)).collect()
    return transform, cleaned


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


def _clean_checks(transform: FittedTransform, test: pl.DataFrame) -> dict[str, Any]:
    learned = {step.kind: step.learned for step in transform.steps}
    means = test.select(pl.exclude(TARGET).cast(pl.Float64).mean()).row(0, named=True)
    return {
        "medians": learned["impute"]["values"],
        "bounds": learned["clip"]["bounds"],
        "scale": learned["scale"]["stats"],
        "columns": sorted(transform.output_schema),
        "test_means": means,
    }


if __name__ == "__main__":
    run(main)
