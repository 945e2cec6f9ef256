"""Contract of the project repository, run on every metadata backend (``metadata_store``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from meguri.errors import NotFoundError
from meguri.store.metadata import MetadataStore, Project

__all__ = [
    "test_concurrent_ensure_creates_one_project",
    "test_ensure_creates_then_returns_the_same_project",
    "test_find_and_get_missing_project",
    "test_list_is_sorted_by_name",
    "test_names_are_exact",
]


def test_ensure_creates_then_returns_the_same_project(metadata_store: MetadataStore) -> None:
    created = metadata_store.projects.ensure("churn", "ana")
    assert isinstance(created, Project)
    assert created.id.startswith("prj-")
    assert (created.name, created.created_by) == ("churn", "ana")
    assert created.created_at > 0
    again = metadata_store.projects.ensure("churn", "bob")
    assert again == created  # the first creator is kept
    assert metadata_store.projects.get("churn") == created


def test_find_and_get_missing_project(metadata_store: MetadataStore) -> None:
    assert metadata_store.projects.find("absent") is None
    with pytest.raises(NotFoundError, match="meguri init"):
        metadata_store.projects.get("absent")


def test_list_is_sorted_by_name(metadata_store: MetadataStore) -> None:
    assert metadata_store.projects.list() == []
    for name in ("zeta", "alpha", "mid"):
        metadata_store.projects.ensure(name, "t")
    assert [p.name for p in metadata_store.projects.list()] == ["alpha", "mid", "zeta"]


def test_names_are_exact(metadata_store: MetadataStore) -> None:
    upper = metadata_store.projects.ensure("Churn", "t")
    lower = metadata_store.projects.ensure("churn", "t")
    spaced = metadata_store.projects.ensure("churn ", "t")
    assert len({upper.id, lower.id, spaced.id}) == 3
    assert metadata_store.projects.ensure("名前 ✓", "t").name == "名前 ✓"


def test_concurrent_ensure_creates_one_project(metadata_store: MetadataStore) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(lambda i: metadata_store.projects.ensure("race", f"u{i}"), range(16)))
    assert len({p.id for p in found}) == 1
    assert [p.name for p in metadata_store.projects.list()] == ["race"]
