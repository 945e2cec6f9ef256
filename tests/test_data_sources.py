"""Readers on real files written here, their values checked against pandas/pyarrow reading the
same file; and each kind of bad input, a one-line DataError naming the file, column or row."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from meguri.data._source_checks import memory_budget, parse_size
from meguri.data._sources import infer_format, load, resolve
from meguri.datasets import path as bundled_path
from meguri.errors import DataError


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 250
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "amount": rng.normal(100.0, 15.0, n).round(4),
            "city": rng.choice(["Tokyo", "Osaka", "Kyōto", "Sapporo"], n),
            "active": rng.random(n) > 0.3,
            "score": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)),
        }
    )


def _check_same(frame: pl.DataFrame, expected: pd.DataFrame) -> None:
    assert frame.columns == list(expected.columns)
    assert frame.height == len(expected)
    got = frame.to_pandas()
    for column in expected.columns:
        if expected[column].dtype.kind == "f":
            np.testing.assert_allclose(got[column], expected[column], rtol=0, atol=0)
        else:
            assert got[column].tolist() == expected[column].tolist(), column


def test_csv_matches_pandas(tmp_path: Path, table: pd.DataFrame) -> None:
    file = tmp_path / "t.csv"
    table.to_csv(file, index=False)
    frame = load(resolve(str(file)))
    _check_same(frame, pd.read_csv(file))
    assert frame.schema["id"] == pl.Int64 and frame.schema["active"] == pl.Boolean


def test_tsv_and_separator_option(tmp_path: Path, table: pd.DataFrame) -> None:
    tsv, semi = tmp_path / "t.tsv", tmp_path / "semi.csv"
    table.to_csv(tsv, index=False, sep="\t")
    table.to_csv(semi, index=False, sep=";")
    _check_same(load(resolve(str(tsv))), pd.read_csv(tsv, sep="\t"))
    _check_same(load(resolve(str(semi), options={"separator": ";"})), table)


def test_parquet_matches_pyarrow(tmp_path: Path, table: pd.DataFrame) -> None:
    file = tmp_path / "t.parquet"
    table.to_parquet(file, index=False)
    _check_same(load(resolve(str(file))), pq.read_table(file).to_pandas())


def test_jsonl_and_json_match_pandas(tmp_path: Path, table: pd.DataFrame) -> None:
    lines, whole = tmp_path / "t.jsonl", tmp_path / "t.json"
    table.to_json(lines, orient="records", lines=True, force_ascii=False)
    pl.from_pandas(table).write_json(whole)
    _check_same(load(resolve(str(lines))), pd.read_json(lines, lines=True, precise_float=True))
    _check_same(load(resolve(str(whole))), table)


def test_excel_sheet_matches_pandas(tmp_path: Path, table: pd.DataFrame) -> None:
    file = tmp_path / "t.xlsx"
    with pd.ExcelWriter(file, engine="openpyxl") as writer:
        table.head(3).to_excel(writer, sheet_name="other", index=False)
        table.to_excel(writer, sheet_name="data", index=False)
    frame = load(resolve(str(file), options={"sheet": "data"}))
    expected = pd.read_excel(file, sheet_name="data", engine="openpyxl")
    assert frame.columns == list(expected.columns)
    np.testing.assert_allclose(frame["amount"].to_numpy(), expected["amount"].to_numpy())
    assert frame["city"].to_list() == expected["city"].tolist()
    assert load(resolve(str(file))).height == 3  # the first sheet by default


@pytest.fixture
def sqlite_db(tmp_path: Path, table: pd.DataFrame) -> Path:
    file = tmp_path / "shop.db"
    with sqlite3.connect(file) as conn:
        table.to_sql("orders", conn, index=False)
    return file


def test_sqlite_table_and_query(sqlite_db: Path, table: pd.DataFrame) -> None:
    url = f"sqlite:///{sqlite_db}"
    assert infer_format(url) == "sql"
    whole = load(resolve(url, options={"table": "orders"}))
    assert whole["id"].to_list() == table["id"].tolist()
    np.testing.assert_allclose(whole["amount"].to_numpy(), table["amount"].to_numpy())
    query = "SELECT city, SUM(amount) AS total FROM orders GROUP BY city ORDER BY city"
    grouped = load(resolve(url, options={"query": query}))
    expected = table.groupby("city")["amount"].sum().sort_index()
    assert grouped["city"].to_list() == list(expected.index)
    np.testing.assert_allclose(grouped["total"].to_numpy(), expected.to_numpy(), rtol=1e-12)


def test_sql_needs_one_of_table_or_query(sqlite_db: Path) -> None:
    url = f"sqlite:///{sqlite_db}"
    with pytest.raises(DataError, match="exactly one of the read options table"):
        load(resolve(url))
    with pytest.raises(DataError, match="table 'nope'"):
        load(resolve(url, options={"table": "nope"}))


def test_bundled_matches_the_shipped_file() -> None:
    frame = load(resolve("bundled://breast_cancer"))
    expected = pq.read_table(bundled_path("breast_cancer")).to_pandas()
    _check_same(frame, expected)
    assert frame.shape == (569, 31)
    assert int(frame["malignant"].sum()) == 212


@pytest.mark.s3
def test_s3_csv_through_fsspec(s3_server: str, table: pd.DataFrame) -> None:
    import s3fs

    bucket = f"data-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(endpoint_url=s3_server, use_listings_cache=False)
    fs.call_s3("create_bucket", Bucket=bucket)
    with fs.open(f"{bucket}/in/t.csv", "wb") as handle:
        handle.write(table.to_csv(index=False).encode())
    frame = load(resolve(f"s3://{bucket}/in/t.csv"))
    _check_same(frame, table)
    with pytest.raises(DataError, match="no such object"):
        load(resolve(f"s3://{bucket}/in/missing.csv"))


def test_schema_override_casts_and_names_bad_rows(tmp_path: Path) -> None:
    file = tmp_path / "o.csv"
    file.write_text("code,when,n\n007,2024-01-02,1\n042,2024-02-03,2\n")
    frame = load(resolve(str(file)), schema={"code": "str", "when": "date", "n": "float"})
    assert frame["code"].to_list() == ["007", "042"]  # kept as text: leading zeros survive
    assert frame["when"].to_list() == [dt.date(2024, 1, 2), dt.date(2024, 2, 3)]
    assert frame.schema["n"] == pl.Float64
    lines = tmp_path / "o.jsonl"
    lines.write_text('{"a": "1"}\n{"a": "2"}\n{"a": "x"}\n')
    with pytest.raises(DataError, match=r"Column 'a' .* Int64 at row 3 \(value 'x'\)"):
        load(resolve(str(lines)), schema={"a": "int"})


def test_override_of_a_missing_column_or_unknown_type(tmp_path: Path) -> None:
    file = tmp_path / "o.csv"
    file.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"names column 'c'.*its columns are a, b"):
        load(resolve(str(file)), schema={"c": "int"})
    with pytest.raises(DataError, match="Unknown type 'decimalish' for column 'a'"):
        load(resolve(str(file)), schema={"a": "decimalish"})


def test_wrong_delimiter_is_detected(tmp_path: Path) -> None:
    file = tmp_path / "semi.csv"
    file.write_text("a;b;c\n1;2;3\n4;5;6\n")
    with pytest.raises(DataError, match=r"looks separated by ';'.*separator") as info:
        load(resolve(str(file)))
    assert "\n" not in str(info.value)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a;b;c\n1,5;2;3\n")  # decimal commas: more fields than the header
    with pytest.raises(DataError, match="looks separated by ';'"):
        load(resolve(str(ragged)))


def test_mixed_types_name_the_column_row_and_value(tmp_path: Path) -> None:
    file = tmp_path / "mixed.csv"
    rows = "".join(f"{i},{i * 2}\n" for i in range(300))
    file.write_text("x,y\n" + rows + "n/a,1\n")
    with pytest.raises(DataError, match=r"Column 'x' .* mixes types.*row 301 holds 'n/a'"):
        load(resolve(str(file)))
    fixed = load(resolve(str(file)), schema={"x": "str"})
    assert fixed.height == 301 and fixed["x"][-1] == "n/a"


def test_empty_inputs(tmp_path: Path) -> None:
    empty, header = tmp_path / "empty.csv", tmp_path / "header.csv"
    empty.write_text("")
    header.write_text("a,b\n")
    with pytest.raises(DataError, match="empty"):
        load(resolve(str(empty)))
    with pytest.raises(DataError, match=r"columns \(a, b\) but no rows"):
        load(resolve(str(header)))


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load(resolve(str(tmp_path / "absent.csv")))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"Cannot read .*bad\.parquet as parquet"):
        load(resolve(str(bad)))
    with pytest.raises(DataError, match="it is a folder"):
        load(resolve(str(tmp_path), format="csv"))
    with pytest.raises(DataError, match="Cannot tell the format"):
        resolve(str(tmp_path / "data.bin"))
    with pytest.raises(DataError, match="Unknown format 'xml'"):
        resolve("a.csv", format="xml")
    good = tmp_path / "good.csv"
    good.write_text("a\n1\n")
    with pytest.raises(DataError, match="Unknown read option 'sepparator'"):
        load(resolve(str(good), options={"sepparator": ";"}))


def test_memory_budget_refuses_large_files_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "big.csv"
    file.write_text("a\n" + "1\n" * 5000)
    with pytest.raises(DataError, match=r"over the memory budget of 1\.0 KiB.*max_bytes"):
        load(resolve(str(file), options={"max_bytes": "1KiB"}))
    monkeypatch.setenv("MEGURI_DATA_MAX_BYTES", "2KB")
    with pytest.raises(DataError, match="MEGURI_DATA_MAX_BYTES"):
        load(resolve(str(file)))
    assert load(resolve(str(file), options={"max_bytes": 10**6})).height == 5000
    assert parse_size("2 GiB", setting="x") == 2 * 2**30
    with pytest.raises(DataError, match="not a size"):
        parse_size("lots", setting="max_bytes")
    monkeypatch.delenv("MEGURI_DATA_MAX_BYTES")
    assert memory_budget() > 0


def test_format_inference() -> None:
    assert infer_format("s3://b/k/data.PARQUET") == "parquet"
    assert infer_format("x/data.csv.gz") == "csv"
    assert infer_format("events.ndjson") == "jsonl"
    assert infer_format("book.xlsx") == "excel"
    assert infer_format("bundled://breast_cancer") == "bundled"
    assert infer_format("postgresql://u@h/db") == "sql"


# -- mixed types: JSON lines, and CSV past the inference window ------------------------------


def _numbers_then(tmp_path: Path, last: str, rows: int = 300) -> Path:
    file = tmp_path / "mixed.jsonl"
    body = "".join(f'{{"id": {i}, "a": {i * 0.5}, "city": "c{i % 3}"}}\n' for i in range(rows))
    file.write_text(body + f'{{"id": {rows}, "a": {last}, "city": "c0"}}\n')
    return file


@pytest.mark.parametrize(
    ("last", "kind"),
    [('"oops"', "string"), ('{"k": 1}', "object"), ("[1, 2]", "array"), ("true", "boolean")],
)
def test_jsonl_mixed_types_past_inference_name_column_and_line(
    tmp_path: Path, last: str, kind: str
) -> None:
    file = _numbers_then(tmp_path, last)  # Polars infers from the first 100 rows, then fails
    with pytest.raises(DataError) as info:
        load(resolve(str(file)))
    message = str(info.value)
    assert f"Column 'a' of {file} mixes JSON types: line 1 holds a number, line 301 a {kind}" in (
        message
    )
    assert "schema (a: str" in message and "\n" not in message
    assert info.value.__cause__ is not None  # the Polars error is kept as the cause only


def test_jsonl_silent_cast_to_text_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "silent.jsonl"
    # within the inference window Polars would read all of these as text ("1", "2.5", ...)
    file.write_text('{"a": "x", "b": 1}\n\n{"a": "y", "b": "two"}\n{"a": "z", "b": 3}\n')
    with pytest.raises(DataError, match=r"Column 'b' .*line 1 holds a number, line 3 a string"):
        load(resolve(str(file)))
    objects = tmp_path / "objects.jsonl"
    objects.write_text('{"a": "s"}\n{"a": {"k": 1}}\n')
    with pytest.raises(DataError, match=r"Column 'a' .*line 1 holds a string, line 2 a object"):
        load(resolve(str(objects)))


def test_jsonl_schema_override_is_the_fix(tmp_path: Path) -> None:
    file = _numbers_then(tmp_path, '"n/a"')
    as_text = load(resolve(str(file)), schema={"a": "str"})
    assert as_text.height == 301 and as_text["a"][-1] == "n/a" and as_text["a"][1] == "0.5"
    with pytest.raises(DataError, match=r"Column 'a' .* Float64 at row 301 \(value 'n/a'\)"):
        load(resolve(str(file)), schema={"a": "float"})
    clean = _numbers_then(tmp_path, '"7.25"')
    numbers = load(resolve(str(clean)), schema={"a": "float"})
    assert numbers.schema["a"] == pl.Float64 and numbers["a"][-1] == 7.25


def test_jsonl_one_kind_per_column_reads_unchanged(tmp_path: Path) -> None:
    file = tmp_path / "fine.jsonl"
    # ints then a float read as Float64 (no value lost); digits in text stay text
    file.write_text('{"n": 1, "code": "007"}\n{"n": 2.5, "code": "042"}\n{"n": null}\n')
    frame = load(resolve(str(file)))
    assert frame.schema["n"] == pl.Float64 and frame["n"].to_list() == [1.0, 2.5, None]
    assert frame["code"].to_list() == ["007", "042", None]


def test_csv_past_a_short_inference_window_names_column_and_row(tmp_path: Path) -> None:
    file = tmp_path / "late.csv"
    rows = "".join(f"{i},{i}.5,t{i}\n" for i in range(50))
    file.write_text("n,x,s\n" + rows + "51,oops,t\n")
    options = {"infer_schema_length": 10}
    with pytest.raises(
        DataError, match=r"Column 'x' .* mixes types: .*Float64; row 51 holds 'oops'"
    ):
        load(resolve(str(file), options=options))
    ints = tmp_path / "ints.csv"
    ints.write_text("n\n" + "".join(f"{i}\n" for i in range(20)) + "2.5\n")
    with pytest.raises(DataError, match=r"Column 'n' .* mixes types: .*Int64; row 21 holds '2.5'"):
        load(resolve(str(ints), options=options))
    assert load(resolve(str(ints)), schema={"n": "float"})["n"][-1] == 2.5


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_failed_ingest_writes_no_dataset_version(tmp_path: Path, suffix: str) -> None:
    from meguri.data import _catalog as catalog
    from meguri.store import open_workspace

    if suffix == "jsonl":
        file = _numbers_then(tmp_path, '"oops"')
    else:
        file = tmp_path / "mixed.csv"
        file.write_text("a\n" + "".join(f"{i}\n" for i in range(300)) + "oops\n")
    ws = open_workspace(tmp_path / "proj", user="ana")
    try:
        with pytest.raises(DataError, match="Column 'a'"):
            catalog.ingest(str(file), name="mixed", workspace=ws)
        assert catalog.list_datasets(workspace=ws) == []
        assert not [
            p for p in (tmp_path / "proj").rglob("*") if p.is_file() and "sha256" in p.parts
        ]
    finally:
        ws.close()
