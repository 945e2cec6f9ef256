"""Training overhead: one candidate cross-validated through meguri against the bare libraries.

    .venv/bin/python bench/train_overhead.py             # LightGBM and LogisticRegression, 3 rounds
    .venv/bin/python bench/train_overhead.py --rounds 5
    .venv/bin/python bench/train_overhead.py --quick     # 1 round, 2 folds: a smoke check

The data: the bundled UCI Adult table, prepared once by the adult example's spec (quality
checks, ordinal encoding of the 8 categorical columns, stratified 70/15/15 split): the
training part, 34,189 rows. The work, the same on both sides, for each algorithm:

* ``meguri``: what ``train()`` does per candidate: the folds of ``model.cv`` with the
  preparation refitted on each fold's training rows (``meguri.train._train.folds``), then the
  candidate's child run under a parent run in a fresh SQLite workspace: fit per fold, every
  metric of the task per fold (``meguri.train.evaluate``), logged with ``step=fold`` plus mean
  and spread, params, tags, resource use, run start and end;
* ``bare``: the same ``StratifiedKFold(5, shuffle=True, random_state=42)`` folds over the same
  raw rows; per fold an ordinal encoding learnt on the fold's training rows (numpy ``unique`` and
  ``searchsorted``: faster than scikit-learn's ``OrdinalEncoder``, so a harder baseline), the
  estimator built from the library classes with the zoo's parameters (LightGBM
  ``LGBMClassifier(n_estimators=300, learning_rate=0.05, num_leaves=31, ..., n_jobs=1,
  deterministic=True)``; ``SimpleImputer → StandardScaler → LogisticRegression(max_iter=1000)``),
  and the same metrics computed with scikit-learn's functions and numpy (accuracy, balanced
  accuracy, precision, recall, F1, ROC AUC, average precision, log loss, Brier, ECE); nothing
  recorded.

Rounds alternate the two sides (meguri first in odd rounds, bare first in even ones), in one
process after a warm-up of each, so that imports and caches are paid before the clock. The
ratio is meguri / bare of the median seconds; the issue's target is at most 1.15. Both sides'
mean cross-validated ROC AUC are printed as a check that they did the same work (they differ
only by the order of the ordinal codes). Results go to ``bench/results/train_overhead-*.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EXAMPLE = ROOT / "examples" / "adult" / "meguri.yaml"
TARGET_RATIO = 1.15
ALGORITHMS = ("lightgbm", "linear")


def _spec(folds: int) -> Any:
    from meguri.spec import parse_spec

    text = EXAMPLE.read_text(encoding="utf-8")
    return parse_spec(text.replace("cv_folds: 5", f"cv_folds: {folds}"))


def meguri_side(spec: Any, prepared: Any, algorithm: str, root: Path) -> tuple[float, float]:
    """Seconds for the folds, the candidate's cross-validation and its tracking; mean AUC."""
    import meguri
    from meguri.train._train import _candidate_run, folds
    from meguri.train._zoo import candidates

    ws = meguri.open_workspace(root, project="bench")
    candidate = candidates(spec.requirements.functional.task, [algorithm])[0]
    started = time.perf_counter()
    with meguri.start_run("train", experiment="bench", workspace=ws) as parent:
        cv = folds(spec, prepared)
        result = _candidate_run(candidate, spec, cv, parent)
    seconds = time.perf_counter() - started
    ws.close()
    return seconds, result.cv["roc_auc"][0]


def _bare_estimator(algorithm: str, params: dict[str, Any], seed: int) -> Any:
    if algorithm == "lightgbm":
        import lightgbm

        return lightgbm.LGBMClassifier(
            **params, subsample_freq=0, random_state=seed, n_jobs=1, deterministic=True,
            force_row_wise=True, verbosity=-1,
        )  # fmt: skip
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegression(
        C=params["C"], class_weight=params["class_weight"], max_iter=1000, random_state=seed
    )
    imputer = SimpleImputer(strategy="median", keep_empty_features=True)
    return make_pipeline(imputer, StandardScaler(), model)


def _bare_scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as skm

    p = proba[:, 1]
    pred = (p >= 0.5).astype(int)
    bins = np.searchsorted(np.linspace(0, 1, 11)[1:-1], p)
    count = np.bincount(bins, minlength=10)
    seen = count > 0
    conf = np.bincount(bins, weights=p, minlength=10)[seen] / count[seen]
    frac = np.bincount(bins, weights=y, minlength=10)[seen] / count[seen]
    return {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, zero_division=0.0),
        "recall": skm.recall_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "roc_auc": skm.roc_auc_score(y, p),
        "pr_auc": skm.average_precision_score(y, p),
        "log_loss": skm.log_loss(y, proba),
        "brier": skm.brier_score_loss(y, p),
        "ece": float(np.sum(count[seen] / len(p) * np.abs(frac - conf))),
    }


