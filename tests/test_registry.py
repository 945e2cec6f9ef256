"""The model registry over real stores: register, resolve, alias, gated promotion, download."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import meguri
from meguri import registry
from meguri.errors import GateFailedError, PackageError, RegistryError
from meguri.store import Workspace, open_workspace
from meguri.store.metadata import CheckResult, ModelStatus
from meguri.testing.specs import quick_spec_text
from meguri.train import start_run
from test_registry_support import package_run


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = open_workspace(tmp_path, project="reg", user="ann")
    yield workspace
    workspace.close()


def _checks(ws: Workspace, run_id: str, *values: float) -> None:
    ws.metadata.checks.record(
        [
            CheckResult(
                id="",
                project_id=ws.project.id,
                spec_version_id=None,
                criterion_id=f"auc-{i}",
                stage="test",
                metric="roc_auc",
                comparison=">=",
                threshold=0.9,
                value=value,
                passed=value >= 0.9,
                subject_kind="run",
                subject_id=run_id,
                created_at=0.0,
                created_by="ann",
            )
            for i, value in enumerate(values)
        ]
    )


def test_register_from_a_run_numbers_versions(ws: Workspace) -> None:
    first_run, second_run = package_run(ws, "a"), package_run(ws, "b")
    one = registry.register_model(first_run[:-3], "churn", workspace=ws, tags={"data": "v1"})
    assert (one.ref, one.run_id, one.status) == ("churn@1", first_run, ModelStatus.READY)
    assert one.tags == {"data": "v1"} and one.runtime == "onnx"
    assert set(one.files) == {"model.json", "transform.json", "estimator.onnx"}
    manifest = ws.artifacts.get_bytes(one.package_digest)
    assert hashlib.sha256(manifest).hexdigest() == one.package_digest
    assert registry.register_model(first_run, "churn", workspace=ws).id == one.id
    two = registry.register_model(second_run, "churn", workspace=ws)
    assert two.version == 2
    assert [v.version for v in registry.list_versions("churn", workspace=ws)] == [1, 2]
    assert [m.name for m in registry.list_models(workspace=ws)] == ["churn"]


def test_register_refuses_runs_without_a_package_and_bad_names(ws: Workspace) -> None:
    with start_run("plain", workspace=ws) as run:
        run.log_metric("x", 1.0)
    with pytest.raises(RegistryError, match="meguri train"):
        registry.register_model(run.id, "churn", workspace=ws)
    with pytest.raises(RegistryError, match="meguri train"):
        registry.register_model("run-nope", "churn", workspace=ws)
    with pytest.raises(RegistryError, match="not valid"):
        registry.register_model(run.id, "bad name@1", workspace=ws)
    evil = package_run(ws, files={"../escape.txt": b"x"})
    with pytest.raises(PackageError, match="relative path"):
        registry.register_model(evil, "churn", workspace=ws)


def test_references_resolve_and_unknown_ones_list_what_exists(ws: Workspace) -> None:
    one = registry.register_model(package_run(ws, "a"), "churn", workspace=ws)
    two = registry.register_model(package_run(ws, "b"), "churn", workspace=ws)
    registry.set_alias("churn@1", "staging", workspace=ws)
    get = registry.get_model_version
    assert get("churn", workspace=ws).id == two.id
    assert get("churn@latest", workspace=ws).id == two.id
    assert get("churn@1", workspace=ws).id == one.id
    assert get("churn@staging", workspace=ws).id == one.id
    assert get(two.id, workspace=ws).id == two.id
    with pytest.raises(RegistryError, match=r"staging -> 1.*ready versions: 1, 2"):
        get("churn@canary", workspace=ws)
    with pytest.raises(RegistryError, match="known models: churn"):
        get("fraud@1", workspace=ws)
    with pytest.raises(RegistryError, match="No model version"):
        get("mv-zzz", workspace=ws)


def test_aliases_are_validated_moved_and_removed(ws: Workspace) -> None:
    registry.register_model(package_run(ws, "a"), "churn", workspace=ws)
    registry.register_model(package_run(ws, "b"), "churn", workspace=ws)
    for bad in ("latest", "3", "Prod", "a b"):
        with pytest.raises(RegistryError, match="not valid"):
            registry.set_alias("churn@1", bad, workspace=ws)
    with pytest.raises(RegistryError, match="models promote"):
        registry.set_alias("churn@1", "production", workspace=ws)
    registry.set_alias("churn@1", "staging", workspace=ws)
    moved = registry.set_alias("churn@2", "staging", workspace=ws)
    assert moved.aliases == ("staging",)
    assert registry.get_model_version("churn@1", workspace=ws).aliases == ()
    registry.remove_alias("churn", "staging", workspace=ws)
    with pytest.raises(RegistryError, match=r"No alias 'staging'.*none"):
        registry.remove_alias("churn", "staging", workspace=ws)


def test_promotion_is_blocked_by_failing_or_missing_gates(ws: Workspace) -> None:
    run_id = package_run(ws)
    registry.register_model(run_id, "churn", workspace=ws)
    with pytest.raises(GateFailedError, match="no success-criterion results") as missing:
        registry.promote("churn@1", workspace=ws)
    assert '--override "reason"' in str(missing.value)
    _checks(ws, run_id, 0.95, 0.81)
    with pytest.raises(GateFailedError) as failing:
        registry.promote("churn@1", workspace=ws)
    message = str(failing.value)
    assert "auc-1 (test roc_auc = 0.81, needs >= 0.9)" in message and "auc-0" not in message
    with pytest.raises(RegistryError, match="empty"):
        registry.promote("churn@1", override_reason="  ", workspace=ws)
    promoted = registry.promote("churn@1", override_reason="regulator deadline", workspace=ws)
    assert promoted.aliases == ("production",)
    model = ws.metadata.models.get_model(ws.project.id, "churn")
    override = ws.metadata.models.events(model.id)[-1]
    assert (override.kind, override.created_by) == ("gate_override", "ann")
    assert override.detail["reason"] == "regulator deadline"
    failing_detail = override.detail["failing"]
    assert isinstance(failing_detail, list)
    assert [f["criterion"] for f in failing_detail] == ["auc-1"]


def test_promotion_with_passing_gates_uses_the_latest_result(ws: Workspace) -> None:
    run_id = package_run(ws)
    registry.register_model(run_id, "churn", workspace=ws)
    _checks(ws, run_id, 0.5)
    _checks(ws, run_id, 0.93)  # measured again: the newest result counts
    report = registry.check_gates("churn@1", workspace=ws)
    assert report.passed and [r.value for r in report.results] == [0.93]
    promoted = registry.promote("churn@1", "production", workspace=ws)
    assert promoted.aliases == ("production",)
    model = ws.metadata.models.get_model(ws.project.id, "churn")
    kinds = [e.kind for e in ws.metadata.models.events(model.id)]
    assert kinds == ["registered", "promoted"]


def test_archived_versions_lose_and_refuse_aliases(ws: Workspace) -> None:
    registry.register_model(package_run(ws, "a"), "churn", workspace=ws)
    registry.register_model(package_run(ws, "b"), "churn", workspace=ws)
    registry.set_alias("churn@2", "staging", workspace=ws)
    archived = registry.archive("churn@staging", workspace=ws)
    assert archived.status is ModelStatus.ARCHIVED and archived.aliases == ()
    assert registry.get_model_version("churn", workspace=ws).version == 1
    with pytest.raises(RegistryError, match="archived"):
        registry.set_alias("churn@2", "staging", workspace=ws)
    with pytest.raises(RegistryError, match="archived"):
        registry.promote("churn@2", override_reason="x", workspace=ws)


def test_describe_and_tag_models_and_versions(ws: Workspace) -> None:
    registry.register_model(package_run(ws), "churn", workspace=ws, description="first")
    model = registry.describe("churn", "Who will leave", workspace=ws)
    assert model.description == "Who will leave"
    version = registry.tag("churn@1", {"reviewed": "yes"}, workspace=ws)
    assert version.tags == {"reviewed": "yes"} and version.description == "first"
    assert registry.tag("churn", {"team": "crm"}, workspace=ws).tags == {"team": "crm"}


def test_download_fetches_the_package_once_into_the_cache(ws: Workspace, tmp_path: Path) -> None:
    version = registry.register_model(package_run(ws), "churn", workspace=ws)
    folder = registry.download_package("churn@1", workspace=ws)
    assert folder == ws.root / ".meguri" / "cache" / "models" / version.package_digest
    assert sorted(p.name for p in folder.iterdir()) == sorted(version.files)
    assert (folder / "estimator.onnx").read_bytes() == b"a"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]
    mtime = (folder / "model.json").stat().st_mtime_ns
    assert registry.download_package(version.id, workspace=ws) == folder
    assert (folder / "model.json").stat().st_mtime_ns == mtime  # cached, not fetched again
    dest = registry.download_package("churn", tmp_path / "out", workspace=ws)
    assert (dest / "transform.json").read_bytes() == b"{}"
    with pytest.raises(RegistryError, match="not empty"):
        registry.download_package("churn", dest, workspace=ws)


def _fast_spec() -> meguri.ProjectSpec:
    """The bundled example spec, cut to one fast candidate and three folds."""
    from meguri.spec import parse_spec

    return parse_spec(quick_spec_text("reg", folds=3))


def test_a_trained_model_registers_loads_and_refuses_tampering(ws: Workspace) -> None:
    pytest.importorskip("meguri.registry._package", reason="the package writer has not landed")
    pytest.importorskip("meguri.serve._package", reason="the package reader has not landed")
    from meguri.errors import PackageIntegrityError
    from meguri.train import train

    result = train(_fast_spec(), workspace=ws)
    version = registry.register_model(result, "bc", workspace=ws)
    assert (version.ref, version.run_id) == ("bc@1", result.run_id)
    assert registry.register_model(result.run_id, "bc", workspace=ws).id == version.id
    registry.promote("bc@1", workspace=ws)  # the example spec's criteria pass on this data
    model = registry.load_model("bc@production", workspace=ws)
    assert (model.name, model.version) == ("bc", "1")
    test = result.prepared.raw["test"].head(20)
    batch = {c.name: test.get_column(c.name).to_numpy() for c in model.signature.inputs}
    prediction = model.predict(batch)
    assert prediction.values.shape == (20,)
    assert prediction.probabilities is not None
    assert np.allclose(prediction.probabilities.sum(axis=1), 1.0)
    folder = registry.download_package("bc@1", workspace=ws)
    victim = next(p for p in folder.iterdir() if p.name != "model.json" and p.is_file())
    victim.write_bytes(victim.read_bytes() + b" ")
    with pytest.raises(PackageIntegrityError):
        registry.load_model("bc@1", workspace=ws)
