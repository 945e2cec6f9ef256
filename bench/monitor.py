"""Drift benchmark: meguri vs Evidently 0.7's DataDriftPreset vs a plain numpy/scipy version.

::

    .venv-bench/bin/python bench/monitor.py                      # 10k, 100k and 1M rows a side
    .venv-bench/bin/python bench/monitor.py --rows 100000        # largest size 100k
    .venv-bench/bin/python bench/monitor.py --no-evidently       # meguri and numpy only

A synthetic reference/current pair (seeded): 20 numeric and 5 categorical columns (normal,
lognormal, uniform, gamma, Student t, integer ages, a 5-valued count, a zero-inflated amount,
columns with NaN and nulls; 3 to 60 categories, a yes/no column), drift injected in 5 numeric
columns and 1 categorical. The pair is written to Parquet once per size; each tool then runs
in its own fresh process that imports its libraries, records its memory (RSS), loads the
Parquet files and runs the check. Measured around the check alone: CPU seconds
(``getrusage(RUSAGE_SELF)`` user + system, all threads), wall seconds; over the whole process:
peak RSS (``ru_maxrss``). "Data" is what the loaded data occupies: the RSS growth while loading
(the Parquet files, and the reference JSON for meguri); pandas' ``memory_usage(deep=True)`` and
Polars' ``estimated_size()`` are recorded beside it in the JSON (the latter leaves out Polars'
16-byte string views), and the table notes the frames' Arrow buffer sizes (Polars' Parquet
reader holds some 10-25% more than those right after loading). "mem/data" is (peak RSS - RSS
after the imports) / data: the process's memory beyond its libraries over the data it holds,
the target being at most 1.2.

- **evidently**: ``Report([DataDriftPreset()], include_tests=True).run(current, reference)``
  on pandas frames with an explicit ``DataDefinition`` (the numeric and categorical columns);
  the flagged columns are its failed "Value Drift for column" tests. Evidently 0.7.23 does not
  import under pandas 3 (``infer_dtype_from_object`` is gone), so its process puts pandas 2
  first on ``sys.path``: ``.venv-bench/bin/pip install --target .venv-bench/pandas2
  'pandas>=2.2,<3' pytz --no-deps`` (once).
- **numpy**: the same rule written plainly (scipy's ``wasserstein_distance``/``ks_2samp``/
  ``jensenshannon``/``chisquare``, ``np.unique`` for the distinct values) on both raw sides.
- **meguri build**: ``DriftReference.from_frame`` on the reference rows, once (at packaging).
- **meguri check**: ``drift_report(DriftReference.from_json(...), current, DriftSpec())``: the
  current side only, the reference from its JSON.
- **rule check** (with Evidently): seven small mixed pairs around Evidently's 1,000-row
  boundary (NaN, a value unseen in the reference, columns of 2 to 8 values, text): the method,
  score and decision of every column, Evidently's against meguri's.

Prints one table per size and the scaling; writes ``bench/results/monitor-<time>.json`` and
``monitor-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PANDAS2 = HERE.parent / ".venv-bench" / "pandas2"
NUMERIC = [f"n{i:02d}" for i in range(20)]
CATEGORICAL = [f"c{i}" for i in range(5)]
DRIFTED = ("n00", "n03", "n06", "n07", "n12", "c0")
"""Where drift is injected (5 numeric columns, 1 categorical)."""


# -- data --------------------------------------------------------------------------------------


def make_side(rows: int, seed: int, drift: bool) -> Any:
    """One side of the pair; ``drift`` moves the columns of :data:`DRIFTED`."""
    import numpy as np
    import polars as pl

    g = np.random.default_rng(seed)
    d = 1.0 if drift else 0.0
    zero = g.random(rows) < 0.3
    amount = np.where(zero, 0.0, g.lognormal(3, 1, rows))
    with_nan = g.normal(50, 10, rows)
    with_nan[g.random(rows) < 0.05] = np.nan
    numeric = {
        "n00": g.normal(0.5 * d, 1, rows),
        "n01": g.normal(10, 3, rows),
        "n02": g.lognormal(0, 0.8, rows),
        "n03": g.lognormal(0.4 * d, 0.8, rows),
        "n04": g.uniform(0, 100, rows),
        "n05": g.gamma(2, 2, rows),
        "n06": g.integers(18, 90, rows) + 6 * d,
        "n07": g.choice(5, rows, p=[0.1, 0.2, 0.4, 0.2, 0.1] if not drift else [0.3] + [0.175] * 4),
        "n08": g.beta(2, 5, rows),
        "n09": with_nan,
        "n10": amount,
        "n11": g.standard_t(5, rows),
        "n12": g.exponential(2 + 1.0 * d, rows),
        "n13": g.integers(0, 1_000_000, rows).astype(np.float64),
        "n14": g.normal(0, 1, rows) * g.normal(1, 0.1, rows),
        "n15": g.uniform(-1, 1, rows) ** 3,
        "n16": g.poisson(3, rows),
        "n17": g.normal(100, 1, rows).round(1),
        "n18": g.weibull(1.5, rows),
        "n19": g.laplace(0, 2, rows),
    }
    words = np.array([f"v{i}" for i in range(60)])
    city = words[:10][g.choice(10, rows, p=np.arange(10, 0, -1) / 55)]
    categorical = {
        "c0": np.array(["red", "green", "blue"])[
            g.choice(3, rows, p=[0.5, 0.3, 0.2] if not drift else [0.3, 0.3, 0.4])
        ],
        "c1": city,
        "c2": words[g.zipf(1.6, rows) % 60],
        "c3": np.where(g.random(rows) < 0.2, "yes", "no"),
        "c4": np.array(["a", "b", "c", "d", "e"])[g.integers(0, 5, rows)],
    }
    frame = pl.DataFrame({**numeric, **categorical})
    nulls = pl.Series(g.random(rows) < 0.02)
    return frame.with_columns(pl.when(nulls).then(None).otherwise(pl.col("c4")).alias("c4"))


def write_pair(rows: int, folder: Path) -> tuple[Path, Path]:
    ref, cur = folder / f"reference-{rows}.parquet", folder / f"current-{rows}.parquet"
    if not ref.exists():
        make_side(rows, 1, drift=False).write_parquet(ref)
        make_side(rows, 2, drift=True).write_parquet(cur)
    return ref, cur


# -- the children ------------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def clock() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime


def measured(work: Any) -> tuple[dict[str, float], Any]:
    wall0, cpu0 = clock()
    result = work()
    wall1, cpu1 = clock()
    return {"wall_s": wall1 - wall0, "cpu_s": cpu1 - cpu0}, result


def child_evidently(ref_path: str, cur_path: str) -> dict[str, Any]:
    sys.path.insert(0, str(PANDAS2))
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently import __version__ as version
    from evidently.presets import DataDriftPreset

    base = rss_mb()
    ref, cur = pd.read_parquet(ref_path), pd.read_parquet(cur_path)
    loaded = rss_mb()
    data = ref.memory_usage(deep=True).sum() + cur.memory_usage(deep=True).sum()
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)

    def work() -> Any:
        current = Dataset.from_pandas(cur, data_definition=definition)
        reference = Dataset.from_pandas(ref, data_definition=definition)
        return Report([DataDriftPreset()], include_tests=True).run(current, reference).dict()

    times, snapshot = measured(work)
    prefix = "Value Drift for column "
    flagged = [t["name"][len(prefix) :] for t in snapshot["tests"] if t["name"].startswith(prefix)]
    flagged = [n for n, t in zip(flagged, _value_tests(snapshot), strict=True) if t == "FAIL"]
    scores = {
        m["config"]["column"]: [m["config"]["method"], m["value"]]
        for m in snapshot["metrics"]
        if m["config"]["type"].endswith("ValueDrift")
    }
    extra = {"version": version, "pandas": pd.__version__, "scores": scores}
    return _result(times, base, loaded, data, sorted(flagged), extra)


def _value_tests(snapshot: dict[str, Any]) -> list[str]:
    prefix = "Value Drift for column "
    return [t["status"] for t in snapshot["tests"] if t["name"].startswith(prefix)]


def child_numpy(ref_path: str, cur_path: str) -> dict[str, Any]:
    import numpy as np
    import polars as pl
    from scipy import stats
    from scipy.spatial import distance

    base = rss_mb()
    ref, cur = pl.read_parquet(ref_path), pl.read_parquet(cur_path)
    loaded = rss_mb()
    data = ref.estimated_size() + cur.estimated_size()

    def present(frame: Any, name: str) -> Any:
        values = frame.get_column(name).drop_nulls().to_numpy()
        return values[np.isfinite(values)] if values.dtype.kind == "f" else values

    def one(name: str) -> tuple[str, float, bool]:
        a, b = present(ref, name), present(cur, name)
        keys = np.unique(np.concatenate([a, b]))
        numeric = name in NUMERIC
        if len(a) <= 1000:
            raise SystemExit("the plain version covers references above 1,000 rows")
        if numeric and len(keys) > 5:
            score = stats.wasserstein_distance(a, b) / max(float(np.std(a)), 0.001)
            return "wasserstein", score, score >= 0.1
        ref_counts = np.unique(a, return_counts=True)
        cur_counts = np.unique(b, return_counts=True)
        r = np.zeros(len(keys))
        c = np.zeros(len(keys))
        r[np.searchsorted(keys, ref_counts[0])] = ref_counts[1]
        c[np.searchsorted(keys, cur_counts[0])] = cur_counts[1]
        score = float(distance.jensenshannon(r / len(a), c / len(b)))
        return "jensenshannon", score, score >= 0.1

    times, results = measured(lambda: {n: one(n) for n in NUMERIC + CATEGORICAL})
    flagged = sorted(n for n, (_, _, drifted) in results.items() if drifted)
    scores = {n: [m, s] for n, (m, s, _) in results.items()}
    return _result(times, base, loaded, data, flagged, {"scores": scores})


def child_meguri_build(ref_path: str, out_path: str) -> dict[str, Any]:
    import polars as pl

    from meguri.data import DriftReference

    base = rss_mb()
    ref = pl.read_parquet(ref_path)
    loaded = rss_mb()
    data = ref.estimated_size()
    times, reference = measured(lambda: DriftReference.from_frame(ref).to_json())
    Path(out_path).write_bytes(reference)
    return _result(times, base, loaded, data, [], {"reference_json_bytes": len(reference)})


def child_meguri_check(reference_path: str, cur_path: str) -> dict[str, Any]:
    import polars as pl

    from meguri.data import DriftReference
    from meguri.monitor._drift import drift_report
    from meguri.spec import DriftSpec

    base = rss_mb()
    cur = pl.read_parquet(cur_path)
    body = Path(reference_path).read_bytes()
    loaded = rss_mb()
    data = cur.estimated_size() + len(body)

    def work() -> Any:
        return drift_report(DriftReference.from_json(body), cur, DriftSpec())

    times, report = measured(work)
    scores = {c.name: [c.method, c.statistic] for c in report.columns}
    return _result(times, base, loaded, data, sorted(report.drifted), {"scores": scores})


_METHODS = {
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
}
_SCENARIOS = ((300, 400, 0.3), (900, 5000, 0.2), (1000, 300, 0.0), (1200, 800, 0.4))
_SCENARIOS += ((5000, 20000, 0.1), (10500, 700, 0.5), (9000, 9000, 0.0))


def child_rule(_first: str, _second: str) -> dict[str, Any]:
    """Evidently and meguri on small mixed pairs around the 1,000-row boundary: the method,
    score and decision of every column (NaN, a value unseen in the reference, 2 to 8 values)."""
    sys.path.insert(0, str(PANDAS2))
    import numpy as np
    import polars as pl
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from meguri.data import DriftReference
    from meguri.monitor._drift import drift_report
    from meguri.spec import DriftSpec

    g = np.random.default_rng(0)
    numeric, categorical = ["x", "few", "two", "ints", "sparse"], ["word", "yes_no"]
    rows = []
    for n_ref, n_cur, shift in _SCENARIOS:
        ref, cur = _rule_side(g, n_ref, 0.0), _rule_side(g, n_cur, shift)
        definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
        snapshot = (
            Report([DataDriftPreset()], include_tests=True)
            .run(
                Dataset.from_pandas(cur, data_definition=definition),
                Dataset.from_pandas(ref, data_definition=definition),
            )
            .dict()
        )
        theirs = {
            m["config"]["column"]: (_METHODS[m["config"]["method"]], m["value"])
            for m in snapshot["metrics"]
            if m["config"]["type"].endswith("ValueDrift")
        }
        names = [t["name"] for t in snapshot["tests"] if t["name"].startswith("Value Drift")]
        flags = dict(
            zip((n.rsplit(" ", 1)[-1] for n in names), _value_tests(snapshot), strict=True)
        )
        reference = DriftReference.from_frame(pl.from_pandas(ref))
        for column in drift_report(reference, pl.from_pandas(cur), DriftSpec()).columns:
            method, score = theirs[column.name]
            rows.append(
                {
                    "reference_rows": n_ref,
                    "column": column.name,
                    "evidently": [method, score, flags[column.name] == "FAIL"],
                    "meguri": [column.method, column.statistic, column.drifted],
                }
            )
    return {"columns": rows}


def _rule_side(g: Any, n: int, shift: float) -> Any:
    import numpy as np
    import pandas as pd

    x = g.normal(shift, 1, n)
    x[g.random(n) < 0.05] = np.nan
    few = g.choice(5, n).astype(float)
    if shift:
        few[: n // 50] = 7.0  # a sixth value, unseen in the reference
    return pd.DataFrame(
        {
            "x": x,
            "few": few,
            "two": g.choice([3.0, 9.0], n, p=[0.7 - shift / 5, 0.3 + shift / 5]),
            "ints": g.integers(0, 8, n).astype(float),
            "sparse": np.where(g.random(n) < 0.9, np.nan, g.normal(0, 1, n)),
            "word": g.choice(["a", "b", "c", "zz"] if shift else ["a", "b", "c"], n),
            "yes_no": g.choice(["yes", "no"], n, p=[0.5 + shift / 4, 0.5 - shift / 4]),
        }
    )


def render_rule(result: dict[str, Any]) -> str:
    rows = result["columns"]
    methods = sum(r["evidently"][0] == r["meguri"][0] for r in rows)
    decisions = sum(r["evidently"][2] == r["meguri"][2] for r in rows)
    gaps = [abs(r["evidently"][1] - r["meguri"][1]) for r in rows]
    exact = sum(
        g <= 1e-9 * max(1.0, abs(r["evidently"][1])) for g, r in zip(gaps, rows, strict=True)
    )
    return (
        f"\nrule check vs Evidently ({len(_SCENARIOS)} pairs of 300 to 20,000 rows, "
        f"{len(rows)} columns): same method {methods}/{len(rows)}, same decision "
        f"{decisions}/{len(rows)}, same score to 1e-9 {exact}/{len(rows)}, largest score "
        f"difference {max(gaps):.1e} (quantile sketch, references over 2,000 values)"
    )


def _result(
    times: dict[str, float],
    base: float,
    loaded: float,
    estimated: float,
    flagged: list[str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """``data_mb``: what the loaded frames occupy (RSS growth while loading); the libraries'
    own estimate is kept beside (Polars' ``estimated_size`` leaves out its 16-byte string
    views, 15 MB a text column of a million rows)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    data = loaded - base
    return {
        **times,
        "rss_after_imports_mb": base,
        "rss_after_load_mb": loaded,
        "peak_rss_mb": peak,
        "data_mb": data,
        "estimated_data_mb": estimated / 2**20,
        "mem_over_data": (peak - base) / data,
        "flagged": flagged,
        **extra,
    }


