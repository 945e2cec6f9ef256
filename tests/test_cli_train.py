"""``meguri train --from RUN`` (re-run with changes, compared with the earlier best) and
``meguri runs leaderboard`` across spec versions, through the real console script."""

from __future__ import annotations

from pathlib import Path

import pytest

import meguri
from meguri.cli._train import earlier_training_run, spec_with_changes
from meguri.errors import SpecError, TrainError
from meguri.spec import parse_spec, render_example_spec, save_spec_version
from meguri.testing.cli import run_meguri
from meguri.train._train import train


def spec_text(folds: int = 3, algorithms: str = "linear") -> str:
    text = render_example_spec("cli-train")
    start = text.index("  allowed_algorithms:")
    end = text.index("\n", text.index("]", start))
    text = text[:start] + f"  allowed_algorithms: [{algorithms}]" + text[end:]
    return text.replace("  cv_folds: 5\n", f"  cv_folds: {folds}\n")


def _train_version(folder: Path, text: str) -> str:
    """Save ``text`` as the project's spec (a new version) and train it in-process."""
    (folder / "meguri.yaml").write_text(text, encoding="utf-8")
    ws = meguri.open_workspace(folder)
    version, _ = save_spec_version(ws.metadata, ws.project.id, text, created_by=ws.user)
    result = train(parse_spec(text), workspace=ws, spec_version_id=version.id)
    ws.close()
    return result.run_id


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    folder = tmp_path_factory.mktemp("cli-train")
    first = _train_version(folder, spec_text(folds=2))
    second = _train_version(folder, spec_text(folds=3))
    return folder, first, second


def test_train_from_compares_with_the_earlier_best(project: tuple[Path, str, str]) -> None:
    folder, _, earlier = project
    out = run_meguri(
        "train", "--from", earlier, "--set", "model.cv_folds=2", "--algorithms",
        "linear,knn", cwd=folder,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    assert f"Against {earlier} (best linear)" in out.stdout
    assert "test/roc_auc" in out.stdout and "cv/roc_auc_mean" in out.stdout
    assert "train.cv_folds" in out.stdout  # the settings diff: 3 before, 2 now
    ws = meguri.open_workspace(folder)
    [rerun] = meguri.search_runs(f"tags.from_run = '{earlier}'", workspace=ws)
    assert rerun.tags["changes"] == (
        "model.cv_folds=2; constraints.allowed_algorithms=[linear, knn]"
    )
    assert rerun.params["cv_folds"] == "2"
    children = meguri.search_runs(f"parent_run_id = '{rerun.id}'", workspace=ws)
    assert sorted(c.name for c in children) == ["knn", "linear"]
    before = meguri.get_run(earlier, workspace=ws).metrics["test/roc_auc"].value
    delta = float(rerun.tags["from_run.delta.test/roc_auc"])
    assert delta == pytest.approx(rerun.metrics["test/roc_auc"].value - before, abs=1e-6)
    ws.close()


def test_leaderboard_per_spec_version(project: tuple[Path, str, str]) -> None:
    folder, first, second = project
    newest = run_meguri("runs", "leaderboard", "--spec-version", "2", cwd=folder)
    assert newest.returncode == 0, newest.stderr
    assert "spec version #2" in newest.stdout and second in newest.stdout
    assert first not in newest.stdout
    every = run_meguri("runs", "leaderboard", "--all-versions", "--top", "1", cwd=folder)
    assert every.returncode == 0, every.stderr
    assert "spec version #1" in every.stdout and first in every.stdout
    assert every.stdout.index("spec version #2") < every.stdout.index("spec version #1")


def test_changes_are_validated_like_the_file() -> None:
    spec = spec_with_changes(spec_text(), [("model.cv", "{method: kfold, folds: 4}")])
    assert spec.model.cross_validation.method == "kfold" and spec.model.cv_folds == 4
    kept = spec_with_changes(spec_text(folds=3), [("model.cv", "{method: kfold}")])
    assert kept.model.cross_validation.folds == 3
    both = [("model.cv", "{method: kfold}"), ("model.cv_folds", "6")]
    assert spec_with_changes(spec_text(), both).model.cross_validation.folds == 6
    with pytest.raises(SpecError, match=r"model\.cv_folds: input should be greater"):
        spec_with_changes(spec_text(), [("model.cv_folds", "1")])


def test_from_a_run_that_is_not_a_training_run(project: tuple[Path, str, str]) -> None:
    folder, _, _ = project
    ws = meguri.open_workspace(folder)
    with meguri.start_run("manual", workspace=ws) as run:
        run.log_metric("x", 1.0)
    with pytest.raises(TrainError, match="is not a finished `meguri train` run"):
        earlier_training_run(run.id, ws)
    ws.close()
    with pytest.raises(SpecError, match="not a section"):
        spec_with_changes(spec_text(), [("model.seed.x", "1")])
