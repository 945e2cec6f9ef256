"""The content hash of a dataset version, and the Parquet bytes it is stored as.

**What the hash covers.** The schema (column names, order and Polars types), the row count,
and the rows in order: each row hashed by Polars ``DataFrame.hash_rows`` under two fixed seeds
(128 bits per row, vectorised, no Python loop), the two hash columns fed to sha256 after the
schema. So the same table read from a CSV, a Parquet file or a database gets the same hash
whatever the bytes of the file (quoting, compression, row groups), while a changed value, type,
column name, column order or row order gives a new one.

**Limits.** Polars does not promise that ``hash_rows`` stays the same across its versions: after
a Polars upgrade identical data may hash differently and be stored once more as a new version
(never the reverse: different data does not share a hash, short of a 128-bit collision per
row). The scheme is versioned (``_SCHEME``) so that a change of ours does the same. Float
values hash by their bits, so ``0.1 + 0.2`` and ``0.3`` differ, as they should.

**Lazy frames.** A ``LazyFrame`` is never held whole: :func:`parquet_file` streams it to the
file (``sink_parquet``) and :func:`file_content_hash` hashes that file back in batches of
:data:`HASH_BATCH_ROWS` rows. A row's hash does not depend on the batch it is in, so the
digest is the one :func:`content_hash` gives for the same rows in memory.

**No plaintext on disk.** The file :func:`parquet_file` writes is plaintext on its way into the
artifact store. Given a ``folder`` (a local, unencrypted store's scratch folder, so that the
store renames the file into place) it goes there: the store keeps it in clear anyway. Without
one (a store that encrypts at rest, or a remote one) it is an anonymous in-memory file (Linux
``memfd_create``, reached by the path ``/proc/self/fd/N`` that Polars and the store read and
write like any other): it has no name in any filesystem, never reaches a disk (short of swap,
the operating system's setting) and is gone once closed, also when the process dies. It costs
memory the size of the compressed file, less than the table it comes from: tables here are
read whole at ingest (within the memory budget of ``_source_checks``), so a lazy frame saved
from them fits too. ``private=False`` asks for a file on disk instead. That, and a system
without ``memfd_create``, are the cases left with a temporary file on disk: it sits in a
folder of mode 700 (``tempfile.TemporaryDirectory``), removed in ``finally``.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import orjson
import polars as pl

from meguri.data._source_checks import type_name
from meguri.store.artifacts._memory import memory_file, memory_files_available

__all__ = [
    "HASH_BATCH_ROWS",
    "WrittenFile",
    "content_hash",
    "file_content_hash",
    "parquet_file",
    "schema_of",
]

_SCHEME = b"meguri-dataset-hash-v1\x00"
_SEEDS = (0, 0x6D65677572690001)  # any fixed pair; the second spells "meguri" + 1
HASH_BATCH_ROWS = 262_144
"""Rows per batch when hashing a stored file: a few tens of MiB at a time, whatever its size."""


def schema_of(frame: pl.DataFrame | pl.LazyFrame) -> dict[str, str]:
    """Column -> Polars type name, in column order."""
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    return {name: type_name(dtype) for name, dtype in schema.items()}


def content_hash(frame: pl.DataFrame) -> str:
    """The sha256 hex digest identifying ``frame``'s schema and rows (see the module doc)."""
    return _digest(schema_of(frame), frame.height, (frame,))


def file_content_hash(path: Path, schema: dict[str, str] | None = None) -> tuple[str, int]:
    """:func:`content_hash` of the Parquet file at ``path`` and its row count, read back in
    batches (one batch of :data:`HASH_BATCH_ROWS` rows in memory at a time). ``schema``: what
    the file must hold (:func:`schema_of`), checked first: ValueError when it holds other
    types."""
    scan = pl.scan_parquet(path)
    found = schema_of(scan)
    if schema is not None and found != schema:
        raise ValueError(f"the written file's schema {found} differs from the frame's {schema}")
    rows = int(scan.select(pl.len()).collect().item())
    return _digest(found, rows, scan.collect_batches(chunk_size=HASH_BATCH_ROWS)), rows


def _digest(schema: dict[str, str], rows: int, batches: Iterable[pl.DataFrame]) -> str:
    """sha256 of the scheme, the schema, the row count, then the first seed's row hashes in
    row order, then the second's. One pass over ``batches`` (the rows in order): the second
    seed's hashes (8 bytes a row) wait in memory meanwhile."""
    digest = hashlib.sha256(_SCHEME)
    digest.update(orjson.dumps(list(schema.items())))
    digest.update(rows.to_bytes(8, "little"))
    if schema:
        first, second = _SEEDS
        later: list[bytes] = []
        for batch in batches:
            digest.update(batch.hash_rows(seed=first).to_numpy().tobytes())
            later.append(batch.hash_rows(seed=second).to_numpy().tobytes())
        for chunk in later:
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class WrittenFile:
    """A Parquet file :func:`parquet_file` wrote, and the sha256 of its bytes as they were
    written (so the artifact store need not read the file again to name it)."""

    path: Path
    sha256: str


@contextmanager
def parquet_file(
    frame: pl.DataFrame | pl.LazyFrame, folder: Path | None = None, *, private: bool = True
) -> Iterator[WrittenFile]:
    """``frame`` written to a temporary Parquet file (snappy, with statistics), removed after
    (also when writing fails half-way). Snappy writes the benchmark's table (5M rows, 20
    mostly float columns) in 0.62 s where zstd level 1 takes 0.84-1.1 s and level 3 twice
    that, for a file 6% larger than zstd 1's (10% for the prepared parts): numbers with full
    precision hardly compress. A lazy frame is streamed to the file
    (``sink_parquet``, rows in order), never collected whole.

    Where the file is (see the module docstring): in ``folder`` when given; else in memory
    when ``private`` (the default); else in a temporary folder of mode 700."""
    if folder is None and private and memory_files_available():
        with memory_file("dataset") as (path, _):
            yield WrittenFile(path, _write(frame, path))
        return
    with tempfile.TemporaryDirectory(prefix="meguri-dsv-", dir=folder) as scratch:
        path = Path(scratch) / "data.parquet"
        yield WrittenFile(path, _write(frame, path))


def _write(frame: pl.DataFrame | pl.LazyFrame, path: Path) -> str:
    """Write ``frame`` to ``path``; the sha256 of the bytes written, hashed on their way."""
    with _HashingFile(path) as hashing:
        sink = cast("IO[bytes]", hashing)  # a binary file as far as Polars goes
        if isinstance(frame, pl.LazyFrame):
            frame.sink_parquet(sink, compression="snappy", statistics=True, maintain_order=True)
        else:
            frame.write_parquet(sink, compression="snappy", statistics=True)
    return hashing.sha256.hexdigest()


class _HashingFile(io.RawIOBase):
    """A file written front to back that hashes every byte on its way in (no seeking: a writer
    that tried to go back would fail here rather than leave a wrong digest)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = path.open("wb")
        self.sha256 = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.sha256.update(data)
        written: int = self._file.write(data)
        return written

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        super().close()  # flushes first
        self._file.close()
