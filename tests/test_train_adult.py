"""Real data, known numbers: the Adult example reaches the issue's bar on held-out data.

Kohavi (1996) reports 84.46% accuracy for C4.5 and 85.90% for NBTree; a gradient-boosting model
with 5-fold CV reaches about 87.4% and 0.928 ROC AUC. The example spec must give at least
0.92 ROC AUC and 86.5% accuracy on its test split.
"""

from __future__ import annotations

from pathlib import Path

import meguri
from meguri.spec import parse_spec
from meguri.train._train import train

EXAMPLE = Path(__file__).parent.parent / "examples" / "adult" / "meguri.yaml"


def test_adult_example_meets_the_published_bar(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("[linear, hist_gradient_boosting, lightgbm]", "[lightgbm]")
    text = text.replace("cv_folds: 5", "cv_folds: 3")
    ws = meguri.open_workspace(tmp_path, project="adult")
    result = train(parse_spec(text), workspace=ws)
    assert result.metrics["test/roc_auc"] >= 0.92
    assert result.metrics["test/accuracy"] >= 0.865
    assert all(check.passed for check in result.checks)
    assert result.best.cv["roc_auc"][0] >= 0.92
    ws.close()
