"""The catalog SDK: ingest, identical data is one version, derived versions with lineage,
references, search, schema diffs, attachments; nothing half-written on failure."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from meguri.data import _catalog as catalog
from meguri.data._catalog_hash import content_hash, parquet_file
from meguri.datasets import path as bundled_path
from meguri.errors import ArtifactCorruptedError, DataError, NotFoundError
from meguri.spec import DataSource
from meguri.store import Workspace, open_workspace


@pytest.fixture
def ws(tmp_path: Path, artifacts_url: str) -> Iterator[Workspace]:
    workspace = open_workspace(tmp_path / "proj", artifacts_url=artifacts_url, user="ana")
    yield workspace
    workspace.close()


@pytest.fixture
def local_ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = open_workspace(tmp_path / "local", user="ana")
    yield workspace
    workspace.close()


def _csv(tmp_path: Path, name: str, frame: pd.DataFrame) -> str:
    file = tmp_path / name
    frame.to_csv(file, index=False)
    return str(file)


def test_ingest_and_read_back_on_each_artifact_backend(ws: Workspace) -> None:
    version = catalog.ingest("bundled://breast_cancer", workspace=ws)
    expected = pq.read_table(bundled_path("breast_cancer")).to_pandas()
    assert (version.ref, version.operation, version.format) == (
        "breast_cancer@1",
        "ingest",
        "bundled",
    )
    assert version.row_count == len(expected) == 569
    assert list(version.schema) == list(expected.columns)
    assert version.schema["malignant"] == "Int8" and version.created_by == "ana"
    back = catalog.read("breast_cancer", workspace=ws).collect().to_pandas()
    pd.testing.assert_frame_equal(back, expected)
    assert ws.artifacts.exists(version.data_digest)


def test_identical_data_is_the_same_version_whatever_the_file(
    local_ws: Workspace, tmp_path: Path
) -> None:
    first = catalog.ingest("bundled://breast_cancer", name="bc", workspace=local_ws)
    csv = tmp_path / "bc.csv"
    pl.read_parquet(bundled_path("breast_cancer")).write_csv(csv)
    again = catalog.ingest(str(csv), name="bc", schema={"malignant": "Int8"}, workspace=local_ws)
    assert again.id == first.id  # same rows and types, other bytes: one version
    widened = catalog.ingest(str(csv), name="bc", workspace=local_ws)  # malignant as Int64
    assert widened.version == 2
    assert catalog.schema_diff("bc@1", "bc@2", workspace=local_ws).changed == {
        "malignant": ("Int8", "Int64")
    }


def test_content_hash_covers_values_order_names_and_types() -> None:
    frame = pl.DataFrame({"a": [1, 2, 3], "b": ["x", None, "z"]})
    base = content_hash(frame)
    assert content_hash(frame.clone()) == base
    assert content_hash(frame.reverse()) != base
    assert content_hash(frame.rename({"b": "c"})) != base
    assert content_hash(frame.with_columns(pl.col("a").cast(pl.Int32))) != base
    assert content_hash(frame.with_columns(pl.lit("y").alias("b"))) != base
    assert content_hash(frame.select("b", "a")) != base
    assert content_hash(frame.head(2)) != base


def test_derived_versions_record_parents_lineage_and_diffs(local_ws: Workspace) -> None:
    raw = catalog.ingest("bundled://breast_cancer", name="raw", workspace=local_ws)
    data = catalog.read(raw, workspace=local_ws)
    medians = data.select(pl.col("mean_radius", "mean_area").median()).collect().row(0, named=True)
    clean = catalog.save_version(
        "clean",
        data.drop("mean_texture").with_columns(pl.col("malignant").cast(pl.Boolean)),
        parents=[raw],
        operation="prepare",
        lineage={"medians": medians},
        workspace=local_ws,
    )
    train = catalog.save_version(
        "train", catalog.read(clean, workspace=local_ws).head(400), parents=["clean@1"],
        operation="split", lineage={"seed": 42, "fraction": 0.7}, workspace=local_ws,
    )  # fmt: skip
    expected = pd.read_parquet(bundled_path("breast_cancer"))[["mean_radius", "mean_area"]]
    assert clean.lineage["medians"] == pytest.approx(expected.median().to_dict())
    assert (clean.parents, train.parents) == ((raw.id,), (clean.id,))
    graph = catalog.lineage("train", workspace=local_ws)
    assert set(graph.nodes) == {raw.id, clean.id, train.id}
    assert graph.edges == sorted([(raw.id, clean.id), (clean.id, train.id)])
    assert [p.ref for p in graph.parents(train.id)] == ["clean@1"]
    diff = catalog.schema_diff(raw, clean, workspace=local_ws)
    assert (diff.removed, diff.added) == ({"mean_texture": "Float64"}, {})
    assert diff.changed == {"malignant": ("Int8", "Boolean")}
    assert diff.summary() == "-1 removed, 1 type changed"
    assert not catalog.schema_diff(clean, train, workspace=local_ws)


def test_references(local_ws: Workspace, tmp_path: Path) -> None:
    v1 = catalog.ingest(_csv(tmp_path, "d.csv", pd.DataFrame({"a": [1, 2]})), workspace=local_ws)
    v2 = catalog.ingest(_csv(tmp_path, "d.csv", pd.DataFrame({"a": [3]})), workspace=local_ws)
    assert (v1.ref, v2.ref) == ("d@1", "d@2")
    get = catalog.get_version
    assert get("d", workspace=local_ws) == v2 == get("d@latest", workspace=local_ws)
    assert get("d@1", workspace=local_ws) == v1
    assert get(v1.id, workspace=local_ws) == v1
    assert get(v1.id[:-2], workspace=local_ws) == v1
    with pytest.raises(NotFoundError, match="several versions"):
        get("dsv-", workspace=local_ws)
    with pytest.raises(NotFoundError, match="NAME@NUMBER"):
        get("d@two", workspace=local_ws)
    with pytest.raises(NotFoundError, match="no version 9"):
        get("d@9", workspace=local_ws)
    assert catalog.read("d@1", workspace=local_ws).collect()["a"].to_list() == [1, 2]
    assert [v.version for v in catalog.history("d", workspace=local_ws)] == [1, 2]


def test_search_by_text_column_and_tag(local_ws: Workspace, tmp_path: Path) -> None:
    frame = pd.DataFrame({"customer_id": [1], "Churned": [0]})
    catalog.ingest(
        _csv(tmp_path, "churn.csv", frame), description="Telco customers", workspace=local_ws
    )
    catalog.ingest("bundled://breast_cancer", workspace=local_ws)
    catalog.set_tag("churn", "owner", "ana", workspace=local_ws)
    catalog.set_tag("breast_cancer", "public", workspace=local_ws)

    def names(**kw: str) -> list[str]:
        return [v.name for v in catalog.search(workspace=local_ws, **kw)]

    assert names(text="TELCO") == ["churn"]
    assert names(column="churned") == ["churn"]
    assert names(column="radius") == ["breast_cancer"]
    assert names(tag="owner=ana") == ["churn"] and names(tag="owner=bob") == []
    assert names(tag="public") == ["breast_cancer"]
    assert names() == ["breast_cancer", "churn"]
    assert catalog.remove_tag("breast_cancer", "public", workspace=local_ws)
    assert [d.tags for d in catalog.list_datasets(workspace=local_ws)] == [{}, {"owner": "ana"}]


def test_attachments_are_stored_with_the_version(local_ws: Workspace) -> None:
    v = catalog.ingest("bundled://breast_cancer", workspace=local_ws)
    assert catalog.attachment(v, "profile", workspace=local_ws) is None
    report = json.dumps({"rows": 569}).encode()
    updated = catalog.attach("breast_cancer@1", "profile", report, workspace=local_ws)
    assert updated.profile_digest is not None and updated.quality_digest is None
    assert catalog.attachment(v.id, "profile", workspace=local_ws) == report


def test_ingest_from_a_spec_source(local_ws: Workspace, tmp_path: Path) -> None:
    file = tmp_path / "codes.txt"
    file.write_text("code|n\n007|1\n010|2\n")
    source = DataSource.model_validate(
        {"name": "codes", "uri": str(file), "format": "csv", "options": {"separator": "|"},
         "schema": {"code": "str"}, "description": "zip codes"}
    )  # fmt: skip
    v = catalog.ingest(source, workspace=local_ws)
    assert (v.name, v.schema) == ("codes", {"code": "String", "n": "Int64"})
    assert v.read_options == {"separator": "|", "schema": {"code": "str"}}
    assert catalog.read(v, workspace=local_ws).collect()["code"].to_list() == ["007", "010"]
    assert catalog.list_datasets(workspace=local_ws)[0].description == "zip codes"


def test_failed_ingest_leaves_nothing(local_ws: Workspace, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a;b\n1;2\n")
    with pytest.raises(DataError, match="separator"):
        catalog.ingest(str(bad), workspace=local_ws)
    with pytest.raises(DataError, match="not a valid name"):
        catalog.ingest("bundled://breast_cancer", name="no spaces", workspace=local_ws)
    assert catalog.list_datasets(workspace=local_ws) == []
    folder = Path(local_ws.artifacts.url)
    assert not [p for p in folder.rglob("*") if p.is_file()]


def test_read_verifies_the_stored_data(local_ws: Workspace) -> None:
    v = catalog.ingest("bundled://breast_cancer", workspace=local_ws)
    path = Path(local_ws.artifacts.object_path(v.data_digest))  # type: ignore[attr-defined]
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ArtifactCorruptedError, match="corrupted"):
        catalog.read(v, workspace=local_ws)
    path.unlink()
    with pytest.raises(NotFoundError, match="missing from the artifact store"):
        catalog.read(v, workspace=local_ws)


_CHILD = textwrap.dedent(
    """
    import sys
    from meguri.data._catalog import ingest
    from meguri.store import open_workspace
    ws = open_workspace(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    print(ingest(sys.argv[2], name="race", workspace=ws).id, flush=True)
    """
)


@pytest.mark.slow
def test_two_processes_ingesting_the_same_data_make_one_version(tmp_path: Path) -> None:
    root = tmp_path / "race"
    open_workspace(root).close()
    rng = np.random.default_rng(0)
    source = _csv(tmp_path, "race.csv", pd.DataFrame(rng.normal(size=(20_000, 5))))
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(root), source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    ids = []
    for child in children:
        out, err = child.communicate("go\n", timeout=120)
        assert child.returncode == 0, err
        ids.append(out.strip())
    assert len(set(ids)) == 1
    ws = open_workspace(root)
    try:
        assert [v.id for v in catalog.history("race", workspace=ws)] == ids[:1]
    finally:
        ws.close()


def _mixed(n: int) -> pl.DataFrame:
    rng = np.random.default_rng(7)
    return pl.DataFrame(
        {
            "x": rng.normal(size=n),
            "k": rng.integers(0, 5, n),
            "s": pl.Series(rng.choice(["a", "b", ""], n)).replace("", None),
            "c": pl.Series(rng.choice(["u", "v"], n)).cast(pl.Categorical),
            "d": pl.Series(rng.integers(0, 1000, n)).cast(pl.Date),
        }
    )


def test_a_lazy_frame_saves_as_the_same_version_as_the_collected_one(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meguri.data import _catalog_hash

    monkeypatch.setattr(_catalog_hash, "HASH_BATCH_ROWS", 64)  # hashed back in many batches
    frame = _mixed(1000)
    lazy = frame.lazy().with_columns(y=pl.col("x") * 2)
    eager = catalog.save_version("eager", lazy.collect(), operation="t", workspace=ws)
    streamed = catalog.save_version("streamed", lazy, operation="t", workspace=ws)
    assert streamed.content_hash == eager.content_hash == content_hash(lazy.collect())
    assert (streamed.schema, streamed.row_count) == (eager.schema, 1000)
    assert catalog.read(streamed, workspace=ws).collect().equals(lazy.collect())
    again = catalog.save_version("eager", lazy, operation="t", workspace=ws)
    assert again.id == eager.id  # identical rows: the version already there
    reordered = catalog.save_version("eager", lazy.reverse(), operation="t", workspace=ws)
    assert reordered.version == 2


def test_a_failed_lazy_save_leaves_nothing(
    local_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = pl.LazyFrame({"a": ["1", "2", "x"]}).select(pl.col("a").cast(pl.Int64))
    with pytest.raises(pl.exceptions.InvalidOperationError):
        catalog.save_version("bad", failing, operation="t", workspace=local_ws)
    folder = Path(local_ws.artifacts.url)
    assert not [p for p in folder.rglob("*") if p.is_file()]

    # a failure once the data is stored: no version, only an unreferenced blob, no scratch
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("metadata store down")

    monkeypatch.setattr(local_ws.metadata.datasets, "add_version", refuse)
    with pytest.raises(RuntimeError, match="down"):
        catalog.save_version("ok", _mixed(10).lazy(), operation="t", workspace=local_ws)
    assert catalog.list_datasets(workspace=local_ws) == []
    assert not [p for p in (folder / ".tmp-scratch").rglob("*") if p.is_file()]
    with pytest.raises(DataError, match="no columns"):
        catalog.save_version("empty", pl.LazyFrame(), operation="t", workspace=local_ws)


@pytest.mark.parametrize("lazy", [False, True])
def test_parquet_files_are_hashed_as_they_are_written(tmp_path: Path, lazy: bool) -> None:
    """The sha256 the writer computes on the way is the file's: the local store takes it
    without reading the file again."""
    frame = pl.DataFrame({"a": np.arange(200_000), "b": np.linspace(0, 1, 200_000)})
    with parquet_file(frame.lazy() if lazy else frame, tmp_path) as written:
        assert written.sha256 == hashlib.sha256(written.path.read_bytes()).hexdigest()
        assert pl.read_parquet(written.path).equals(frame)
