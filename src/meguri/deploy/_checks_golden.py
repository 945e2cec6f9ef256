"""The golden examples of a model version: the raw rows of its test part, rebuilt from data.

Training stores the *prepared* parts; the raw test rows are those of the source dataset version
that the recorded split puts in ``test``. :func:`golden_set` reads the source version, keeps the
columns the split saw (the signature's inputs, then the target), replays the split and checks
its digests against the record (:func:`meguri.data._split.replay_split`), so the golden rows are
exactly the rows the version was tested on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import polars as pl

from meguri.errors import DataError
from meguri.store import Workspace

if TYPE_CHECKING:
    from meguri.serve import LoadedModel
    from meguri.store.metadata import DatasetVersion, ModelVersion

__all__ = ["Golden", "golden_set"]


@dataclass(frozen=True)
class Golden:
    """The golden rows in each form the tests send: JSON-ready rows, CSV text with a header,
    the columnar batch a :class:`LoadedModel` predicts, and the labels (when known)."""

    names: list[str]
    types: list[str]
    records: list[tuple[Any, ...]]
    csv: bytes
    batch: dict[str, np.ndarray[Any, Any]]
    target: np.ndarray[Any, Any] | None
    source: dict[str, Any]

    @property
    def rows(self) -> int:
        return len(self.records)


def golden_set(
    ws: Workspace, version: ModelVersion, model: LoadedModel, *, max_rows: int = 1_000
) -> Golden:
    """The first ``max_rows`` raw test rows of ``version`` (see the module docstring)."""
    from meguri.data import read
    from meguri.data._split import replay_split

    test = _test_part(ws, version, model)
    record, parents = test.lineage.get("split"), test.parents
    if not isinstance(record, dict) or not parents:
        raise DataError(
            f"dataset version {test.ref} records no split of a source version; the golden "
            "examples need the training data's lineage: train again with `meguri train`"
        )
    names = model.signature.names
    target = _target(ws, version, record)
    frame = read(parents[0], workspace=ws).collect().select([*names, target])
    rows = replay_split(frame, record).test.head(max_rows)
    source = {"test_part": test.id, "source": parents[0], "split": record.get("digests")}
    return _golden(model, rows, target, {**source, "rows": rows.height})


def _test_part(ws: Workspace, version: ModelVersion, model: LoadedModel) -> DatasetVersion:
    lineage = model.metadata.get("lineage") or {}
    part = (lineage.get("dataset_versions") or {}).get("test")
    if isinstance(part, str):
        return ws.metadata.datasets.get_version(part)
    run = ws.metadata.runs.get_run(version.run_id)
    inputs = ws.metadata.datasets.get_versions(run.inputs.get("dataset_version", []))
    for found in inputs.values():
        if found.lineage.get("part") == "test":
            return found
    raise DataError(
        f"{version.ref}: neither its package nor its run {version.run_id} names a test part "
        "(a dataset version with lineage part 'test'); the golden examples come from it: "
        "train with `meguri train` so that the run records its data"
    )


def _target(ws: Workspace, version: ModelVersion, record: dict[str, Any]) -> str:
    from meguri.registry import download_package

    folder = download_package(version.id, workspace=ws)
    transform = orjson.loads((folder / "transform.json").read_bytes())
    target = transform.get("target") or record.get("by")
    if not isinstance(target, str):
        raise DataError(
            f"{version.ref}: the package's transform.json names no target column; repackage "
            "the model with this version of meguri"
        )
    return target


def _golden(model: LoadedModel, rows: pl.DataFrame, target: str, source: dict[str, Any]) -> Golden:
    if rows.height == 0:
        raise DataError("the test part holds no rows: there are no golden examples")
    signature = model.signature
    inputs = rows.select(signature.names)
    labels = rows.get_column(target)
    return Golden(
        names=signature.names,
        types=[c.type for c in signature.inputs],
        records=inputs.rows(),
        csv=inputs.write_csv().encode(),
        batch={c.name: _column(inputs.get_column(c.name), c.type) for c in signature.inputs},
        target=None if labels.null_count() else labels.to_numpy(),
        source=source,
    )


def _column(values: pl.Series, kind: str) -> np.ndarray[Any, Any]:
    """One column as the server hands it to ``predict`` (see meguri.serve._signature)."""
    if kind in ("double", "long"):
        return values.cast(pl.Float64).fill_null(float("nan")).to_numpy()
    if kind == "datetime":
        return values.cast(pl.Datetime("us")).to_numpy()
    if kind == "boolean":
        return values.to_numpy()
    return np.asarray(values.cast(pl.String).to_list(), dtype=object)
