"""The data catalog: ingest sources as dataset versions, save derived versions, read them back,
and browse (history, search, schema diffs, lineage).

A version is written in two steps, so the catalog never holds half of one: its data goes to
the artifact store as one Parquet object (content-addressed, written atomically), then one
metadata transaction records the version, its parents and its dataset. A crash between the two
leaves at most an unreferenced blob, never a version without data. Identical content (see
``_catalog_hash``) is the same version: an ingest of data already stored under the name
returns that version and writes nothing; two processes ingesting the same data at once end with
one version (the store's unique constraint on the content hash decides).

References (``ref``) name a version as ``name`` (the latest), ``name@3``, ``name@latest``, a
version id ``dsv-...`` or a unique prefix of one.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from meguri.data import _sources
from meguri.data._catalog_hash import (
    WrittenFile,
    content_hash,
    file_content_hash,
    parquet_file,
    schema_of,
)
from meguri.errors import ArtifactCorruptedError, DataError, NotFoundError
from meguri.store.artifacts import StoredArtifact
from meguri.store.metadata._entities import Dataset, DatasetVersion
from meguri.store.metadata.repositories.datasets import NewDatasetVersion

if TYPE_CHECKING:
    from meguri.spec import DataSource
    from meguri.store import Workspace

__all__ = [
    "Lineage",
    "SchemaDiff",
    "attach",
    "attachment",
    "get_version",
    "history",
    "ingest",
    "ingest_frame",
    "lineage",
    "list_datasets",
    "read",
    "remove_tag",
    "save_version",
    "schema_diff",
    "search",
    "set_tag",
]

AttachmentKind = Literal["profile", "quality"]
VersionRef = str | DatasetVersion


def _workspace(workspace: Workspace | None) -> Workspace:
    if workspace is not None:
        return workspace
    from meguri.store import default_workspace

    return default_workspace()


# -- writing --------------------------------------------------------------------------------


def ingest(
    source: str | DataSource,
    *,
    name: str | None = None,
    format: str | None = None,
    options: Mapping[str, Any] | None = None,
    schema: Mapping[str, str] | None = None,
    description: str | None = None,
    workspace: Workspace | None = None,
) -> DatasetVersion:
    """Read ``source`` (a URI or a spec ``DataSource``) and store it as a version of dataset
    ``name`` (default: the source's name, else the file's stem); the stored version when the
    same data is already there. ``schema`` overrides column types (column -> type name)."""
    version, _ = ingest_frame(
        source,
        name=name,
        format=format,
        options=options,
        schema=schema,
        description=description,
        workspace=workspace,
    )
    return version


def ingest_frame(
    source: str | DataSource,
    *,
    name: str | None = None,
    format: str | None = None,
    options: Mapping[str, Any] | None = None,
    schema: Mapping[str, str] | None = None,
    description: str | None = None,
    workspace: Workspace | None = None,
) -> tuple[DatasetVersion, pl.DataFrame]:
    """:func:`ingest`, also handing back the table it read (so a pipeline need not read the
    stored Parquet back)."""
    uri, spec_name = (source, None) if isinstance(source, str) else (source.uri, source.name)
    if not isinstance(source, str):
        format = format or source.format
        options = {**source.options, **(options or {})}
        schema = {**source.column_types, **(schema or {})}
        description = description or source.description
    resolved = _sources.resolve(uri, format=format, options=options)
    frame = _sources.load(resolved, schema=schema)
    ws = _workspace(workspace)
    version = _store(
        ws,
        name or spec_name or default_name(resolved),
        frame,
        _new_version(frame, ws, operation="ingest"),
        source_uri=resolved.shown_uri,
        format=resolved.format,
        read_options={**resolved.recorded_options, **({"schema": dict(schema)} if schema else {})},
        description=description,
    )
    return version, frame


def save_version(
    name: str,
    frame: pl.DataFrame | pl.LazyFrame,
    *,
    parents: Sequence[VersionRef] = (),
    operation: str,
    lineage: Mapping[str, Any] | None = None,
    description: str | None = None,
    workspace: Workspace | None = None,
) -> DatasetVersion:
    """Store a derived table (cleaned data, a split part...) as a version of dataset ``name``,
    recording the versions it came from, the operation and what the step learned
    (``lineage``, JSON-serialisable, e.g. ``{"medians": {...}}``).

    A ``LazyFrame`` is streamed to Parquet (``sink_parquet``) and hashed back from the file in
    batches, never held whole in memory; the version (content hash, schema, rows) is the one
    the same rows saved as a ``DataFrame`` give."""
    ws = _workspace(workspace)
    _check_name(name)
    if not schema_of(frame):
        raise DataError(f"Cannot save dataset {name!r}: the table has no columns.")
    fields: dict[str, Any] = {
        "parents": [_version(ws, p).id for p in parents],
        "lineage": dict(lineage or {}),
        "description": description,
    }
    if isinstance(frame, pl.LazyFrame):
        return _store_lazy(ws, name, frame, operation, **fields)
    return _store(ws, name, frame, _new_version(frame, ws, operation=operation), **fields)


@dataclass(frozen=True)
class _Pending:
    content_hash: str
    operation: str
    created_by: str


def _new_version(frame: pl.DataFrame, ws: Workspace, *, operation: str) -> _Pending:
    return _Pending(content_hash(frame), operation, ws.user)


def _store(
    ws: Workspace, name: str, frame: pl.DataFrame, pending: _Pending, **fields: Any
) -> DatasetVersion:
    _check_name(name)
    found = ws.metadata.datasets.find_by_hash(ws.project.id, name, pending.content_hash)
    if found is not None:
        return found  # identical data: nothing to write
    with parquet_file(frame, _scratch(ws)) as written:
        stored = _keep(ws, written)
    return _record(ws, name, pending, schema_of(frame), frame.height, stored, **fields)


def _store_lazy(
    ws: Workspace, name: str, frame: pl.LazyFrame, operation: str, **fields: Any
) -> DatasetVersion:
    """Stream ``frame`` to a scratch Parquet file, hash it back, then take the file into the
    store (or drop it when the same data is already a version of ``name``)."""
    schema = schema_of(frame)
    with parquet_file(frame, _scratch(ws)) as written:
        try:
            digest, rows = file_content_hash(written.path, schema)
        except ValueError:  # the file reads back as other types: hash the frame itself
            data = frame.collect()
            return _store(ws, name, data, _new_version(data, ws, operation=operation), **fields)
        pending = _Pending(digest, operation, ws.user)
        found = ws.metadata.datasets.find_by_hash(ws.project.id, name, digest)
        if found is not None:
            return found  # identical data: the scratch file goes
        stored = _keep(ws, written)
    return _record(ws, name, pending, schema, rows, stored, **fields)


def _record(
    ws: Workspace,
    name: str,
    pending: _Pending,
    schema: dict[str, str],
    rows: int,
    stored: StoredArtifact,
    **fields: Any,
) -> DatasetVersion:
    """The catalog row of a version whose data is already in the artifact store."""
    new = NewDatasetVersion(
        content_hash=pending.content_hash,
        schema=schema,
        row_count=rows,
        byte_size=stored.size,
        data_digest=stored.digest,
        operation=pending.operation,
        created_by=pending.created_by,
        **fields,
    )
    version, _ = ws.metadata.datasets.add_version(ws.project.id, name, new)
    return version


def _scratch(ws: Workspace) -> Path | None:
    """Where a Parquet file about to be stored is written: the local store's own disk (so
    :func:`_keep` renames it into place), else the system's temporary folder."""
    from meguri.store.artifacts._local import LocalArtifactStore

    return ws.artifacts.scratch() if isinstance(ws.artifacts, LocalArtifactStore) else None


