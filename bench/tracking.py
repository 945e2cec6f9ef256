"""Run-tracking benchmark: meguri against MLflow 3.x (SQLite backend), measured in the same run.

    .venv-bench/bin/python bench/tracking.py            # full run (a few minutes on 2 cores)
    .venv-bench/bin/python bench/tracking.py --quick    # smaller sizes, for a smoke check
    make bench                                          # creates .venv-bench, then the above

Every store lives in a temporary folder. MLflow is slow, so it gets fewer calls (rates are
rates). Results print as a table and are written as JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _meguri_side as mg
from _common import (
    ISSUE_MLFLOW_FIGURES,
    SEARCH_FILTER,
    SEARCH_ORDER,
    Figure,
    batch_chunks,
    fmt_value,
    history_points,
    search_population,
    text_table,
    timed_pair,
)

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Sizes:
    metric_calls: int = 100_000
    durable_calls: int = 5_000
    mlflow_calls: int = 1_000
    batch_chunks: int = 200
    mlflow_batch_chunks: int = 20
    search_runs: int = 1_000
    big_search_runs: int = 100_000
    max_results: int = 1_000
    history_points: int = 10_000
    growth: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    repeat: int = 15
    import_tries: int = 7
    mlflow_import_tries: int = 3


QUICK = Sizes(
    metric_calls=20_000,
    durable_calls=1_000,
    mlflow_calls=200,
    batch_chunks=40,
    mlflow_batch_chunks=3,
    search_runs=200,
    big_search_runs=10_000,
    growth=(1_000, 10_000, 100_000),
    repeat=5,
    import_tries=3,
    mlflow_import_tries=1,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the figures --------------------------------------------------------------------------------


def bench_log_metric(ws: Any, ml: Any, sizes: Sizes) -> list[Figure]:
    log(f"log_metric: meguri {sizes.metric_calls:,} buffered, {sizes.durable_calls:,} durable")
    buffered = mg.log_metric_loop(ws, sizes.metric_calls, durable=False, experiment="lm")
    durable = mg.log_metric_loop(ws, sizes.durable_calls, durable=True, experiment="lm-durable")
    theirs, queued = None, None
    if ml is not None:
        log(f"log_metric: MLflow {sizes.mlflow_calls:,} calls, synchronous and queued")
        theirs = ml.log_metric_loop(sizes.mlflow_calls, "lm")
        queued = ml.log_metric_loop(sizes.mlflow_calls, "lm-async", synchronous=False)
    path = "run.log_metric(key, v, step=i) in a loop; timing includes run.end() / mlflow.end_run()"
    return [
        Figure(
            "log_metric, buffered (default)",
            "calls/s",
            buffered["rate"],
            _rate(theirs),
            min_ratio=50,
            path=path,
            extra={"meguri": buffered, "mlflow": theirs},
        ),
        Figure(
            "log_metric, durable=True",
            "calls/s",
            durable["rate"],
            _rate(theirs),
            min_ratio=3,
            path=path,
            extra={"meguri": durable, "mlflow": theirs},
        ),
        Figure(
            "log_metric, buffered vs MLflow async",
            "calls/s",
            buffered["rate"],
            _rate(queued),
            path="as above; MLflow with log_metric(..., synchronous=False), its queue drained "
            "by end_run",
            extra={"meguri": buffered, "mlflow": queued},
        ),
    ]


def _rate(result: dict[str, Any] | None) -> float | None:
    return result["rate"] if result else None


def bench_log_batch(ws: Any, ml: Any, sizes: Sizes) -> list[Figure]:
    chunks = batch_chunks(sizes.batch_chunks)
    log(f"log_batch: meguri {sizes.batch_chunks} chunks of {len(chunks[0]):,} points (x2)")
    buffered = mg.log_batch_chunks(ws, chunks, durable=False, experiment="lb")
    durable = mg.log_batch_chunks(ws, chunks, durable=True, experiment="lb-durable")
    theirs = None
    if ml is not None:
        log(f"log_batch: MLflow {sizes.mlflow_batch_chunks} chunks")
        theirs = ml.log_batch_chunks(chunks[: sizes.mlflow_batch_chunks], "lb")
    rate = _rate(theirs)
    path = "run.log_batch(chunk) / MlflowClient.log_batch(metrics=chunk), 1,000 points a call"
    return [
        Figure(
            "log_batch, buffered (default)",
            "points/s",
            buffered["rate"],
            rate,
            min_ratio=20,
            path=path,
            extra={"meguri": buffered, "mlflow": theirs},
        ),
        Figure(
            "log_batch, durable=True",
            "points/s",
            durable["rate"],
            rate,
            path=path,
            extra={"meguri": durable, "mlflow": theirs},
        ),
    ]


def bench_search(ws: Any, ml: Any, sizes: Sizes) -> list[Figure]:
    population = search_population(sizes.search_runs)
    log(f"search: populating {sizes.search_runs:,} runs through meguri's SDK")
    setup = mg.populate_search_sdk(ws, population, "search")
    their_query, setup_theirs = None, None
    if ml is not None:
        log(f"search: populating {sizes.search_runs:,} runs through MlflowClient")
        exp_id, setup_theirs = ml.populate_search(population, "search")
        their_query = ml.search_query(exp_id, sizes.max_results)
    log("search: timing both, interleaved")
    our_query = mg.search_query(ws, "search", sizes.max_results)
    ours, found, theirs, their_found = timed_pair(
        our_query, their_query, sizes.repeat, sizes.repeat
    )
    ours.update(mg.check_search(found))
    if ml is not None and theirs is not None:
        theirs.update(ml.check_search(their_found))
        _same_answer(ours, theirs)
    n = f"{sizes.search_runs:,}"
    query = f"filter {SEARCH_FILTER!r}, order {SEARCH_ORDER!r}, max_results={sizes.max_results}"
    return [
        Figure(
            f"search {n} runs (median)",
            "s",
            ours["median"],
            theirs and theirs["median"],
            higher_is_better=False,
            min_ratio=10,
            path=f"meguri.search_runs / MlflowClient.search_runs, {query} ({ours['returned']} "
            "returned by each, same order); runs created through each SDK (next row)",
            extra={"meguri": ours, "mlflow": theirs},
        ),
        Figure(
            f"set-up: create {n} runs (SDK)",
            "s",
            setup,
            setup_theirs,
            higher_is_better=False,
            path="start_run + log_params + log_metrics + end / "
            "create_run + log_batch + set_terminated",
        ),
    ]


def _same_answer(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    if ours["returned"] != theirs["returned"] or ours["accs"] != theirs["accs"]:
        raise AssertionError(
            f"meguri and MLflow disagree: {ours['returned']} vs {theirs['returned']} runs, "
            f"top {ours['accs'][:3]} vs {theirs['accs'][:3]}"
        )


def bench_big_search(root: Path, sizes: Sizes) -> list[Figure]:
    ws = mg.open_workspace(root)
    n = sizes.big_search_runs
    log(f"search: bulk-inserting {n:,} runs into a fresh meguri store")
    setup = mg.populate_search_bulk(ws, search_population(n, seed=11), "big")
    log(f"search: {n:,} runs (bulk set-up took {setup:.1f} s)")
    ours, found, _, _ = timed_pair(
        mg.search_query(ws, "big", sizes.max_results), None, sizes.repeat, 0
    )
    ours.update(mg.check_search(found))
    ws.close()
    path = (
        f"meguri.search_runs, filter {SEARCH_FILTER!r}, order {SEARCH_ORDER!r}, max_results="
        f"{sizes.max_results} ({ours['returned']:,} returned); runs inserted in bulk through "
        "meguri's schema (executemany), not through the SDK"
    )
    return [
        Figure(
            f"search {n:,} runs (median, meguri only)",
            "s",
            ours["median"],
            None,
            higher_is_better=False,
            max_seconds=0.1,
            path=path,
            extra={"meguri": ours, "setup_seconds": setup},
        ),
    ]


def bench_history(ws: Any, ml: Any, sizes: Sizes) -> list[Figure]:
    points = history_points(sizes.history_points)
    log(f"history: {len(points):,} points")
    their_read = ml.history_reader(points) if ml is not None else None
    ours, hist, theirs, their_hist = timed_pair(
        mg.history_reader(ws, points), their_read, sizes.repeat, max(3, sizes.repeat // 2)
    )
    mg.check_history(hist, points)
    if ml is not None:
        ml.check_history(their_hist, points)
    ours["points"] = len(points)
    return [
        Figure(
            f"read {len(points):,}-point history (median)",
            "s",
            ours["median"],
            theirs and theirs["median"],
            higher_is_better=False,
            max_seconds=0.02,
            path="meguri.get_metric_history (numpy arrays) / MlflowClient.get_metric_history",
            extra={"meguri": ours, "mlflow": theirs},
        ),
    ]


def import_seconds(statement: str, tries: int, cwd: Path) -> list[float]:
    """Seconds ``statement`` takes in a fresh interpreter (interpreter start-up excluded)."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    out = []
    for _ in range(tries):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd
        )
        out.append(float(done.stdout.strip().splitlines()[-1]))
    return out


