"""Contract of the dataset repository (the data catalog), run on every metadata backend.

Uses the ``metadata_store`` fixture; import with
``from meguri.testing.contract_datasets import *``.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from meguri.errors import NotFoundError
from meguri.store.metadata import MetadataStore
from meguri.store.metadata._entities import DatasetVersion
from meguri.store.metadata.repositories.datasets import NewDatasetVersion

__all__ = [
    "test_add_to_missing_project_or_parent_writes_nothing",
    "test_ancestors_and_children_follow_parents",
    "test_concurrent_different_content_gets_consecutive_numbers",
    "test_concurrent_identical_content_is_stored_once",
    "test_datasets_are_per_project",
    "test_digests_are_attached_and_replaced",
    "test_identical_content_returns_the_stored_version",
    "test_json_fields_round_trip_in_order",
    "test_lookups_by_number_prefix_and_latest",
    "test_tags_are_set_replaced_and_removed",
    "test_versions_are_numbered_from_one",
]


def _new(content: str, **fields: object) -> NewDatasetVersion:
    base = NewDatasetVersion(
        content_hash=hashlib.sha256(content.encode()).hexdigest(),
        schema={"a": "Int64", "b": "String"},
        row_count=3,
        byte_size=100,
        data_digest=hashlib.sha256(b"parquet " + content.encode()).hexdigest(),
        operation="ingest",
        created_by="ana",
        source_uri="data/x.csv",
        format="csv",
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def _project(store: MetadataStore, name: str = "p") -> str:
    return store.projects.ensure(name, "t").id


def _add(store: MetadataStore, pid: str, name: str, content: str, **kw: object) -> DatasetVersion:
    version, _ = store.datasets.add_version(pid, name, _new(content, **kw))
    return version


def test_versions_are_numbered_from_one(metadata_store: MetadataStore) -> None:
    pid = _project(metadata_store)
    first, created = metadata_store.datasets.add_version(pid, "churn", _new("one"))
    assert created and first.version == 1 and first.id.startswith("dsv-")
    second = _add(metadata_store, pid, "churn", "two")
    assert (second.version, second.name, second.dataset_id) == (2, "churn", first.dataset_id)
    assert [v.version for v in metadata_store.datasets.versions(pid, "churn")] == [1, 2]
    dataset = metadata_store.datasets.get(pid, "churn")
    assert dataset.id.startswith("ds-") and dataset.id == first.dataset_id
    assert first.ref == "churn@1"


def test_identical_content_returns_the_stored_version(metadata_store: MetadataStore) -> None:
    pid = _project(metadata_store)
    first = _add(metadata_store, pid, "churn", "one")
    _add(metadata_store, pid, "churn", "two")
    again, created = metadata_store.datasets.add_version(pid, "churn", _new("one"))
    assert not created and again == first  # an older content keeps its number
    assert len(metadata_store.datasets.versions(pid, "churn")) == 2
    other = _add(metadata_store, pid, "other", "one")  # the same content under another name
    assert other.id != first.id and other.version == 1
    assert metadata_store.datasets.find_by_hash(pid, "churn", first.content_hash) == first


def test_json_fields_round_trip_in_order(metadata_store: MetadataStore) -> None:
    pid = _project(metadata_store)
    schema = {
        "zeta": "Float64",
        "alpha": "Datetime(time_unit='us', time_zone=None)",
        "名前": "String",
    }
    lineage = {"medians": {"x": 1.5}, "steps": ["impute", "clip"], "note": "ä ✓"}
    stored = _add(
        metadata_store,
        pid,
        "d",
        "c",
        schema=schema,
        read_options={"separator": ";", "null_values": ["NA"]},
        lineage=lineage,
        row_count=5_000_000_000,
    )
    loaded = metadata_store.datasets.get_version(stored.id)
    assert list(loaded.schema.items()) == list(schema.items())
    assert loaded.read_options == {"separator": ";", "null_values": ["NA"]}
    assert loaded.lineage == lineage
    assert loaded.row_count == 5_000_000_000
    assert loaded == stored


def test_lookups_by_number_prefix_and_latest(metadata_store: MetadataStore) -> None:
    pid = _project(metadata_store)
    v1 = _add(metadata_store, pid, "a", "1")
    v2 = _add(metadata_store, pid, "a", "2")
    b1 = _add(metadata_store, pid, "b", "1")
    repo = metadata_store.datasets
    assert repo.version(pid, "a") == v2
    assert repo.version(pid, "a", 1) == v1
    with pytest.raises(NotFoundError, match="no version 7"):
        repo.version(pid, "a", 7)
    with pytest.raises(NotFoundError, match="meguri data list"):
        repo.version(pid, "missing")
    with pytest.raises(NotFoundError, match="dsv-nope"):
        repo.get_version("dsv-nope")
    assert repo.match(pid, v1.id) == [v1]
    assert {v.id for v in repo.match(pid, "dsv-")} == {v1.id, v2.id, b1.id}
    assert repo.match(pid, "dsv-%") == []  # LIKE wildcards are literal
    assert repo.latest_versions(pid) == {"a": v2, "b": b1}
    assert [d.name for d in repo.list(pid)] == ["a", "b"]
    assert repo.get_versions([v1.id, "dsv-nope"]) == {v1.id: v1}


def test_datasets_are_per_project(metadata_store: MetadataStore) -> None:
    p1, p2 = _project(metadata_store, "one"), _project(metadata_store, "two")
    a = _add(metadata_store, p1, "churn", "x")
    b = _add(metadata_store, p2, "churn", "x")
    assert a.dataset_id != b.dataset_id and (a.version, b.version) == (1, 1)
    assert metadata_store.datasets.match(p2, a.id) == []
    assert metadata_store.datasets.find(p1, "absent") is None


def test_add_to_missing_project_or_parent_writes_nothing(metadata_store: MetadataStore) -> None:
    with pytest.raises(NotFoundError, match=r"meguri\.init"):
        metadata_store.datasets.add_version("prj-missing", "d", _new("x"))
    pid = _project(metadata_store)
    with pytest.raises(NotFoundError, match="dsv-ghost"):
        metadata_store.datasets.add_version(pid, "d", _new("x", parents=("dsv-ghost",)))
    assert metadata_store.datasets.find(pid, "d") is None  # the dataset row rolled back too


def test_ancestors_and_children_follow_parents(metadata_store: MetadataStore) -> None:
    pid = _project(metadata_store)
    raw = _add(metadata_store, pid, "raw", "r")
    extra = _add(metadata_store, pid, "extra", "e")
    clean = _add(metadata_store, pid, "clean", "c", parents=(raw.id, extra.id), operation="prepare")
    train = _add(metadata_store, pid, "train", "t", parents=(clean.id,), operation="split")
    assert clean.parents == (raw.id, extra.id)  # in the order given
    found = metadata_store.datasets.ancestors(train.id)
    assert set(found) == {raw.id, extra.id, clean.id, train.id}
    assert found[clean.id].operation == "prepare"
    assert metadata_store.datasets.ancestors(raw.id) == {raw.id: raw}
    assert [c.id for c in metadata_store.datasets.children(raw.id)] == [clean.id]


def test_digests_are_attached_and_replaced(metadata_store: MetadataStore) -> None:
    pid = _project(metadata_store)
    v = _add(metadata_store, pid, "d", "x")
    assert (v.profile_digest, v.quality_digest) == (None, None)
    first = metadata_store.datasets.set_digest(v.id, "profile", "a" * 64)
    assert (first.profile_digest, first.quality_digest) == ("a" * 64, None)
    both = metadata_store.datasets.set_digest(v.id, "quality", "b" * 64)
    assert (both.profile_digest, both.quality_digest) == ("a" * 64, "b" * 64)
    again = metadata_store.datasets.set_digest(v.id, "profile", "c" * 64)
    assert again.profile_digest == "c" * 64
    with pytest.raises(NotFoundError):
        metadata_store.datasets.set_digest("dsv-missing", "profile", "a" * 64)
    with pytest.raises(ValueError, match="kind"):
        metadata_store.datasets.set_digest(v.id, "html", "a" * 64)  # type: ignore[arg-type]


def test_tags_are_set_replaced_and_removed(metadata_store: MetadataStore) -> None:
    pid = _project(metadata_store)
    v = _add(metadata_store, pid, "d", "x")
    repo = metadata_store.datasets
    repo.set_tag(v.dataset_id, "owner", "ana")
    repo.set_tag(v.dataset_id, "pii")
    repo.set_tag(v.dataset_id, "owner", "bob")
    assert repo.get(pid, "d").tags == {"owner": "bob", "pii": ""}
    assert repo.delete_tag(v.dataset_id, "pii") is True
    assert repo.delete_tag(v.dataset_id, "pii") is False
    assert repo.list(pid)[0].tags == {"owner": "bob"}
    with pytest.raises(NotFoundError):
        repo.set_tag("ds-missing", "k")


def test_concurrent_identical_content_is_stored_once(metadata_store: MetadataStore) -> None:
    pid = _project(metadata_store)

    def add(i: int) -> tuple[DatasetVersion, bool]:
        return metadata_store.datasets.add_version(pid, "race", _new("same", created_by=f"u{i}"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(add, range(16)))
    assert len({v.id for v, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(metadata_store.datasets.versions(pid, "race")) == 1


def test_concurrent_different_content_gets_consecutive_numbers(
    metadata_store: MetadataStore,
) -> None:
    pid = _project(metadata_store)
    with ThreadPoolExecutor(max_workers=6) as pool:
        found = list(pool.map(lambda i: _add(metadata_store, pid, "race", f"c{i}"), range(12)))
    assert sorted(v.version for v in found) == list(range(1, 13))
    assert len(metadata_store.datasets.list(pid)) == 1