CHILDREN = {
    "evidently": child_evidently,
    "numpy": child_numpy,
    "meguri-build": child_meguri_build,
    "meguri-check": child_meguri_check,
    "rule": child_rule,
}


def run_child(kind: str, first: Path, second: Path) -> dict[str, Any]:
    env = {**os.environ, "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}
    command = [sys.executable, str(Path(__file__)), "--child", kind, str(first), str(second)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- the parent --------------------------------------------------------------------------------


def measure_size(rows: int, folder: Path, evidently: bool) -> dict[str, Any]:
    log(f"{rows:,} rows a side: writing the pair")
    ref, cur = write_pair(rows, folder)
    reference_json = folder / f"reference-{rows}.json"
    sides: dict[str, Any] = {}
    log("  meguri build")
    sides["meguri-build"] = run_child("meguri-build", ref, reference_json)
    log("  meguri check")
    sides["meguri-check"] = run_child("meguri-check", reference_json, cur)
    log("  numpy/scipy")
    sides["numpy"] = run_child("numpy", ref, cur)
    if evidently:
        log("  evidently (minutes at 1M rows)")
        sides["evidently"] = run_child("evidently", ref, cur)
    return {
        "rows": rows,
        "sides": sides,
        "arrow_mb": {"reference": arrow_mb(ref), "current": arrow_mb(cur)},
    }


def arrow_mb(path: Path) -> float:
    """The Arrow buffers of a Parquet file once loaded (Polars' string views included)."""
    import polars as pl

    frame = pl.read_parquet(path)
    return float(frame.to_arrow(compat_level=pl.CompatLevel.newest()).nbytes) / 2**20


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def render(result: dict[str, Any]) -> str:
    sides = result["sides"]
    evidently = sides.get("evidently")
    reference = set(evidently["flagged"]) if evidently else set(DRIFTED)
    lines = [
        f"\n{result['rows']:,} rows a side (flags compared with "
        f"{'Evidently' if evidently else 'the injected drift'})",
        f"{'tool':<14}{'CPU s':>9}{'wall s':>9}{'CPU ratio':>11}{'wall ratio':>11}"
        f"{'peak MB':>9}{'data MB':>9}{'mem/data':>9}  flagged",
    ]
    for name in ("evidently", "numpy", "meguri-check", "meguri-build"):
        side = sides.get(name)
        if side is None:
            continue
        cpu_ratio = wall_ratio = "-"
        if evidently and name != "evidently":
            cpu_ratio = f"{evidently['cpu_s'] / max(side['cpu_s'], 1e-9):.1f}x"
            wall_ratio = f"{evidently['wall_s'] / max(side['wall_s'], 1e-9):.1f}x"
        same = (
            ""
            if name == "meguri-build"
            else (" (same)" if set(side["flagged"]) == reference else " (DIFFERENT)")
        )
        flagged = ", ".join(side["flagged"]) if name != "meguri-build" else "(reference built)"
        lines.append(
            f"{name:<14}{side['cpu_s']:>9.2f}{side['wall_s']:>9.2f}{cpu_ratio:>11}{wall_ratio:>11}"
            f"{side['peak_rss_mb']:>9.0f}{side['data_mb']:>9.0f}{side['mem_over_data']:>9.2f}"
            f"  {flagged}{same}"
        )
    arrow = result["arrow_mb"]
    lines.append(
        f"  Arrow buffers of the frames: reference {arrow['reference']:.0f} MB, current "
        f"{arrow['current']:.0f} MB (data MB above: RSS growth while loading)"
    )
    if evidently:
        lines.append(f"  largest |score difference| meguri vs Evidently: {score_gap(sides):.2e}")
    return "\n".join(lines)


def score_gap(sides: dict[str, Any]) -> float:
    ours, theirs = sides["meguri-check"]["scores"], sides["evidently"]["scores"]
    return max(abs(ours[n][1] - theirs[n][1]) for n in ours if n in theirs)


def render_scaling(results: list[dict[str, Any]]) -> str:
    lines = ["\nscaling (CPU seconds per million rows a side)"]
    for name in ("meguri-check", "meguri-build", "numpy", "evidently"):
        cells = []
        for result in results:
            side = result["sides"].get(name)
            if side is not None:
                per_million = side["cpu_s"] / result["rows"] * 1e6
                cells.append(f"{result['rows']:,}: {side['cpu_s']:.2f} s ({per_million:.2f} s/M)")
        if cells:
            lines.append(f"  {name:<13} " + "; ".join(cells))
    return "\n".join(lines)


def targets(results: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, at the largest size run (and at 100k rows for the 1 s one)."""
    out = []
    largest = results[-1]["sides"]
    at = f"at {results[-1]['rows']:,} rows"
    check, evidently = largest["meguri-check"], largest.get("evidently")
    if evidently:
        same = set(check["flagged"]) == set(evidently["flagged"])
        out.append(f"flags exactly Evidently's columns {at}: {'PASS' if same else 'FAIL'}")
        ratio = evidently["cpu_s"] / check["cpu_s"]
        verdict = "PASS" if ratio >= 10 else "FAIL"
        out.append(f">= 10x less CPU than Evidently {at}: {ratio:.0f}x {verdict}")
    ok = check["mem_over_data"] <= 1.2
    verdict = "PASS" if ok else "FAIL"
    out.append(f"memory <= 1.2x the data {at}: {check['mem_over_data']:.2f} {verdict}")
    for result in results:
        if result["rows"] == 100_000:
            wall = result["sides"]["meguri-check"]["wall_s"]
            out.append(f"100k rows under 1 s: {wall:.2f} s {'PASS' if wall < 1 else 'FAIL'}")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="largest size (rows a side)")
    parser.add_argument("--no-evidently", action="store_true", help="skip Evidently")
    parser.add_argument("--data", type=Path, default=None, help="folder for the Parquet pairs")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "FIRST", "SECOND"), default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        kind, first, second = args.child
        print(json.dumps(CHILDREN[kind](first, second)))
        return 0
    sizes = sorted({n for n in (10_000, 100_000, args.rows) if n <= args.rows})
    evidently = not args.no_evidently
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="meguri-bench-monitor-") as scratch:
        folder = args.data or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        results = []
        for rows in sizes:
            results.append(measure_size(rows, folder, evidently))
            print(render(results[-1]), flush=True)
    print(render_scaling(results))
    rule = None
    if evidently:
        log("rule check against Evidently around the 1,000-row boundary")
        rule = run_child("rule", folder, folder)
        print(render_rule(rule))
    print("\n" + "\n".join(targets(results)))
    payload = {"sizes": results, "rule": rule, "environment": environment(), "drifted": DRIFTED}
    path = write_json(payload)
    print(f"\n{time.perf_counter() - started:.0f} s in all; results in {path}")
    return 0


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "command": " ".join(sys.argv),
    }


def write_json(payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"monitor-{stamp}.json"
    text = json.dumps(payload, indent=2, default=str)
    path.write_text(text)
    (RESULTS / "monitor-latest.json").write_text(text)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