def _keep(ws: Workspace, written: WrittenFile) -> StoredArtifact:
    """The written file into the artifact store: renamed into place on a local store (one
    write, hashed as it was written), uploaded elsewhere."""
    from meguri.store.artifacts._local import LocalArtifactStore

    store = ws.artifacts
    if isinstance(store, LocalArtifactStore):
        return store.take_file(written.path, sha256=written.sha256)
    return store.put_file(written.path)


def _check_name(name: str) -> None:
    from meguri.spec._model import check_name

    try:
        check_name(name)
    except ValueError as exc:
        raise DataError(f"Dataset name: {exc}.") from None


def default_name(source: _sources.Source) -> str:
    """A dataset name from a source: the bundled name, the table, else the file's stem."""
    if source.format == "bundled":
        raw = source.uri.split("://", 1)[1]
    elif source.format == "sql" and "table" in source.options:
        raw = str(source.options["table"]).rsplit(".", 1)[-1]
    else:
        raw = PurePosixPath(source.uri.split("?", 1)[0]).name.split(".", 1)[0]
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in raw).strip("._-")
    if not cleaned:
        raise DataError(f"Cannot name a dataset after {source.uri!r}: give a name (--name).")
    return cleaned[:100]


def attach(
    version: VersionRef, kind: AttachmentKind, data: bytes, *, workspace: Workspace | None = None
) -> DatasetVersion:
    """Store ``data`` (a profile or quality report, JSON) with ``version``; the updated version."""
    ws = _workspace(workspace)
    found = _version(ws, version)
    stored = ws.artifacts.put_bytes(data)
    return ws.metadata.datasets.set_digest(found.id, kind, stored.digest, by=ws.user)


