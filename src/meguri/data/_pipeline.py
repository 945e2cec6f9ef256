"""The data phase end to end, as the spec's ``data:`` section declares it.

``prepare(spec)``: ingest the source (a new dataset version only if the content changed) →
profile it (stored with the version, reused next time: monitoring's reference baseline) → run
the quality checks (stored; an error-level failure stops here with the rows and columns) →
drop the spec's excluded columns → split train / validation / test by row hash → fit the
``prepare`` steps on the training rows only → apply the fitted transform to every part (on
Polars here, or batch by batch through the ``compute`` executor, Ray Data with
``pipeline.compute: ray``) → store each part as a dataset version whose lineage holds the split
record and everything the steps learned, and the fitted transform itself (JSON) in the
artifact store, so serving applies exactly what training saw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import polars as pl

from meguri.data import _catalog
from meguri.data._profile import DatasetProfile, profile
from meguri.data._quality import QualityReport, run_checks
from meguri.data._split import PARTS, SplitResult, split
from meguri.data._transform import FittedTransform, fit_transform
from meguri.errors import DataError
from meguri.store import Workspace, default_workspace

if TYPE_CHECKING:
    import pyarrow as pa

    from meguri.compute import Executor
    from meguri.spec import DataSource, ProjectSpec
    from meguri.spec._prepare import PrepareStep
    from meguri.store.metadata import DatasetVersion

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PreparedData:
    """What :func:`prepare` recorded: the source version, its profile and quality report, the
    prepared parts (dataset versions) and the fitted transform (with its artifact digest)."""

    source: DatasetVersion
    profile: DatasetProfile
    quality: QualityReport
    parts: dict[str, DatasetVersion]
    transform: FittedTransform
    transform_digest: str
    target: str
    raw: dict[str, pl.DataFrame] = field(default_factory=dict, repr=False, compare=False)
    """The split parts before preparation (in memory only): cross-validation refits the
    transform on each fold's training rows from these."""

    def frame(self, part: str, *, workspace: Workspace | None = None) -> pl.DataFrame:
        """One prepared part (``train``, ``validation`` or ``test``) as a DataFrame."""
        return _catalog.read(self.parts[part].id, workspace=workspace).collect()


def _source(spec: ProjectSpec, name: str | None) -> DataSource:
    sources = spec.data.sources
    if not sources:
        raise DataError("The spec has no data.sources; add one, e.g. `uri: bundled://NAME`.")
    if name is None:
        return sources[0]
    for source in sources:
        if source.name == name:
            return source
    known = ", ".join(s.name for s in sources)
    raise DataError(f"No data source {name!r} in the spec (sources: {known}).")


def profile_version(
    version: DatasetVersion,
    *,
    target: str | None = None,
    frame: pl.DataFrame | None = None,
    workspace: Workspace | None = None,
) -> DatasetProfile:
    """The stored profile of ``version``, computed and stored the first time (from ``frame``,
    the version's data already in memory, when given)."""
    ws = workspace or default_workspace()
    stored = _catalog.attachment(version.id, "profile", workspace=ws)
    if stored is not None:
        found = DatasetProfile.from_json(stored)
        if found.target == target:
            return found
    data = frame if frame is not None else _catalog.read(version.id, workspace=ws)
    computed = profile(data, target=target)
    _catalog.attach(version.id, "profile", computed.to_json(), workspace=ws)
    return computed


def check_version(
    version: DatasetVersion,
    spec: ProjectSpec,
    *,
    data_profile: DatasetProfile | None = None,
    frame: pl.DataFrame | None = None,
    workspace: Workspace | None = None,
) -> QualityReport:
    """Run the spec's quality checks on ``version`` (its data ``frame`` when already in
    memory) and store the report with it."""
    ws = workspace or default_workspace()
    functional = spec.requirements.functional
    history = _catalog.history(version.name, workspace=ws)
    earlier = [v for v in history if v.version < version.version]
    report = run_checks(
        frame if frame is not None else _catalog.read(version.id, workspace=ws),
        spec.data.quality,
        target=functional.target,
        profile=data_profile,
        previous_schema=earlier[-1].schema if earlier else None,
        task=functional.task,
    )
    _catalog.attach(version.id, "quality", report.to_json(), workspace=ws)
    return report


def _modelling_columns(frame: pl.DataFrame, spec: ProjectSpec) -> pl.DataFrame:
    """The target and the inputs: the spec's ``inputs`` if given, less excluded columns."""
    functional, excluded = spec.requirements.functional, set(spec.constraints.excluded_columns)
    wanted = functional.inputs or [c for c in frame.columns if c != functional.target]
    missing = [c for c in [*wanted, functional.target] if c not in frame.columns]
    if missing:
        raise DataError(
            f"Column(s) {', '.join(missing)} named in requirements.functional are not in the "
            f"data (columns: {', '.join(frame.columns)}); fix the spec or the source."
        )
    return frame.select([c for c in wanted if c not in excluded] + [functional.target])


