"""Cross-validation methods of ``model.cv``: kfold, stratified, group (no group in two folds)
and time (validation rows later than training rows), and the older ``model.cv_folds``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.model_selection import TimeSeriesSplit, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import meguri
from meguri.errors import SpecError
from meguri.spec import parse_spec, render_example_spec
from meguri.store import Workspace
from meguri.train._train import fold_indices, train
from meguri.train._zoo import candidates


def spec_with(model: str, algorithms: str = "linear") -> meguri.ProjectSpec:
    text = render_example_spec("cv")
    start = text.index("  prepare:")
    end = text.index("  # Reproducible by row hash")
    text = text[:start] + "  prepare:\n    - scale: {method: standard}\n" + text[end:]
    text = text.replace("model:\n  seed: 42\n  cv_folds: 5\n", f"model:\n  seed: 42\n{model}")
    start = text.index("  allowed_algorithms:")
    end = text.index("\n", text.index("]", start))
    return parse_spec(text[:start] + f"  allowed_algorithms: [{algorithms}]" + text[end:])


def frame(n: int = 300) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    return pl.DataFrame(
        {
            "patient": rng.integers(0, 37, n),
            "day": rng.permutation(n).astype(float),
            "mean_radius": rng.normal(size=n),
            "malignant": rng.integers(0, 2, n),
        }
    )


def test_group_folds_keep_each_group_in_one_fold() -> None:
    spec = spec_with("  cv: {method: group, folds: 4, group: mean_radius}\n")
    raw = frame().with_columns(pl.col("patient").alias("mean_radius"))
    found = fold_indices(spec, raw, "malignant")
    assert len(found) == 4
    groups = raw.get_column("mean_radius").to_numpy()
    seen: set[int] = set()
    for train_idx, valid_idx in found:
        held = set(groups[valid_idx].tolist())
        assert held.isdisjoint(groups[train_idx].tolist())
        assert held.isdisjoint(seen)
        seen |= held
        assert len(train_idx) + len(valid_idx) == raw.height
    assert seen == set(groups.tolist())


def test_time_folds_validate_on_later_rows() -> None:
    spec = spec_with("  cv: {method: time, folds: 3, time: mean_radius}\n")
    raw = frame().with_columns(pl.col("day").alias("mean_radius"))
    times = raw.get_column("mean_radius").to_numpy()
    found = fold_indices(spec, raw, "malignant")
    assert len(found) == 3
    for train_idx, valid_idx in found:
        assert times[train_idx].max() < times[valid_idx].min()
    expected = list(TimeSeriesSplit(3).split(np.arange(raw.height)))
    order = np.argsort(times, kind="stable")
    for (train_idx, valid_idx), (a, b) in zip(found, expected, strict=True):
        assert np.array_equal(train_idx, order[a]) and np.array_equal(valid_idx, order[b])


def test_kfold_and_the_older_cv_folds_setting() -> None:
    raw = frame()
    old = fold_indices(spec_with("  cv_folds: 3\n"), raw, "malignant")
    new = fold_indices(spec_with("  cv: {method: stratified, folds: 3}\n"), raw, "malignant")
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(old, new, strict=True))
    assert spec_with("  cv: {folds: 4}\n").model.cv_folds == 4
    kfold = fold_indices(spec_with("  cv: {method: kfold, folds: 3}\n"), raw, "malignant")
    assert sorted(np.concatenate([v for _, v in kfold]).tolist()) == list(range(raw.height))


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("  cv_folds: 3\n  cv: {folds: 3}\n", "keep only cv.folds"),
        ("  cv: {method: group}\n", "add group: COLUMN"),
        ("  cv: {method: kfold, time: day}\n", "read only with method time"),
        ("  cv: {method: random}\n", "kfold"),
        ("  cv: {method: time, time: malignant}\n", "is the target"),
    ],
)
def test_cv_spec_errors_point_at_the_line(model: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=r"meguri\.yaml:\d+:\d+") as caught:
        spec_with(model)
    assert fragment in str(caught.value)


def test_missing_group_column_and_too_few_groups() -> None:
    spec = spec_with("  cv: {method: group, folds: 4, group: mean_texture}\n")
    with pytest.raises(SpecError, match=r"model\.cv\.group: .mean_texture. is not a column"):
        fold_indices(spec, frame(), "malignant")
    few = spec_with("  cv: {method: group, folds: 4, group: mean_radius}\n")
    raw = frame().with_columns(pl.col("patient").mod(2).alias("mean_radius"))
    with pytest.raises(SpecError, match=r"lower model\.cv\.folds"):
        fold_indices(few, raw, "malignant")


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = meguri.open_workspace(tmp_path, project="cv")
    yield workspace
    workspace.close()


def test_train_with_time_folds_matches_scikit_learn(ws: Workspace) -> None:
    spec = spec_with("  cv: {method: time, folds: 3, time: texture_error}\n")
    result = train(spec, workspace=ws)
    [linear] = result.leaderboard
    raw = result.prepared.raw["train"].sort("texture_error", maintain_order=True)
    x, y = raw.drop("malignant").to_numpy(), raw.get_column("malignant").to_numpy()
    estimator = candidates("binary_classification", ["linear"])[0].build(linear.params, 42)
    expected = cross_val_score(
        make_pipeline(StandardScaler(), estimator), x, y, cv=TimeSeriesSplit(3), scoring="roc_auc"
    )
    assert linear.cv["roc_auc"][0] == pytest.approx(expected.mean(), rel=1e-9)
    params = meguri.get_run(result.run_id, workspace=ws).params
    assert params["cv_method"] == "time" and params["cv_folds"] == "3"