def bench_import(cwd: Path, with_mlflow: bool, sizes: Sizes) -> list[Figure]:
    log("import times (fresh interpreters)")
    ours = import_seconds("import meguri", sizes.import_tries, cwd)
    first_use = import_seconds("import meguri; meguri.start_run", sizes.import_tries, cwd)
    theirs = import_seconds("import mlflow", sizes.mlflow_import_tries, cwd) if with_mlflow else []
    best_theirs = min(theirs) if theirs else None
    return [
        Figure(
            "import meguri (best)",
            "s",
            min(ours),
            best_theirs,
            higher_is_better=False,
            max_seconds=0.3,
            path=f"fresh interpreter, best of {len(ours)}; 'import mlflow' best of {len(theirs)}",
            extra={"meguri": ours, "mlflow": theirs},
        ),
        Figure(
            "import meguri + first use (best)",
            "s",
            min(first_use),
            best_theirs,
            higher_is_better=False,
            path="'import meguri; meguri.start_run' (loads the tracking SDK: SQLAlchemy, numpy)",
            extra={"meguri": first_use},
        ),
    ]


def bench_growth(root: Path, sizes: Sizes) -> tuple[list[Figure], str]:
    figures, rates = [], []
    for n in sizes.growth:
        log(f"cost growth: {n:,} buffered log_metric calls in one run")
        ws = mg.open_workspace(root / f"growth-{n}")
        result = mg.log_metric_loop(ws, n, durable=False, experiment="growth")
        ws.close()
        rates.append(result["rate"])
        figures.append(
            Figure(
                f"growth: {n:,} points, buffered",
                "points/s",
                result["rate"],
                path="run.log_metric loop in one run, fresh store, incl. run.end()",
                extra={"meguri": result},
            )
        )
    return figures, growth_verdict(sizes.growth, rates)