def attachment(
    version: VersionRef, kind: AttachmentKind, *, workspace: Workspace | None = None
) -> bytes | None:
    """The profile or quality report stored with ``version``, or None."""
    ws = _workspace(workspace)
    found = _version(ws, version)
    digest = found.profile_digest if kind == "profile" else found.quality_digest
    return None if digest is None else ws.artifacts.get_bytes(digest)


def set_tag(name: str, key: str, value: str = "", *, workspace: Workspace | None = None) -> None:
    """Tag dataset ``name`` (``key`` or ``key=value``), replacing an earlier value of ``key``."""
    ws = _workspace(workspace)
    ws.metadata.datasets.set_tag(
        ws.metadata.datasets.get(ws.project.id, name).id, key, value, by=ws.user
    )


def remove_tag(name: str, key: str, *, workspace: Workspace | None = None) -> bool:
    ws = _workspace(workspace)
    return ws.metadata.datasets.delete_tag(
        ws.metadata.datasets.get(ws.project.id, name).id, key, by=ws.user
    )


# -- reading --------------------------------------------------------------------------------


def get_version(ref: VersionRef, *, workspace: Workspace | None = None) -> DatasetVersion:
    """The version ``ref`` names (see the module doc)."""
    return _version(_workspace(workspace), ref)


def _version(ws: Workspace, ref: VersionRef) -> DatasetVersion:
    if isinstance(ref, DatasetVersion):
        return ref
    repo = ws.metadata.datasets
    name, at, number = ref.partition("@")
    if at:
        return repo.version(ws.project.id, name, _number(ref, number))
    if ref.startswith("dsv-"):
        return _by_prefix(ws, ref)
    return repo.version(ws.project.id, ref)


def _number(ref: str, text: str) -> int | None:
    if text in ("", "latest"):
        return None
    if not text.isdigit():
        raise NotFoundError(
            f"Cannot read the version in {ref!r}: use NAME@NUMBER (e.g. churn@2) or NAME@latest."
        )
    return int(text)


def _by_prefix(ws: Workspace, prefix: str) -> DatasetVersion:
    matches = ws.metadata.datasets.match(ws.project.id, prefix, limit=5)
    exact = [m for m in matches if m.id == prefix]
    if exact or len(matches) == 1:
        return (exact or matches)[0]
    if not matches:
        raise NotFoundError(
            f"No dataset version {prefix!r} in this project; `meguri data list` lists datasets"
        )
    shown = ", ".join(m.id for m in matches[:4])
    raise NotFoundError(f"{prefix!r} matches several versions ({shown}, ...); give more of the id")


def read(
    ref: VersionRef, *, verify: bool = True, workspace: Workspace | None = None
) -> pl.LazyFrame:
    """The data of version ``ref`` as a lazy frame (scanned in place from a local artifact
    store, fetched from a remote one); its sha256 is checked first unless ``verify=False``."""
    ws = _workspace(workspace)
    return _open_data(ws, _version(ws, ref).data_digest, verify)


def _open_data(ws: Workspace, digest: str, verify: bool) -> pl.LazyFrame:
    from meguri.store.artifacts._local import LocalArtifactStore

    store = ws.artifacts
    if not isinstance(store, LocalArtifactStore):
        return pl.read_parquet(io.BytesIO(store.get_bytes(digest))).lazy()
    path = Path(store.object_path(digest))
    if not store.exists(digest):
        raise NotFoundError(
            f"The data of this dataset version (sha256:{digest}) is missing from the artifact "
            f"store {store.url}; restore the store from a backup or ingest the source again"
        )
    if verify:
        from meguri.store.artifacts._digest import hash_file

        actual, _ = hash_file(path)
        if actual != digest:
            store.get_bytes(digest)  # an encrypted object read without its key: names the key
            raise ArtifactCorruptedError(
                f"{path} does not match its sha256 {digest}: the stored data was altered. "
                "Restore it from a backup or ingest the source again."
            )
    return pl.scan_parquet(path)


