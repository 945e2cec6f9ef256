"""The pandas side of the data benchmark, in its own process: ``python _data_pandas.py CSV``.

The same work as the meguri side, written as pandas users write it:

``ingest``   ``pd.read_csv(csv)`` (default C engine)
``profile``  ``describe(percentiles=...)`` (mean, std, min, quantiles, max), ``count``, nulls,
             ``nunique``, a ``numpy.histogram`` per numeric column, ``value_counts`` of the
             text columns (top 10), ``corr()`` of the numeric columns (the target included)
``split``    stratified by the target: per class, a seeded ``numpy`` permutation cut at
             ``round(n * 0.7)`` and ``round(n * 0.85)``; rows kept in input order (``take``)
``persist``  (the ``persist`` argument) also writes the table read and each cleaned part as
             Parquet with a sha256 per file, the storing meguri's dataset versions do
``clean``    fitted on the training rows, each step on the output of the one before (as
             meguri does): median ``fillna`` with ``<col>_missing`` indicators, ``clip`` at
             Tukey's fences (1.5 IQR), standardising (``ddof=0``), ``get_dummies`` of the text
             columns (validation and test reindexed to the training columns)
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from _data_child import PARTS, Stages, run
from _data_table import (
    BINS,
    NUMERIC,
    QUANTILES,
    SPLIT_FRACTIONS,
    SPLIT_SEED,
    TARGET,
    TEXT,
    TOP,
    WITH_NULLS,
)


def profile(df: pd.DataFrame) -> dict[str, Any]:
    numeric = df.select_dtypes("number")
    return {
        "describe": numeric.describe(percentiles=list(QUANTILES)),
        "count": df.count(),
        "nulls": df.isna().sum(),
        "distinct": df.nunique(),
        "histograms": {c: np.histogram(numeric[c].dropna(), BINS) for c in numeric},
        "top": {c: df[c].value_counts().head(TOP) for c in TEXT},
        "corr": numeric.corr(),
    }


def split(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(SPLIT_SEED)
    train, validation, _ = SPLIT_FRACTIONS
    chosen: dict[str, list[np.ndarray]] = {name: [] for name in PARTS}
    y = df[TARGET].to_numpy()
    for cls in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == cls))
        cuts = [int(np.round(len(rows) * train)), int(np.round(len(rows) * (train + validation)))]
        for name, part in zip(PARTS, np.split(rows, cuts), strict=True):
            chosen[name].append(part)
    return {name: df.take(np.sort(np.concatenate(idx))) for name, idx in chosen.items()}


def fit_clean(train: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    """Learn each step on the training rows as the steps before left them."""
    params: dict[str, Any] = {"medians": train[WITH_NULLS].median()}
    out = _impute(train, params)
    q1, q3 = out[NUMERIC].quantile(0.25), out[NUMERIC].quantile(0.75)
    params["lower"], params["upper"] = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    out = _clip(out, params)
    params["mean"], params["std"] = out[NUMERIC].mean(), out[NUMERIC].std(ddof=0)
    out = _scale(out, params)
    out = pd.get_dummies(out, columns=TEXT, dtype="int8")
    params["columns"] = list(out.columns)
    return params, out


def apply_clean(part: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    out = _scale(_clip(_impute(part, params), params), params)
    out = pd.get_dummies(out, columns=TEXT, dtype="int8")
    return out.reindex(columns=params["columns"], fill_value=0)


def _impute(df: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    missing = {f"{c}_missing": df[c].isna().astype("int8") for c in WITH_NULLS}
    return df.fillna(params["medians"]).assign(**missing)


def _clip(df: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    clipped = df[NUMERIC].astype("float64").clip(params["lower"], params["upper"], axis=1)
    return df.assign(**clipped)


def _scale(df: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    return df.assign(**((df[NUMERIC] - params["mean"]) / params["std"]))


def main(csv: str, release: bool, persist: bool = False) -> dict[str, Any]:
    """``persist``: also keep what meguri's versions keep, as a pandas user versioning data
    would: the table read and each cleaned part written as Parquet (zstd) with the sha256 of
    each file (timed inside ``ingest`` and ``clean``)."""
    stages = Stages()
    checks: dict[str, Any] = {}
    folder = Path(tempfile.mkdtemp(prefix="pandas-bench-")) if persist else None
    with stages.stage("ingest"):
        df = pd.read_csv(csv)
        if folder is not None:
            _store(df, folder / "table.parquet")
    checks["rows"] = len(df)
    with stages.stage("profile"):
        prof = profile(df)
    with stages.stage("split"):
        parts = split(df)
    checks["split"] = {name: _class_counts(part) for name, part in parts.items()}
    if release:  # keep nothing the next stages do not need
        del df
    with stages.stage("clean"):
        params, cleaned = clean(parts, release)
        if folder is not None:
            for name, part in cleaned.items():
                _store(part, folder / f"{name}.parquet")
    if folder is not None:
        shutil.rmtree(folder)
    checks["profile"] = _profile_checks(prof)
    checks["clean"] = _clean_checks(params, cleaned["test"])
    return stages.report(checks)


def _store(df: pd.DataFrame, path: Path) -> str:
    """Write ``df`` as Parquet and return the sha256 of the file (a content address)."""
    df.to_parquet(path, compression="zstd", index=False)
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def clean(
    parts: dict[str, pd.DataFrame], release: bool
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Fit on the training rows, apply to the others; ``release`` drops each raw part once used."""

    def take(name: str) -> pd.DataFrame:
        return parts.pop(name) if release else parts[name]

    params, train = fit_clean(take("train"))
    cleaned = {"train": train}
    for name in PARTS[1:]:
        cleaned[name] = apply_clean(take(name), params)
    return params, cleaned


def _class_counts(part: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in part[TARGET].value_counts().items()}


def _profile_checks(prof: dict[str, Any]) -> dict[str, Any]:
    described: pd.DataFrame = prof["describe"]
    columns: dict[str, Any] = {}
    for name, nulls in prof["nulls"].items():
        entry: dict[str, Any] = {"count": int(prof["count"][name]), "nulls": int(nulls)}
        entry["distinct"] = int(prof["distinct"][name])
        if name in described:
            stats = described[name]
            entry.update(min=stats["min"], max=stats["max"])
            entry.update(mean=stats["mean"], std=stats["std"])
            entry["quantiles"] = [float(stats[_percent(q)]) for q in QUANTILES]
            entry["histogram"] = [int(c) for c in prof["histograms"][name][0]]
        if name in prof["top"]:
            entry["top"] = {str(k): int(v) for k, v in prof["top"][name].items()}
        columns[str(name)] = entry
    corr: pd.DataFrame = prof["corr"]
    names = list(corr.columns)
    pairs = {
        f"{a}|{b}": _number(corr.iloc[i, j])
        for i, a in enumerate(names)
        for j, b in enumerate(names)
        if i < j
    }
    return {"columns": columns, "correlations": pairs}


def _percent(q: float) -> str:
    return f"{q * 100:g}%"


def _number(value: Any) -> float | None:
    number = float(value)
    return None if np.isnan(number) else number


def _clean_checks(params: dict[str, Any], test: pd.DataFrame) -> dict[str, Any]:
    return {
        "medians": params["medians"].to_dict(),
        "bounds": {c: [params["lower"][c], params["upper"][c]] for c in NUMERIC},
        "scale": {c: [params["mean"][c], params["std"][c]] for c in NUMERIC},
        "columns": sorted(c for c in params["columns"] if c != TARGET),
        "test_means": test.drop(columns=TARGET).astype("float64").mean().to_dict(),
    }


if __name__ == "__main__":
    run(main)