def growth_verdict(ns: tuple[int, ...], rates: list[float]) -> str:
    """Linear when the per-point cost at the largest size is < 1.5x the one a size below."""
    costs = [f"{n:,}: {1e6 / r:.2f} µs/point" for n, r in zip(ns, rates, strict=True)]
    ratio = rates[-2] / rates[-1]
    linear = ratio < 1.5
    word = "stays linear" if linear else "grows faster than linear"
    return (
        f"cost growth {word}: per-point cost at {ns[-1]:,} is {ratio:.2f}x that at {ns[-2]:,} "
        f"({'; '.join(costs)}); the smallest size also carries the fixed cost of ending the run"
    )


# -- output -------------------------------------------------------------------------------------


def table(figures: list[Figure]) -> str:
    head = ("figure", "meguri", "mlflow", "ratio", "target", "result")
    rows = [head] + [
        (
            f.name,
            fmt_value(f.meguri, f.unit),
            fmt_value(f.mlflow, f.unit),
            "-" if f.ratio is None else f"{f.ratio:,.1f}x",
            f.target,
            {True: "PASS", False: "FAIL", None: "-"}[f.passed],
        )
        for f in figures
    ]
    return text_table(rows)


def environment(mlflow_version: str | None) -> dict[str, Any]:
    import sqlalchemy

    import meguri

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "meguri": meguri.__version__,
        "mlflow": mlflow_version,
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
    }


def write_json(payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"tracking-{time.strftime('%Y%m%d-%H%M%S')}.json"
    text = json.dumps(payload, indent=2, default=str)
    path.write_text(text)
    (RESULTS / "tracking-latest.json").write_text(text)
    return path


# -- main ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    """Run with ``folder`` as the working directory (MLflow writes ./mlruns by default)."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def run_all(root: Path, sizes: Sizes, with_mlflow: bool) -> tuple[list[Figure], str, Any]:
    ml = None
    if with_mlflow:
        from _mlflow_side import MlflowSide

        (root / "mlflow").mkdir()
        ml = MlflowSide(root / "mlflow")
    ws = mg.open_workspace(root / "meguri")
    figures = bench_import(root, with_mlflow, sizes)
    figures += bench_log_metric(ws, ml, sizes)
    figures += bench_log_batch(ws, ml, sizes)
    figures += bench_history(ws, ml, sizes)
    figures += bench_search(ws, ml, sizes)
    ws.close()
    figures += bench_big_search(root / "meguri-big", sizes)
    growth, verdict = bench_growth(root, sizes)
    return figures + growth, verdict, ml and ml.version


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke check)")
    parser.add_argument("--no-mlflow", action="store_true", help="measure meguri alone")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="meguri-bench-") as tmp, inside(Path(tmp)):
        figures, verdict, mlflow_version = run_all(Path(tmp), sizes, not args.no_mlflow)
    env = environment(mlflow_version)
    print(
        f"\nmeguri {env['meguri']} vs MLflow {env['mlflow']} (SQLite {env['sqlite']}, "
        f"Python {env['python']}, {env['cpus']} CPUs){' [--quick]' if args.quick else ''}\n"
    )
    print(table(figures))
    print(f"\n{verdict}")
    print("\nhow each figure was measured:")
    for f in figures:
        if f.path:
            print(f"  - {f.name}: {f.path}")
    elapsed = time.perf_counter() - started
    path = write_json(
        {
            "environment": env,
            "quick": args.quick,
            "sizes": sizes.__dict__,
            "figures": [f.as_json() for f in figures],
            "growth": verdict,
            "issue_mlflow_figures": ISSUE_MLFLOW_FIGURES,
            "seconds": elapsed,
        }
    )
    print(f"\n{elapsed:.0f} s in all; results in {path}")
    failed = [f.name for f in figures if f.passed is False]
    if failed:
        print(f"targets missed: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