def history(name: str, *, workspace: Workspace | None = None) -> list[DatasetVersion]:
    """Every version of dataset ``name``, oldest first."""
    ws = _workspace(workspace)
    return ws.metadata.datasets.versions(ws.project.id, name)


def list_datasets(*, workspace: Workspace | None = None) -> list[Dataset]:
    """The project's datasets by name, with their tags."""
    ws = _workspace(workspace)
    return ws.metadata.datasets.list(ws.project.id)


def latest_versions(*, workspace: Workspace | None = None) -> dict[str, DatasetVersion]:
    """Each dataset's latest version, by name."""
    ws = _workspace(workspace)
    return ws.metadata.datasets.latest_versions(ws.project.id)


def search(
    text: str | None = None,
    *,
    column: str | None = None,
    tag: str | None = None,
    workspace: Workspace | None = None,
) -> list[DatasetVersion]:
    """The latest version of each dataset matching every filter given: ``text`` in the name or
    description, a column whose name contains ``column``, tag ``key`` or ``key=value``
    (all case-insensitive except tag values)."""
    ws = _workspace(workspace)
    chosen = {d.name: d for d in ws.metadata.datasets.list(ws.project.id)}
    if text:
        needle = text.lower()
        chosen = {n: d for n, d in chosen.items() if needle in f"{n} {d.description or ''}".lower()}
    if tag:
        key, has_value, value = tag.partition("=")
        chosen = {
            n: d
            for n, d in chosen.items()
            if key in d.tags and (not has_value or d.tags[key] == value)
        }
    latest = ws.metadata.datasets.latest_versions(ws.project.id)
    found = [latest[n] for n in chosen if n in latest]
    if column:
        wanted = column.lower()
        found = [v for v in found if any(wanted in c.lower() for c in v.schema)]
    return found


@dataclass(frozen=True)
class SchemaDiff:
    """Columns added, removed and whose type changed from version ``old`` to ``new``."""

    old: str
    new: str
    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def summary(self) -> str:
        """One line such as ``+2 columns, -1, 1 type changed``; ``same schema`` when none."""
        parts = [f"+{len(self.added)} added"] if self.added else []
        parts += [f"-{len(self.removed)} removed"] if self.removed else []
        parts += [f"{len(self.changed)} type changed"] if self.changed else []
        return ", ".join(parts) or "same schema"


def diff_schemas(
    old: Mapping[str, str], new: Mapping[str, str], labels: tuple[str, str]
) -> SchemaDiff:
    return SchemaDiff(
        old=labels[0],
        new=labels[1],
        added={c: t for c, t in new.items() if c not in old},
        removed={c: t for c, t in old.items() if c not in new},
        changed={c: (old[c], t) for c, t in new.items() if c in old and old[c] != t},
    )


def schema_diff(a: VersionRef, b: VersionRef, *, workspace: Workspace | None = None) -> SchemaDiff:
    """How the schema of version ``b`` differs from that of ``a``."""
    ws = _workspace(workspace)
    old, new = _version(ws, a), _version(ws, b)
    return diff_schemas(old.schema, new.schema, (old.ref, new.ref))


@dataclass(frozen=True)
class Lineage:
    """A version and every version it derives from: ``nodes`` by id, ``edges`` as
    ``(parent_id, child_id)`` pairs."""

    root: DatasetVersion
    nodes: dict[str, DatasetVersion]
    edges: list[tuple[str, str]]

    def parents(self, version_id: str) -> list[DatasetVersion]:
        return [self.nodes[p] for p in self.nodes[version_id].parents if p in self.nodes]


def lineage(ref: VersionRef, *, workspace: Workspace | None = None) -> Lineage:
    """The ancestors graph of version ``ref`` (itself included)."""
    ws = _workspace(workspace)
    root = _version(ws, ref)
    nodes = ws.metadata.datasets.ancestors(root.id)
    edges = [(p, v.id) for v in nodes.values() for p in v.parents]
    return Lineage(root=nodes[root.id], nodes=nodes, edges=sorted(edges))
