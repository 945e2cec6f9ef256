"""Contract of the spec-version and document repositories, run on every metadata backend.

Uses the ``metadata_store`` fixture; import with ``from meguri.testing.contract_specs import *``.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from meguri.errors import NotFoundError
from meguri.store.metadata import DocumentVersion, MetadataStore, SpecVersion

__all__ = [
    "test_concurrent_document_versions_are_numbered_once",
    "test_concurrent_identical_specs_are_stored_once",
    "test_document_identical_to_latest_is_not_a_new_version",
    "test_document_missing_raises_not_found",
    "test_document_versions_are_numbered_from_one",
    "test_documents_are_per_project",
    "test_documents_list_and_latest_versions",
    "test_spec_add_to_missing_project_raises_not_found",
    "test_spec_get_and_missing",
    "test_spec_identical_hash_returns_the_stored_version",
    "test_spec_list_latest_count_and_numbers",
    "test_spec_match_by_id_or_hash_prefix",
    "test_spec_versions_are_per_project",
]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _add(store: MetadataStore, project_id: str, text: str, who: str = "ana") -> SpecVersion:
    version, _ = store.specs.add(project_id, content=text, hash=_digest(text), created_by=who)
    return version


# -- spec versions ----------------------------------------------------------------------------


def test_spec_identical_hash_returns_the_stored_version(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("p", "ana")
    first, created = metadata_store.specs.add(
        project.id, content="a: 1\n", hash=_digest("a"), created_by="ana", message="first"
    )
    assert created
    assert first.id.startswith("spec-")
    assert (first.project_id, first.content, first.message, first.created_by) == (
        project.id,
        "a: 1\n",
        "first",
        "ana",
    )
    again, created = metadata_store.specs.add(
        project.id, content="a: 1  # same\n", hash=_digest("a"), created_by="bob", message="x"
    )
    assert not created
    assert again == first  # the first text, author and message are kept
    assert metadata_store.specs.count(project.id) == 1


def test_spec_get_and_missing(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("p", "ana")
    version = _add(metadata_store, project.id, "a")
    assert metadata_store.specs.get(version.id) == version
    assert metadata_store.specs.find_by_hash(project.id, _digest("a")) == version
    assert metadata_store.specs.find_by_hash(project.id, _digest("b")) is None
    with pytest.raises(NotFoundError, match="meguri spec history"):
        metadata_store.specs.get("spec-absent")


def test_spec_list_latest_count_and_numbers(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("p", "ana")
    assert metadata_store.specs.latest(project.id) is None
    assert metadata_store.specs.list(project.id) == []
    versions = [_add(metadata_store, project.id, text) for text in ("a", "b", "c")]
    assert metadata_store.specs.list(project.id) == versions
    assert metadata_store.specs.list(project.id, limit=2) == versions[1:]
    assert metadata_store.specs.latest(project.id) == versions[-1]
    assert metadata_store.specs.count(project.id) == 3
    assert [metadata_store.specs.number(v) for v in versions] == [1, 2, 3]
    assert [metadata_store.specs.nth(project.id, n) for n in (1, 2, 3)] == versions
    for bad in (0, 4):
        with pytest.raises(NotFoundError, match="1 to 3"):
            metadata_store.specs.nth(project.id, bad)


def test_spec_match_by_id_or_hash_prefix(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("p", "ana")
    a, b = _add(metadata_store, project.id, "a"), _add(metadata_store, project.id, "b")
    assert metadata_store.specs.match(project.id, a.id) == [a]
    assert metadata_store.specs.match(project.id, b.hash[:8]) == [b]
    assert metadata_store.specs.match(project.id, "spec-") == [a, b]
    assert metadata_store.specs.match(project.id, "spec-", limit=1) == [a]
    assert metadata_store.specs.match(project.id, "%") == []  # LIKE wildcards are literal
    assert metadata_store.specs.match(project.id, "zzz") == []


def test_spec_versions_are_per_project(metadata_store: MetadataStore) -> None:
    one = metadata_store.projects.ensure("one", "ana")
    two = metadata_store.projects.ensure("two", "ana")
    v1, v2 = _add(metadata_store, one.id, "same"), _add(metadata_store, two.id, "same")
    assert v1.id != v2.id
    assert metadata_store.specs.list(one.id) == [v1]
    assert metadata_store.specs.match(two.id, v1.id) == []


def test_spec_add_to_missing_project_raises_not_found(metadata_store: MetadataStore) -> None:
    with pytest.raises(NotFoundError, match="No project"):
        _add(metadata_store, "prj-absent", "a")


def test_concurrent_identical_specs_are_stored_once(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("p", "ana")
    with ThreadPoolExecutor(max_workers=6) as pool:
        found = list(
            pool.map(lambda i: _add(metadata_store, project.id, "race", f"u{i}"), range(12))
        )
    assert len({v.id for v in found}) == 1
    assert metadata_store.specs.count(project.id) == 1


# -- documents --------------------------------------------------------------------------------


def _doc(store: MetadataStore, project_id: str, text: str, name: str = "design") -> DocumentVersion:
    return store.documents.add_version(project_id, name, content=text, created_by="ana")[0]


def test_document_versions_are_numbered_from_one(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("p", "ana")
    v1, created = metadata_store.documents.add_version(
        project.id, "design", content="# Design\n", created_by="ana", message="draft"
    )
    assert created
    assert (v1.version, v1.content, v1.message, v1.created_by) == (1, "# Design\n", "draft", "ana")
    assert v1.hash == _digest("# Design\n")
    v2 = _doc(metadata_store, project.id, "# Design\nv2\n")
    assert v2.version == 2
    assert v2.document_id == v1.document_id
    assert metadata_store.documents.versions(project.id, "design") == [v1, v2]
    assert metadata_store.documents.version(project.id, "design") == v2
    assert metadata_store.documents.version(project.id, "design", 1) == v1


def test_document_identical_to_latest_is_not_a_new_version(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("p", "ana")
    v1 = _doc(metadata_store, project.id, "one")
    same, created = metadata_store.documents.add_version(
        project.id, "design", content="one", created_by="bob"
    )
    assert (same, created) == (v1, False)
    _doc(metadata_store, project.id, "two")
    reverted = _doc(metadata_store, project.id, "one")  # going back is a change
    assert reverted.version == 3
    assert reverted.hash == v1.hash


def test_document_missing_raises_not_found(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("p", "ana")
    assert metadata_store.documents.find(project.id, "absent") is None
    with pytest.raises(NotFoundError, match="meguri docs add"):
        metadata_store.documents.get(project.id, "absent")
    with pytest.raises(NotFoundError):
        metadata_store.documents.versions(project.id, "absent")
    _doc(metadata_store, project.id, "x")
    with pytest.raises(NotFoundError, match="no version 7"):
        metadata_store.documents.version(project.id, "design", 7)
    with pytest.raises(NotFoundError, match="No project"):
        _doc(metadata_store, "prj-absent", "x")


def test_documents_list_and_latest_versions(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("p", "ana")
    assert metadata_store.documents.list(project.id) == []
    assert metadata_store.documents.latest_versions(project.id) == {}
    _doc(metadata_store, project.id, "a1", "ops-manual")
    a2 = _doc(metadata_store, project.id, "a2", "ops-manual")
    b1 = _doc(metadata_store, project.id, "b1", "design")
    assert [d.name for d in metadata_store.documents.list(project.id)] == ["design", "ops-manual"]
    assert metadata_store.documents.latest_versions(project.id) == {"design": b1, "ops-manual": a2}


def test_documents_are_per_project(metadata_store: MetadataStore) -> None:
    one = metadata_store.projects.ensure("one", "ana")
    two = metadata_store.projects.ensure("two", "ana")
    _doc(metadata_store, one.id, "x")
    _doc(metadata_store, one.id, "y")
    assert _doc(metadata_store, two.id, "x").version == 1
    assert (
        metadata_store.documents.get(one.id, "design").id
        != metadata_store.documents.get(two.id, "design").id
    )


def test_concurrent_document_versions_are_numbered_once(metadata_store: MetadataStore) -> None:
    project = metadata_store.projects.ensure("p", "ana")
    texts = [f"text {i}" for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        stored = list(pool.map(lambda t: _doc(metadata_store, project.id, t), texts))
    assert sorted(v.version for v in stored) == list(range(1, 13))
    history = metadata_store.documents.versions(project.id, "design")
    assert sorted(v.content for v in history) == sorted(texts)
    assert len(metadata_store.documents.list(project.id)) == 1
