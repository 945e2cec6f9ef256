"""The data phase end to end on the bundled dataset, against the real stores (and real Ray)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import meguri
from meguri.data import FittedTransform, get_version, lineage, prepare, read
from meguri.errors import DataQualityError
from meguri.spec import ProjectSpec, parse_spec, render_example_spec
from meguri.store import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = meguri.open_workspace(tmp_path, project="pipeline")
    yield workspace
    workspace.close()


@pytest.fixture
def spec() -> ProjectSpec:
    return parse_spec(render_example_spec("pipeline"))


def test_prepare_records_every_step_with_lineage(ws: Workspace, spec: ProjectSpec) -> None:
    result = prepare(spec, workspace=ws)
    counts = {name: v.row_count for name, v in result.parts.items()}
    assert sum(counts.values()) == 569
    assert counts["train"] == pytest.approx(0.7 * 569, abs=2)
    # the profile and the quality report are stored with the source version
    source = get_version(result.source.id, workspace=ws)
    assert source.profile_digest is not None and source.quality_digest is not None
    # every part points back at the source, with the split record and the learned steps
    train = result.parts["train"]
    assert [p.id for p in lineage(train.id, workspace=ws).parents(train.id)] == [result.source.id]
    assert train.lineage["split"]["counts"]["train"] == counts["train"]
    learned = {step["kind"] for step in train.lineage["transform"]["steps"]}
    assert learned == {"impute", "clip", "ratio", "scale", "select"}
    # the transform stored in the artifact store reproduces the prepared test part
    stored = FittedTransform.from_json(ws.artifacts.get_bytes(result.transform_digest))
    assert stored.to_json() == result.transform.to_json()


def test_train_statistics_come_from_training_rows_only(ws: Workspace, spec: ProjectSpec) -> None:
    result = prepare(spec, workspace=ws)
    train = result.frame("train", workspace=ws)
    test = result.frame("test", workspace=ws)
    # standard scaling fitted on train: train columns have mean 0 and sd 1, test columns not
    kept = [c for c in train.columns if c != "malignant"]
    assert np.allclose(train.select(kept).mean().to_numpy(), 0, atol=1e-9)
    assert not np.allclose(test.select(kept).mean().to_numpy(), 0, atol=1e-3)


def test_rerun_with_the_same_data_reuses_every_version(ws: Workspace, spec: ProjectSpec) -> None:
    first = prepare(spec, workspace=ws)
    second = prepare(spec, workspace=ws)
    assert second.source.id == first.source.id
    assert {k: v.id for k, v in second.parts.items()} == {k: v.id for k, v in first.parts.items()}


def test_error_level_quality_failure_stops_before_any_part(ws: Workspace) -> None:
    text = render_example_spec("pipeline").replace("        max: 50\n", "        max: 20\n")
    strict = parse_spec(text)
    with pytest.raises(DataQualityError, match="mean_radius"):
        prepare(strict, workspace=ws)
    names = {d.name for d in meguri.data.list_datasets(workspace=ws)}
    assert names == {"breast_cancer"}  # the source is catalogued; no prepared part is


def test_ray_engine_gives_the_same_parts(ws: Workspace, spec: ProjectSpec) -> None:
    pytest.importorskip("ray")
    from meguri.compute import executor

    local = prepare(spec, workspace=ws)
    with executor("ray", num_cpus=2) as engine:
        distributed = prepare(spec, workspace=ws, engine=engine)
    for part in ("validation", "test"):
        assert distributed.parts[part].content_hash == local.parts[part].content_hash
    frame = read(distributed.parts["test"].id, workspace=ws).collect()
    assert frame.equals(local.frame("test", workspace=ws))
    assert isinstance(frame, pl.DataFrame)