def _apply_arrow(transform_json: bytes, table: pa.Table) -> pa.Table:
    """Apply a fitted transform to one Arrow batch (runs in executor workers)."""
    transform = FittedTransform.from_json(transform_json)
    return transform.apply(pl.from_arrow(table)).collect().to_arrow()  # type: ignore[arg-type]


def _apply(
    transform: FittedTransform, frame: pl.DataFrame, engine: Executor | None
) -> pl.DataFrame | pl.LazyFrame:
    """The prepared part: lazy on Polars (streamed to its Parquet file when saved), collected
    when an executor applies it batch by batch."""
    if engine is None:
        return transform.apply(frame)
    table = engine.map_arrow(frame.to_arrow(), partial(_apply_arrow, transform.to_json()))
    result = pl.from_arrow(table)
    assert isinstance(result, pl.DataFrame)
    return result


def prepare(
    spec: ProjectSpec,
    *,
    source: str | None = None,
    workspace: Workspace | None = None,
    engine: Executor | None = None,
    progress: Progress | None = None,
) -> PreparedData:
    """Run the data phase of ``spec`` (see the module docstring); every step is recorded."""
    ws = workspace or default_workspace()
    say = progress or (lambda _message: None)
    target = spec.requirements.functional.target
    chosen = _source(spec, source)
    say(f"ingesting {chosen.uri}")
    version, loaded = _catalog.ingest_frame(chosen, name=chosen.name, workspace=ws)
    say(f"profiling {version.ref}")
    data_profile = profile_version(version, target=target, frame=loaded, workspace=ws)
    say("checking quality")
    report = check_version(version, spec, data_profile=data_profile, frame=loaded, workspace=ws)
    report.raise_for_errors()
    frame = _modelling_columns(loaded, spec)
    del loaded
    say("splitting")
    parts = split(frame, spec.data.split, target=target, consume=True)  # frame: emptied
    del frame
    say("fitting the preparation steps on the training rows")
    transform, digest, stored = prepare_parts(
        parts,
        spec.data.prepare,
        target=target,
        source=version,
        name=chosen.name,
        workspace=ws,
        engine=engine,
    )
    return PreparedData(
        version, data_profile, report, stored, transform, digest, target, raw=parts.parts()
    )


def prepare_parts(
    parts: SplitResult,
    steps: Sequence[PrepareStep | Mapping[str, Any]],
    *,
    target: str | None,
    source: DatasetVersion,
    name: str,
    workspace: Workspace,
    engine: Executor | None = None,
) -> tuple[FittedTransform, str, dict[str, DatasetVersion]]:
    """Fit ``steps`` on the training part, store the fitted transform, then store each
    prepared part as version ``<name>-<part>`` of ``source``: the transform, its artifact
    digest and the versions.

    One prepared part at most is in memory at a time: the training part (which fitting
    collects) is stored and dropped before validation and test are applied, and those are
    streamed from the raw part to their Parquet files without being collected."""
    ws = workspace
    transform, train = _fit(engine, parts.train, steps, target, parts.spec.seed)
    digest = ws.artifacts.put_bytes(transform.to_json()).digest
    lineage = _lineage(source, parts.record(), transform, digest)
    save = partial(_save_part, ws, name, source, lineage)
    stored = {"train": save("train", train)}
    del train
    for part in PARTS[1:]:
        stored[part] = save(part, _apply(transform, parts.parts()[part], engine))
    return transform, digest, stored


def _fit(
    engine: Executor | None,
    train: pl.DataFrame,
    steps: Sequence[PrepareStep | Mapping[str, Any]],
    target: str | None,
    seed: int,
) -> tuple[FittedTransform, pl.DataFrame]:
    """Fit on Polars, or the numeric statistics on Ray Data with ``compute: ray``."""
    if engine is None or engine.name != "ray":
        return fit_transform(train, steps, target=target, seed=seed)
    from meguri.data._fit_ray import fit_on

    return fit_on(engine, train, steps, target=target, seed=seed)


def _save_part(
    ws: Workspace,
    name: str,
    source: DatasetVersion,
    lineage: dict[str, Any],
    part: str,
    frame: pl.DataFrame | pl.LazyFrame,
) -> DatasetVersion:
    return _catalog.save_version(
        f"{name}-{part}",
        frame,
        parents=[source.id],
        operation="prepare",
        lineage={**lineage, "part": part},
        workspace=ws,
    )


def _lineage(
    version: DatasetVersion, record: dict[str, Any], transform: FittedTransform, digest: str
) -> dict[str, Any]:
    return {
        "source": version.ref,
        "split": record,
        "transform": {"digest": digest, "steps": transform.learned()},
    }
