"""Tuning benchmark: a 20-trial search through meguri against plain Optuna with ``n_jobs=2``.

    .venv/bin/python bench/tune.py              # 20 trials, 3 rounds, each side in a fresh process
    .venv/bin/python bench/tune.py --quick      # 1 round
    .venv/bin/python bench/tune.py --trials 40 --rounds 5

The search: a random forest on scikit-learn's breast-cancer data (569 rows), 3-fold
cross-validated ROC AUC, over ``n_estimators``, ``max_depth``, ``min_samples_leaf`` and
``max_features``, TPE sampler, seed 0. Both sides run the same objective function:

* ``optuna``: ``optuna.create_study()`` (in-memory storage), ``study.optimize(n_jobs=2)``
  (two threads in one process);
* ``meguri``: ``meguri.train tune(parallelism=2)`` on a fresh workspace (SQLite file store), two
  worker processes of the local executor sharing the journal in the store, each trial a run.

Each side runs in its own fresh interpreter, the sides alternating round by round; BLAS/OpenMP
are capped at one thread per worker on both sides. ``search s`` is the time of the search call
alone (for meguri: including starting the worker processes and recording every run);
``process s`` is the whole child process, imports included. The ratio is meguri / optuna of the
median search time: at most 1.0 meets the issue's target. Results are printed and written as
JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SPACE: list[dict[str, Any]] = [
    {"name": "n_estimators", "kind": "int", "low": 20, "high": 200, "log": True},
    {"name": "max_depth", "kind": "int", "low": 2, "high": 16, "log": True},
    {"name": "min_samples_leaf", "kind": "int", "low": 1, "high": 20, "log": True},
    {"name": "max_features", "kind": "float", "low": 0.1, "high": 1.0},
]


# -- the search both sides run ----------------------------------------------------------------


@functools.cache
def _data() -> tuple[Any, Any]:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(return_X_y=True)  # type: ignore[no-any-return]


def objective(params: dict[str, Any], trial: Any = None) -> float:
    """Mean 3-fold ROC AUC of a random forest with ``params`` (module-level: picklable)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_score

    x, y = _data()
    model = RandomForestClassifier(**params, n_jobs=1, random_state=0)
    return float(cross_val_score(model, x, y, cv=3, scoring="roc_auc").mean())


def _optuna_objective(trial: Any) -> float:
    params = {
        "n_estimators": trial.suggest_int("n_estimators", 20, 200, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 16, log=True),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
        "max_features": trial.suggest_float("max_features", 0.1, 1.0),
    }
    return objective(params, trial)


def run_optuna(trials: int) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(_optuna_objective, n_trials=trials, n_jobs=2)
    seconds = time.perf_counter() - start
    return {"search_s": seconds, "trials": len(study.trials), "best": study.best_value}


def run_meguri(trials: int) -> dict[str, Any]:
    import optuna

    from meguri.store import open_workspace
    from meguri.train import search_runs
    from meguri.train._tune import tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        ws = open_workspace(folder, project="bench")
        start = time.perf_counter()
        result = tune(
            objective, SPACE, study_name="bench", workspace=ws, n_trials=trials, parallelism=2
        )
        seconds = time.perf_counter() - start
        runs = len(search_runs(workspace=ws, max_results=10_000))
        ws.close()
    return {
        "search_s": seconds,
        "trials": len(result.trials),
        "runs": runs,
        "best": result.best_value,
    }


# -- the parent: child processes, rounds, the table --------------------------------------------


def measure(side: str, trials: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    command = [sys.executable, __file__, "--child", side, "--trials", str(trials)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"the {side} side failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report["process_s"] = time.perf_counter() - start
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--child", choices=["optuna", "meguri"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side = run_optuna if args.child == "optuna" else run_meguri
        print(json.dumps(side(args.trials)))
        return
    rounds = 1 if args.quick else args.rounds
    reports: dict[str, list[dict[str, Any]]] = {"optuna": [], "meguri": []}
    for i in range(rounds):
        for side in ("optuna", "meguri") if i % 2 == 0 else ("meguri", "optuna"):
            reports[side].append(measure(side, args.trials))
            print(f"round {i + 1} {side}: {reports[side][-1]}", file=sys.stderr, flush=True)
    summary = _summary(reports, args.trials)
    _print(summary)
    _save(summary)


def _summary(reports: dict[str, list[dict[str, Any]]], trials: int) -> dict[str, Any]:
    median = {
        side: {key: statistics.median(r[key] for r in rows) for key in ("search_s", "process_s")}
        for side, rows in reports.items()
    }
    return {
        "trials": trials,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "median": median,
        "ratio_search": median["meguri"]["search_s"] / median["optuna"]["search_s"],
        "ratio_process": median["meguri"]["process_s"] / median["optuna"]["process_s"],
        "rounds": reports,
    }


def _print(summary: dict[str, Any]) -> None:
    print(f"{summary['trials']}-trial search, {summary['cpus']} CPUs (median of rounds)")
    print(f"{'side':<28}{'search s':>10}{'process s':>11}")
    names = {"optuna": "optuna n_jobs=2 (in-memory)", "meguri": "meguri tune(parallelism=2)"}
    for side, name in names.items():
        row = summary["median"][side]
        print(f"{name:<28}{row['search_s']:>10.2f}{row['process_s']:>11.2f}")
    print(
        f"ratio meguri/optuna: search {summary['ratio_search']:.2f}, "
        f"process {summary['ratio_process']:.2f} (target: search <= 1.00)"
    )


def _save(summary: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(summary, indent=2)
    (RESULTS / f"tune-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(text)
    (RESULTS / "tune-latest.json").write_text(text)


if __name__ == "__main__":
    main()
