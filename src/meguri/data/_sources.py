"""Reading a source into a Polars frame: files (CSV, Parquet, JSON lines, JSON, Excel), any
SQLAlchemy database (a table or a query), any fsspec URL (``s3://``, ``memory://``...) and the
datasets shipped with meguri (``bundled://NAME``).

========  ==========================================  =========================================
format    inferred from                               read with
========  ==========================================  =========================================
csv       ``.csv``, ``.tsv`` (tab), ``.txt``          ``pl.scan_csv`` (lazy)
parquet   ``.parquet``, ``.pq``                       ``pl.scan_parquet`` (lazy)
jsonl     ``.jsonl``, ``.ndjson``                     ``pl.scan_ndjson`` (lazy)
json      ``.json``                                   ``pl.read_json``
excel     ``.xlsx``, ``.xlsm``, ``.xlsb``, ``.xls``,  ``pl.read_excel`` (calamine, fastexcel);
          ``.ods``                                    option ``sheet`` picks a sheet
sql       a SQLAlchemy URL (``sqlite:///x.db``,       ``pl.read_database`` over a SQLAlchemy
          ``postgresql://...``)                       connection; option ``table`` or ``query``
bundled   ``bundled://NAME``                          ``pl.scan_parquet`` of the shipped file
========  ==========================================  =========================================

A local file is scanned lazily where the format allows; a remote one (any other fsspec URL)
is fetched once into memory, then scanned. Read options other than ``table``, ``query``,
``sheet``, ``max_bytes`` and ``storage_options`` (for fsspec) go to the Polars reader, e.g.
``separator``, ``null_values``, ``infer_schema_length``.

Before reading, a file larger than the memory budget is refused (see
``_source_checks.memory_budget``: the source option ``max_bytes``, ``MEGURI_DATA_MAX_BYTES``, or
half the available memory); the size on disk is the measure, a lower bound of the memory a
read takes. After reading, a table without rows, a CSV that reads as one column because of the
wrong separator, and values of mixed types in a column (a CSV value that does not parse as the
type its first rows gave, a JSON-lines column mixing numbers, text or objects, see
``_source_errors``) are each a :class:`DataError` naming the file, column and row.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl

from meguri.data import _source_checks as checks
from meguri.data import _source_errors as mixed
from meguri.errors import DataError, MeguriError

__all__ = ["FORMATS", "Source", "infer_format", "load", "resolve", "scan"]

FORMATS = ("csv", "parquet", "jsonl", "json", "excel", "sql", "bundled")
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".xlsx": "excel",
    ".xlsm": "excel",
    ".xlsb": "excel",
    ".xls": "excel",
    ".ods": "excel",
}
_COMPRESSED = (".gz", ".zst", ".zstd")
_META_OPTIONS = frozenset({"table", "query", "sheet", "max_bytes", "storage_options"})
_RECORDED_OPTIONS = _META_OPTIONS - {"storage_options"}  # credentials are never stored
_BUNDLED = "bundled://"


@dataclass(frozen=True)
class Source:
    """A source resolved: where, in which format, with which read options."""

    uri: str
    format: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def reader_options(self) -> dict[str, Any]:
        """The options passed through to the Polars reader."""
        extra = {k: v for k, v in self.options.items() if k not in _META_OPTIONS}
        if self.format == "csv" and self.uri.lower().endswith(".tsv"):
            extra.setdefault("separator", "\t")
        return extra

    @property
    def recorded_options(self) -> dict[str, Any]:
        """The options stored with a dataset version (never ``storage_options``)."""
        return {
            k: v
            for k, v in self.options.items()
            if k in _RECORDED_OPTIONS or k not in _META_OPTIONS
        }

    @property
    def shown_uri(self) -> str:
        """The URI with any database password hidden, as recorded and printed."""
        if self.format != "sql":
            return self.uri
        import sqlalchemy as sa

        return sa.make_url(self.uri).render_as_string(hide_password=True)


def _scheme(uri: str) -> str:
    scheme, sep, _ = uri.partition("://")
    return scheme.lower() if sep else ""


def _is_database_url(uri: str) -> bool:
    scheme = _scheme(uri)
    if not scheme or scheme in ("file", "s3", "s3a", "gs", "gcs", "az", "abfs", "memory"):
        return False
    import sqlalchemy as sa

    try:
        sa.make_url(uri).get_dialect()
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError):
        return False
    return True


def _suffix_format(uri: str) -> str | None:
    path = PurePosixPath(uri.split("?", 1)[0])
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes.pop()
    return _SUFFIXES.get(suffixes[-1]) if suffixes else None


def infer_format(uri: str) -> str:
    """The format of ``uri`` from its scheme or suffix; DataError when neither tells."""
    if uri.startswith(_BUNDLED):
        return "bundled"
    found = _suffix_format(uri)
    if found is not None:
        return found
    if _is_database_url(uri):
        return "sql"
    raise DataError(
        f"Cannot tell the format of {uri!r} from its name. Give it: format one of "
        f"{', '.join(FORMATS[:-1])} (`--format` on the command line)."
    )


def resolve(
    uri: str, *, format: str | None = None, options: Mapping[str, Any] | None = None
) -> Source:
    """The :class:`Source` for ``uri``: format checked or inferred, options copied."""
    if not uri or not uri.strip():
        raise DataError("The source URI is empty: give a path, a URL or bundled://NAME.")
    chosen = format.lower() if format else infer_format(uri)
    if chosen not in FORMATS:
        raise DataError(
            f"Unknown format {format!r} for {uri}: use one of {', '.join(FORMATS[:-1])}."
        )
    return Source(uri=uri, format=chosen, options=dict(options or {}))


# -- opening --------------------------------------------------------------------------------


def _local_path(uri: str) -> Path | None:
    scheme = _scheme(uri)
    if scheme == "file":
        return Path(uri.split("://", 1)[1])
    return Path(uri).expanduser() if not scheme else None


def _storage_options(source: Source) -> dict[str, Any]:
    options = dict(source.options.get("storage_options") or {})
    if _scheme(source.uri) in ("s3", "s3a") and "endpoint_url" not in options:
        from meguri.store.artifacts._s3 import resolve_endpoint

        endpoint = resolve_endpoint(options, os.environ)
        if endpoint:
            options["endpoint_url"] = endpoint
    return options


def _size_and_target(source: Source) -> tuple[int | None, Path | io.BytesIO | None]:
    """The size on disk and what to hand the reader: a path, or the fetched bytes of a remote
    file (after the budget check). ``(None, None)`` for databases and bundled datasets."""
    if source.format in ("sql", "bundled"):
        return None, None
    local = _local_path(source.uri)
    budget = checks.memory_budget(source.options.get("max_bytes"))
    if local is not None:
        size = _local_size(local, source.uri)
        checks.check_budget(size, budget, source.uri)
        return size, local
    return _fetch(source, budget)


def _local_size(path: Path, uri: str) -> int:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DataError(
            f"Cannot read {uri}: no such file (looked in {path.resolve()}). Check the path; "
            f"a relative path is taken from the current folder {Path.cwd()}."
        ) from None
    except OSError as exc:
        raise DataError(f"Cannot read {uri}: {exc.strerror or exc}.") from None
    if path.is_dir():
        raise DataError(f"Cannot read {uri}: it is a folder; name a file inside it.")
    if not os.access(path, os.R_OK):
        raise DataError(f"Cannot read {uri}: permission denied. Give this user read access.")
    return info.st_size


def _fetch(source: Source, budget: int) -> tuple[int, io.BytesIO]:
    import fsspec.core

    try:
        fs, path = fsspec.core.url_to_fs(source.uri, **_storage_options(source))
        size = int(fs.size(path))
        checks.check_budget(size, budget, source.uri)
        with fs.open(path, "rb") as handle:
            return size, io.BytesIO(handle.read())
    except MeguriError:
        raise
    except FileNotFoundError:
        raise DataError(f"Cannot read {source.uri}: no such object. Check the URL.") from None
    except ImportError as exc:
        raise DataError(f"Reading {source.uri} needs a package that is missing: {exc}.") from None
    except Exception as exc:  # fsspec backends raise their own types (botocore, aiohttp...)
        raise DataError(
            f"Cannot read {source.uri}: {checks.one_line(exc)}. Check the URL, the credentials "
            "and, for S3, the endpoint (MEGURI_S3_ENDPOINT_URL or storage_options)."
        ) from None


# -- readers --------------------------------------------------------------------------------

Target = Path | io.BytesIO
_Reader = Callable[[Source, Target | None, dict[str, Any]], pl.LazyFrame]


def _csv(source: Source, target: Target | None, opts: dict[str, Any]) -> pl.LazyFrame:
    assert target is not None
    if isinstance(target, Path) and target.suffix.lower() in _COMPRESSED:
        return pl.read_csv(target, **opts).lazy()
    return pl.scan_csv(target, **opts)


def _parquet(source: Source, target: Target | None, opts: dict[str, Any]) -> pl.LazyFrame:
    assert target is not None
    return pl.scan_parquet(target, **opts)


def _jsonl(source: Source, target: Target | None, opts: dict[str, Any]) -> pl.LazyFrame:
    assert target is not None
    return pl.scan_ndjson(target, **opts)


def _json(source: Source, target: Target | None, opts: dict[str, Any]) -> pl.LazyFrame:
    assert target is not None
    return pl.read_json(target, **opts).lazy()


def _excel(source: Source, target: Target | None, opts: dict[str, Any]) -> pl.LazyFrame:
    assert target is not None
    sheet = source.options.get("sheet")
    if isinstance(sheet, int):
        opts = {**opts, "sheet_id": sheet}
    elif sheet is not None:
        opts = {**opts, "sheet_name": str(sheet)}
    frame = pl.read_excel(target, engine="calamine", **opts)
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy()


def _bundled(source: Source, target: Target | None, opts: dict[str, Any]) -> pl.LazyFrame:
    from meguri import datasets

    return pl.scan_parquet(datasets.path(source.uri[len(_BUNDLED) :]), **opts)


def _sql(source: Source, target: Target | None, opts: dict[str, Any]) -> pl.LazyFrame:
    import sqlalchemy as sa

    query = _sql_query(source)
    engine = sa.create_engine(source.uri, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            frame = pl.read_database(query, conn, **opts)
    except sa.exc.SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise DataError(
            f"Cannot read {source.shown_uri} ({_describe_sql(source)}): {reason}. Check the "
            "table name or query and that the database is reachable."
        ) from None
    finally:
        engine.dispose()
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy()


def _sql_query(source: Source) -> Any:
    import sqlalchemy as sa

    table, query = source.options.get("table"), source.options.get("query")
    if (table is None) == (query is None):
        raise DataError(
            f"The database source {source.shown_uri} needs exactly one of the read options "
            "table (a table name) or query (a SELECT statement)."
        )
    if query is not None:
        return sa.text(str(query))
    schema, _, name = str(table).rpartition(".")
    return sa.select(sa.text("*")).select_from(sa.table(name, schema=schema or None))


def _describe_sql(source: Source) -> str:
    if "table" in source.options:
        return f"table {source.options['table']!r}"
    return f"query {str(source.options.get('query'))[:80]!r}"


_READERS: dict[str, _Reader] = {
    "csv": _csv,
    "parquet": _parquet,
    "jsonl": _jsonl,
    "json": _json,
    "excel": _excel,
    "bundled": _bundled,
    "sql": _sql,
}


def scan(
    source: Source, *, schema_overrides: Mapping[str, pl.DataType] | None = None
) -> pl.LazyFrame:
    """A lazy frame over ``source`` (remote files are fetched first; no budget or content
    checks beyond that: :func:`load` makes them)."""
    _, target = _size_and_target(source)
    return _scan_target(source, target, schema_overrides)


def _scan_target(
    source: Source, target: Target | None, overrides: Mapping[str, pl.DataType] | None
) -> pl.LazyFrame:
    opts = source.reader_options
    if overrides and source.format in ("csv", "jsonl"):
        read_as = overrides if source.format == "csv" else _jsonl_read_types(overrides)
        opts["schema_overrides"] = {**opts.get("schema_overrides", {}), **read_as}
    if isinstance(target, io.BytesIO):
        target.seek(0)
    with _translated(source, target):
        frame = _READERS[source.format](source, target, opts)
    return frame


def _jsonl_read_types(overrides: Mapping[str, pl.DataType]) -> dict[str, pl.DataType]:
    """The types a JSON-lines column is read as: a numeric override reads as text first (the
    strict cast in ``load`` then names any value that is not a number), others as declared."""
    return {c: pl.String() if t.is_numeric() else t for c, t in overrides.items()}


# -- loading with checks --------------------------------------------------------------------


def load(source: Source, *, schema: Mapping[str, str] | None = None) -> pl.DataFrame:
    """``source`` read whole into memory and checked: the budget before reading, then type
    overrides (``schema``: column -> type name), mixed types, the separator, no rows."""
    overrides = {name: checks.parse_dtype(t, column=name) for name, t in (schema or {}).items()}
    _, target = _size_and_target(source)
    if overrides and source.format == "csv":
        names = _scan_target(source, target, None).collect_schema().names()
        missing = [n for n in overrides if n not in names]
        if missing:
            raise checks.missing_column_error(missing[0], names, source.uri)
    lazy = _scan_target(source, target, overrides)
    with _translated(source, target):
        frame = lazy.collect()
    _check_separator(source, target, frame)
    _check_json_types(source, target, frame, skip=list(overrides))
    frame = checks.apply_overrides(frame, overrides, source.uri)
    checks.check_not_empty(frame, source.uri)
    return frame


def _check_json_types(
    source: Source, target: Target | None, frame: pl.DataFrame, skip: list[str]
) -> None:
    """A JSON-lines column read as text although it holds numbers, booleans or objects too
    (Polars casts them silently) is a DataError naming the column and line."""
    if source.format != "jsonl" or target is None:
        return
    suspects = mixed.might_be_cast(frame, skip)
    lines = mixed.read_lines(target) if suspects else None
    conflict = mixed.find_conflict(lines, suspects) if lines is not None else None
    if conflict is not None:
        raise mixed.mixed_json_error(source.shown_uri, conflict)


def _diagnose_jsonl(source: Source, target: Target | None) -> DataError | None:
    """The mixed-types error behind a failed JSON-lines read, when that is the cause."""
    if target is None:
        return None
    try:
        columns = _scan_target(source, target, None).collect_schema().names()
    except Exception:  # the read error itself stands
        return None
    lines = mixed.read_lines(target)
    conflict = mixed.find_conflict(lines, columns) if lines is not None else None
    return None if conflict is None else mixed.mixed_json_error(source.shown_uri, conflict)


def _header_line(target: Target | None) -> str:
    if isinstance(target, io.BytesIO):
        target.seek(0)
        return target.readline(65536).decode("utf-8", "replace").rstrip("\r\n")
    if isinstance(target, Path) and target.suffix.lower() not in _COMPRESSED:
        with open(target, "rb") as handle:
            return handle.readline(65536).decode("utf-8", "replace").rstrip("\r\n")
    return ""


def _check_separator(source: Source, target: Target | None, frame: pl.DataFrame | None) -> None:
    if source.format != "csv" or (frame is not None and frame.width != 1):
        return
    used = str(source.reader_options.get("separator", ","))
    header = _header_line(target)
    found = checks.sniff_separator(header, used)
    if found is not None:
        raise checks.separator_error(source.uri, header, used, found)


@contextmanager
def _translated(source: Source, target: Target | None) -> Iterator[None]:
    """Translate reader errors (Polars, OS) into one-line DataErrors naming the source."""
    try:
        yield
    except MeguriError:
        raise
    except Exception as exc:
        raise _diagnose(source, target, exc) from exc


def _diagnose(source: Source, target: Target | None, exc: Exception) -> DataError:
    uri = source.shown_uri
    if isinstance(exc, TypeError) and "unexpected keyword argument" in str(exc):
        name = str(exc).rsplit(" ", 1)[-1].strip("'")
        return DataError(
            f"Unknown read option {name!r} for {source.format} source {uri} (options: "
            f"{checks.describe_options(source.options)}). Remove it or fix its name."
        )
    if isinstance(exc, pl.exceptions.NoDataError):
        return DataError(f"{uri} is empty: it holds no data. Check the file.")
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return DataError(f"Cannot read {uri}: {exc.strerror or checks.one_line(exc)}.")
    if source.format == "csv" and isinstance(exc, pl.exceptions.PolarsError):
        return _diagnose_csv(source, target, exc)
    if source.format == "jsonl" and isinstance(exc, pl.exceptions.PolarsError):
        found = _diagnose_jsonl(source, target)
        if found is not None:
            return found
    return DataError(
        f"Cannot read {uri} as {source.format}: {checks.one_line(exc)}. Check that the file "
        "is in that format (set format to override the guess from its name) and the read options."
    )


def _diagnose_csv(source: Source, target: Target | None, exc: Exception) -> DataError:
    failure = checks.parse_failure(str(exc))
    if failure is not None:
        column, dtype = failure
        text = _scan_target(source, target, None).pipe(_as_text, source, target)
        bad = checks.first_bad_value(text, column, dtype)
        return checks.mixed_types_error(source.uri, column, dtype, bad)
    try:
        _check_separator(source, target, None)
    except DataError as found:
        return found
    return DataError(
        f"Cannot read {source.uri} as CSV: {checks.one_line(exc)}. Check the separator, quoting "
        f"and read options ({checks.describe_options(source.options)})."
    )


def _as_text(_: pl.LazyFrame, source: Source, target: Target | None) -> pl.LazyFrame:
    """The CSV re-scanned with every column as text, to find a value that does not parse."""
    opts = {**source.reader_options, "infer_schema": False}
    if isinstance(target, io.BytesIO):
        target.seek(0)
    assert target is not None
    return pl.scan_csv(target, **opts)
