"""``model.search`` in the spec: the leading candidate is tuned, trials are child runs."""

from __future__ import annotations

from pathlib import Path

import meguri
from meguri.spec import parse_spec, render_example_spec
from meguri.train._train import train


def test_search_tunes_the_leader_and_records_trials(tmp_path: Path) -> None:
    text = render_example_spec("search")
    text = text.replace(
        "allowed_algorithms: [linear, random_forest, hist_gradient_boosting, lightgbm]",
        "allowed_algorithms: [random_forest]",
    )
    text = text.replace("  cv_folds: 5\n", "  cv_folds: 3\n  search: {trials: 4}\n", 1)
    ws = meguri.open_workspace(tmp_path, project="search")
    result = train(parse_spec(text), workspace=ws)
    trials = meguri.search_runs("tags.`optuna.trial` like '%'", workspace=ws)
    assert len(trials) == 4
    assert {t.parent_run_id for t in trials} == {result.run_id}
    default = next(c for c in result.leaderboard if not c.tuned)
    if result.best.tuned:  # only kept when it beats the defaults' cross-validation
        assert result.best.cv["roc_auc"][0] > default.cv["roc_auc"][0]
        assert result.leaderboard[0] is result.best
    else:
        assert result.best is default
    ws.close()
