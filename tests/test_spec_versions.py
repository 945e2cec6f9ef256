"""Spec versions (hash, save, refs, diffs) and versioned documents, on an embedded store."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from meguri.errors import NotFoundError, SpecError
from meguri.spec import (
    diff_specs,
    normalise_document,
    render_example_spec,
    resolve_spec_version,
    save_document,
    save_spec_file,
    save_spec_version,
    spec_hash,
)
from meguri.store.metadata import MetadataStore, open_metadata_store

EXAMPLE = render_example_spec("demo", today=date(2025, 1, 6))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    opened = open_metadata_store(f"sqlite:///{tmp_path / 'meguri.db'}")
    yield opened
    opened.close()


@pytest.fixture
def project_id(store: MetadataStore) -> str:
    return store.projects.ensure("demo", "ana").id


def test_hash_ignores_comments_formatting_and_key_order() -> None:
    base = spec_hash("a: 1\nb: [x, y]\nc: {d: 0.950}\n")
    assert spec_hash("# note\nb:   [x, y]  # why\na: 1\nc:\n  d: 0.95\n") == base
    assert spec_hash("a: 2\nb: [x, y]\nc: {d: 0.95}\n") != base
    assert spec_hash("a: 1\nb: [y, x]\nc: {d: 0.95}\n") != base  # list order is content
    assert spec_hash("a: '1'\nb: [x, y]\nc: {d: 0.95}\n") != base  # so is the type
    assert len(base) == 64


def test_save_deduplicates_by_content(store: MetadataStore, project_id: str) -> None:
    first, created = save_spec_version(store, project_id, EXAMPLE, created_by="ana", message="m")
    assert created
    assert first.content == EXAMPLE
    reformatted = "# reviewed\n" + EXAMPLE.replace("threshold: 0.95", "threshold: 0.950")
    again, created = save_spec_version(store, project_id, reformatted, created_by="bob")
    assert (again, created) == (first, False)
    changed = EXAMPLE.replace("threshold: 0.95", "threshold: 0.97")
    second, created = save_spec_version(store, project_id, changed, created_by="bob")
    assert created
    assert second.id != first.id
    assert store.specs.count(project_id) == 2


def test_an_invalid_spec_is_never_stored(store: MetadataStore, project_id: str) -> None:
    broken = EXAMPLE.replace("\n    measured_on: test\n", "\n    measured_on: prod\n", 1)
    with pytest.raises(SpecError, match="'prod' is not allowed"):
        save_spec_version(store, project_id, broken, created_by="ana")
    assert store.specs.count(project_id) == 0


def test_refs(store: MetadataStore, project_id: str) -> None:
    texts = [EXAMPLE.replace("cv_folds: 5", f"cv_folds: {n}") for n in (3, 4, 5)]
    v1, v2, v3 = (save_spec_version(store, project_id, t, created_by="a")[0] for t in texts)

    def resolve(ref: str) -> str:
        return resolve_spec_version(store, project_id, ref).id

    assert resolve("latest") == v3.id
    assert resolve("latest~2") == v1.id
    assert resolve("2") == v2.id
    assert resolve(v2.id) == v2.id
    assert resolve(v3.hash[:6]) == v3.id
    with pytest.raises(NotFoundError, match="matches several spec versions"):
        resolve("spec-")
    with pytest.raises(NotFoundError, match="goes back past the first of 3"):
        resolve("latest~3")
    with pytest.raises(NotFoundError, match="No spec version 'nope'; use latest"):
        resolve("nope")
    with pytest.raises(NotFoundError, match="No spec version #9; this project has 3"):
        resolve("9")


def test_refs_without_versions(store: MetadataStore, project_id: str) -> None:
    with pytest.raises(NotFoundError, match="run `meguri spec save`"):
        resolve_spec_version(store, project_id, "latest")


def test_diff_summarises_criteria_changes() -> None:
    new = (
        EXAMPLE.replace("threshold: 0.95", "threshold: 0.97")
        .replace("threshold: 50", "threshold: 80")
        .replace(
            "allowed_algorithms: [linear, random_forest,", "allowed_algorithms: [random_forest,"
        )
    )
    new = new.replace(
        "  - id: drift-production",
        "  - id: brier-test\n    metric: brier\n"
        '    measured_on: test\n    comparison: "<="\n    threshold: 0.1\n'
        "  - id: drift-production",
    )
    new = new.replace(
        "  - id: recall-test\n    metric: recall\n    measured_on: test\n"
        '    comparison: ">="\n    threshold: 0.9\n    description: Share of '
        "malignant cases flagged (a missed one costs most).\n",
        "",
    )
    result = diff_specs(EXAMPLE, new, "v1", "file")
    assert [str(c) for c in result.changes] == [
        "~ success_criteria[auc-test].threshold: 0.95 → 0.97 (stricter)",
        "- success_criteria[recall-test]: recall >= 0.9 on test",
        "~ success_criteria[latency-staging].threshold: 50 → 80 (looser)",
        "+ success_criteria[brier-test]: brier <= 0.1 on test",
        '~ constraints.allowed_algorithms: ["linear","random_forest","hist_gradient_boosting",'
        '"lightgbm"] → ["random_forest","hist_gradient_boosting","lightgbm"]',
    ]
    assert result.unified.startswith("--- v1\n+++ file\n")
    assert "-    threshold: 0.95\n+    threshold: 0.97\n" in result.unified


def test_diff_ignores_reordering_of_keyed_lists_and_comments() -> None:
    old = "success_criteria:\n  - {id: a, threshold: 1}\n  - {id: b, threshold: 2}\n"
    new = "# comment\nsuccess_criteria:\n  - {id: b, threshold: 2}\n  - {id: a, threshold: 1}\n"
    result = diff_specs(old, new)
    assert result.identical
    assert result.unified  # the text did change
    assert diff_specs(old, old).unified == ""


def test_diff_of_a_comparison_change_has_no_strictness_note() -> None:
    old = "success_criteria:\n  - {id: a, comparison: '>=', threshold: 1}\n"
    new = "success_criteria:\n  - {id: a, comparison: '<=', threshold: 2}\n"
    assert [str(c) for c in diff_specs(old, new).changes] == [
        "~ success_criteria[a].comparison: >= → <=",
        "~ success_criteria[a].threshold: 1 → 2",
    ]


def test_documents_are_normalised_and_versioned(store: MetadataStore, project_id: str) -> None:
    assert normalise_document("a\r\nb\rc") == "a\nb\nc\n"
    assert normalise_document("a\n\n\n") == "a\n"
    v1, created = save_document(store, project_id, "ops-manual", "# Ops\r\n", created_by="ana")
    assert (created, v1.version, v1.content) == (True, 1, "# Ops\n")
    same, created = save_document(store, project_id, "ops-manual", "# Ops\n\n", created_by="bob")
    assert (same, created) == (v1, False)
    v2, created = save_document(
        store, project_id, "ops-manual", "# Ops\nRestart.\n", created_by="bob", message="restart"
    )
    assert (created, v2.version, v2.message) == (True, 2, "restart")


def test_document_names_are_checked(store: MetadataStore, project_id: str) -> None:
    with pytest.raises(SpecError, match="Document name: 'my notes' is not a valid name"):
        save_document(store, project_id, "my notes", "x", created_by="ana")


def test_importing_the_spec_package_does_not_import_sqlalchemy() -> None:
    code = "import sys, meguri.spec; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_save_spec_file_and_odd_yaml_keys(
    store: MetadataStore, project_id: str, tmp_path: Path
) -> None:
    (tmp_path / "meguri.yaml").write_text(EXAMPLE, encoding="utf-8")
    version, created = save_spec_file(store, project_id, tmp_path, created_by="ana")
    assert created
    assert version.content == EXAMPLE
    assert spec_hash("1: a\nb: c\n") == spec_hash("b: c\n'1': a\n")  # keys compare as text
    assert [str(c) for c in diff_specs("1: a\n", "1: b\n").changes] == ["~ 1: a → b"]