def _ordinal(train: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ordinal codes learnt on ``train`` (sorted categories), -1 for unseen: numpy, per column."""
    out_train, out_valid = np.empty(train.shape), np.empty(valid.shape)
    for j in range(train.shape[1]):
        categories, out_train[:, j] = np.unique(train[:, j], return_inverse=True)
        at = np.minimum(np.searchsorted(categories, valid[:, j]), len(categories) - 1)
        out_valid[:, j] = np.where(categories[at] == valid[:, j], at, -1)
    return out_train, out_valid


def bare_side(spec: Any, raw: pl.DataFrame, algorithm: str) -> tuple[float, float]:
    """Seconds for the same folds with scikit-learn/LightGBM alone; mean AUC."""
    from sklearn.model_selection import StratifiedKFold

    from meguri.train._zoo import candidates

    target = spec.requirements.functional.target
    params = candidates(spec.requirements.functional.task, [algorithm])[0].params(None)
    seed, k = spec.model.seed, spec.model.cv_folds
    started = time.perf_counter()
    x_frame = raw.drop(target)
    text = [c for c, t in x_frame.schema.items() if t == pl.String]
    numbers = x_frame.drop(text).to_numpy().astype(np.float64)
    words = x_frame.select(pl.col(text).fill_null("\x00missing")).to_numpy().astype(str)
    y = raw.get_column(target).to_numpy()
    aucs = []
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
    for train_idx, valid_idx in splitter.split(numbers, y):
        codes = _ordinal(words[train_idx], words[valid_idx])
        x_train = np.hstack([numbers[train_idx], codes[0]])
        x_valid = np.hstack([numbers[valid_idx], codes[1]])
        model = _bare_estimator(algorithm, params, seed).fit(x_train, y[train_idx])
        aucs.append(_bare_scores(y[valid_idx], model.predict_proba(x_valid))["roc_auc"])
    return time.perf_counter() - started, float(np.mean(aucs))


def run(rounds: int, folds: int) -> dict[str, Any]:
    import meguri
    from meguri.data import prepare

    spec = _spec(folds)
    with tempfile.TemporaryDirectory() as tmp:
        ws = meguri.open_workspace(Path(tmp) / "data", project="bench")
        prepared = prepare(spec, workspace=ws)
        ws.close()
        raw, root = prepared.raw["train"], Path(tmp)
        figures = {}
        for algorithm in ALGORITHMS:
            times: dict[str, list[float]] = {"meguri": [], "bare": []}
            aucs: dict[str, float] = {}
            sides = {
                "meguri": lambda i, a=algorithm: meguri_side(spec, prepared, a, root / f"{a}{i}"),
                "bare": lambda i, a=algorithm: bare_side(spec, raw, a),
            }
            for side in sides.values():  # warm-up: imports, caches
                side(-1)
            for i in range(rounds):
                order = ["meguri", "bare"] if i % 2 == 0 else ["bare", "meguri"]
                for name in order:
                    seconds, aucs[name] = sides[name](i)
                    times[name].append(seconds)
            median = {k: statistics.median(v) for k, v in times.items()}
            figures[algorithm] = {
                "seconds": times,
                "median_s": median,
                "ratio": median["meguri"] / median["bare"],
                "cv_roc_auc": aucs,
            }
    return {
        "rows": raw.height,
        "folds": folds,
        "rounds": rounds,
        "target_ratio": TARGET_RATIO,
        "figures": figures,
        "python": sys.version.split()[0],
        "machine": platform.platform(),
    }


def report(result: dict[str, Any]) -> bool:
    head = f"{'algorithm':<10} {'meguri s':>9} {'bare s':>8} {'ratio':>6} {'target':>8}  "
    print(f"{result['rows']} rows, {result['folds']} folds, median of {result['rounds']} rounds")
    print(head + "cv roc_auc meguri / bare")
    ok = True
    for name, fig in result["figures"].items():
        passed = fig["ratio"] <= TARGET_RATIO
        ok &= passed
        print(
            f"{name:<10} {fig['median_s']['meguri']:>9.2f} {fig['median_s']['bare']:>8.2f} "
            f"{fig['ratio']:>6.3f} {'<= 1.15':>8}  {fig['cv_roc_auc']['meguri']:.4f} / "
            f"{fig['cv_roc_auc']['bare']:.4f}  {'PASS' if passed else 'FAIL'}"
        )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 round, 2 folds")
    args = parser.parse_args()
    rounds, folds = (1, 2) if args.quick else (args.rounds, args.folds)
    result = run(rounds, folds)
    ok = report(result)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in (f"train_overhead-{stamp}.json", "train_overhead-latest.json"):
        (RESULTS / name).write_text(json.dumps(result, indent=2), encoding="utf-8")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
