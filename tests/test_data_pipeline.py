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
    # Fitted on Ray Data: order statistics (medians, quantiles) equal Polars' bit for bit;
    # means and standard deviations are exactly rounded sums, Polars' pairwise ones may
    # differ in the last unit, so the parts agree to 1e-12 rather than by content hash.
    for ray_step, local_step in zip(
        distributed.transform.steps, local.transform.steps, strict=True
    ):
        assert ray_step.kind == local_step.kind
        _assert_close(ray_step.learned, local_step.learned)
    for part in ("train", "validation", "test"):
        frame = read(distributed.parts[part].id, workspace=ws).collect()
        assert isinstance(frame, pl.DataFrame)
        expected = local.frame(part, workspace=ws)
        assert frame.columns == expected.columns and frame.height == expected.height
        for column in frame.columns:
            np.testing.assert_allclose(
                frame[column].to_numpy(), expected[column].to_numpy(), rtol=1e-12, atol=1e-12
            )


def _assert_close(got: object, want: object) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys()
        for key in want:
            _assert_close(got[key], want[key])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            _assert_close(a, b)
    elif isinstance(want, float):
        assert isinstance(got, float) and abs(got - want) <= 1e-12 * max(1.0, abs(want))
    else:
        assert got == want
