"""``meguri train``: the model phase of the spec, with a leaderboard and the gates."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from meguri.errors import SpecError, TrainError

if TYPE_CHECKING:
    from meguri.spec import ProjectSpec
    from meguri.store import Workspace
    from meguri.store.metadata import Run
    from meguri.train._train import TrainResult

console = Console(width=None if sys.stdout.isatty() else 140)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)


def train_cmd(
    experiment: Annotated[str, typer.Option(help="Experiment of the runs.")] = "train",
    from_run: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="An earlier training run: re-run (with the changes given) and compare its best.",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Change a spec setting for this run: KEY=VALUE (YAML value)."),
    ] = None,
    algorithms: Annotated[
        str | None,
        typer.Option(help="Comma-separated algorithms (sets constraints.allowed_algorithms)."),
    ] = None,
    register: Annotated[
        str | None,
        typer.Option(help="Register the best model as the next version of this model name."),
    ] = None,
) -> None:
    """Prepare the data, cross-validate the candidates, evaluate the best, check the gates."""
    from meguri.spec import find_spec_file, save_spec_version
    from meguri.store import open_workspace
    from meguri.train._train import train

    ws = open_workspace()
    text = find_spec_file().read_text(encoding="utf-8")
    changes = _changes(settings or [], algorithms)
    spec = spec_with_changes(text, changes)
    version, _ = save_spec_version(ws.metadata, ws.project.id, text, created_by=ws.user)
    earlier = None if from_run is None else earlier_training_run(from_run, ws)
    tags = {} if earlier is None else {"from_run": earlier.id}
    if changes:
        tags["changes"] = "; ".join(f"{k}={v}" for k, v in changes)
    with console.status("training…") as status:
        result = train(
            spec,
            workspace=ws,
            spec_version_id=version.id,
            experiment=experiment,
            progress=lambda m: status.update(f"{m}…"),
            tags=tags,
        )
    print_result(result)
    _package(result, ws, register)
    if earlier is not None:
        print_comparison(earlier, result, ws)
    if not all(c.passed for c in result.checks):
        raise typer.Exit(1)


def _package(result: TrainResult, ws: Workspace, name: str | None) -> None:
    """Log the best model's package in the run; register it as a version of ``name``."""
    from meguri.registry import register_model
    from meguri.registry._package import log_model

    with console.status("packaging the best model (verified on held-out rows)…"):
        digest = log_model(result, workspace=ws)
    console.print(f"model package logged in run {result.run_id} (model.json sha256 {digest[:12]}…)")
    if name is None:
        console.print(f"register it: `meguri models register {result.run_id} --name NAME`")
        return
    version = register_model(result.run_id, name, workspace=ws)
    console.print(f"registered [bold]{version.ref}[/] ({version.id}), card written")


# -- re-runs with changed settings ---------------------------------------------------------


def _changes(settings: list[str], algorithms: str | None) -> list[tuple[str, str]]:
    out = []
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(
                f"{item!r} is not KEY=VALUE, e.g. model.cv_folds=3", param_hint="--set"
            )
        out.append((key.strip(), value))
    if algorithms is not None:
        names = [a.strip() for a in algorithms.split(",") if a.strip()]
        out.append(("constraints.allowed_algorithms", f"[{', '.join(names)}]"))
    return out


def spec_with_changes(text: str, changes: list[tuple[str, str]]) -> ProjectSpec:
    """The spec ``text`` with each ``(dotted.key, YAML value)`` set, validated like the file
    (errors name the key: the changed spec is shown as ``meguri.yaml (with --set)``)."""
    import yaml

    from meguri.spec import load_yaml, parse_spec

    if not changes:
        return parse_spec(text)
    data = load_yaml(text)
    for key, value in changes:
        _assign(data, key.split("."), load_yaml(value) if value.strip() else None, key)
        _one_folds_setting(data.get("model"), key)
    changed = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return parse_spec(changed, source="meguri.yaml (with --set)")


def _one_folds_setting(model: Any, key: str) -> None:
    """Keep ``cv_folds`` and ``cv`` from both being set: the one just changed wins."""
    if not isinstance(model, dict) or not isinstance(model.get("cv"), dict):
        return
    if "cv_folds" not in model:
        return
    if key == "model.cv_folds":
        model["cv"]["folds"] = model.pop("cv_folds")
    else:
        model["cv"].setdefault("folds", model.pop("cv_folds"))


def _assign(data: Any, path: list[str], value: Any, key: str) -> None:
    node = data
    for part in path[:-1]:
        if not isinstance(node, dict):
            break
        node = node.setdefault(part, {})
    if not isinstance(node, dict):
        raise SpecError(f"--set {key}: a part of it is not a section of the spec; check the key")
    node[path[-1]] = value


def earlier_training_run(ref: str, ws: Workspace) -> Run:
    """The training run ``ref`` names (a candidate's run stands for its parent)."""
    from meguri.train import get_run

    run = get_run(ref, workspace=ws)
    if "best_algorithm" not in run.tags and run.parent_run_id:
        run = get_run(run.parent_run_id, workspace=ws)
    if "best_algorithm" not in run.tags:
        raise TrainError(
            f"--from: {ref!r} ({run.id}) is not a finished `meguri train` run; "
            "`meguri runs leaderboard` lists them"
        )
    return run


def comparison(
    earlier: Run, result: TrainResult, ws: Workspace
) -> tuple[list[Delta], list[tuple[str, str, str]]]:
    """Metric deltas (held-out metrics and the best's cross-validated metric) and the params
    that differ between the earlier run's best and this one's: ``(key, before, after)``."""
    from meguri.train import get_run
    from meguri.train._train import LOWER_IS_BETTER

    best = get_run(earlier.tags["best_run"], workspace=ws)
    before = {
        k: p.value for k, p in earlier.metrics.items() if k.startswith(("validation/", "test/"))
    }
    cv_key = f"cv/{result.metric}_mean"
    if cv_key in best.metrics:
        before[cv_key] = best.metrics[cv_key].value
    after = dict(result.metrics)
    if result.metric in result.best.cv:
        after[cv_key] = result.best.cv[result.metric][0]
    deltas = [
        Delta(
            key,
            before[key],
            after[key],
            _lower_is_better(key, LOWER_IS_BETTER),
        )
        for key in sorted(before.keys() & after.keys())
    ]
    old = {
        "algorithm": earlier.tags["best_algorithm"],
        **{k: v for k, v in best.params.items() if k != "algorithm"},
    }
    old |= {f"train.{k}": v for k, v in earlier.params.items() if k != "transform"}
    new = {"algorithm": result.best.name, **{k: str(v) for k, v in result.best.params.items()}}
    new |= {
        f"train.{k}": v
        for k, v in get_run(result.run_id, workspace=ws).params.items()
        if k != "transform"
    }
    params = [
        (k, old.get(k, "-"), new.get(k, "-"))
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    ]
    return deltas, params


def _lower_is_better(key: str, losses: frozenset[str]) -> bool:
    name = key.rsplit("/", 1)[-1].removesuffix("_mean")
    return name in losses or name.endswith("_difference")


@dataclass(frozen=True)
class Delta:
    key: str
    before: float | None
    after: float | None
    lower_is_better: bool

    @property
    def change(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return self.after - self.before

    @property
    def improved(self) -> bool | None:
        change = self.change
        if change is None or change == 0 or math.isnan(change):
            return None
        return (change < 0) == self.lower_is_better


def print_comparison(earlier: Run, result: TrainResult, ws: Workspace) -> None:
    deltas, params = comparison(earlier, result, ws)
    table = Table(
        title=f"Against {earlier.id} (best {earlier.tags['best_algorithm']})", title_justify="left"
    )
    for col in ("metric", "before", "now", "change"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for d in deltas:
        style = {True: "green", False: "red", None: "white"}[d.improved]
        change = "-" if d.change is None else f"[{style}]{d.change:+.4f}[/]"
        table.add_row(d.key, _fmt(d.before), _fmt(d.after), change)
    console.print(table)
    if params:
        diff = Table(title="Settings that changed", title_justify="left")
        for col in ("param", "before", "now"):
            diff.add_column(col)
        for row in params:
            diff.add_row(*row)
        console.print(diff)
    key = f"test/{result.metric}"
    found = {d.key: d for d in deltas}.get(key)
    if found is not None and found.change is not None:
        ws.metadata.runs.log_batch(
            result.run_id, tags={f"from_run.delta.{key}": f"{found.change:+.6f}"}
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_result(result: TrainResult) -> None:
    board = Table(
        title=f"Leaderboard (cross-validated {result.metric}, best first)", title_justify="left"
    )
    for col in ("#", "algorithm", f"{result.metric} mean ± sd", "fit s", "run"):
        board.add_column(col, justify="left" if col in ("algorithm", "run") else "right")
    for rank, item in enumerate(result.leaderboard, 1):
        mean, sd = item.cv[result.metric]
        board.add_row(
            str(rank), item.name, f"{mean:.4f} ± {sd:.4f}", f"{item.fit_seconds:.1f}", item.run_id
        )
    console.print(board)
    metrics = Table(title=f"{result.best.name} on held-out data", title_justify="left")
    for col in ("metric", "validation", "test", "test 95% interval"):
        metrics.add_column(col, justify="left" if col == "metric" else "right")
    held_out = [k.split("/", 1)[1] for k in result.metrics if k.startswith("test/")]
    for key in sorted(k for k in held_out if f"validation/{k}" in result.metrics):
        low, high = result.intervals.get(key, (float("nan"), float("nan")))
        metrics.add_row(
            key,
            f"{result.metrics[f'validation/{key}']:.4f}",
            f"{result.metrics[f'test/{key}']:.4f}",
            f"[{low:.4f}, {high:.4f}]",
        )
    console.print(metrics)
    if result.fairness is not None:
        _print_fairness(result)
    gates = Table(title="Success criteria (stored as check results)", title_justify="left")
    for col in ("criterion", "on", "requirement", "measured", "result"):
        gates.add_column(col)
    for check in result.checks:
        verdict = "[green]pass[/]" if check.passed else "[red]fail[/]"
        value = "-" if check.value is None else f"{check.value:.4f}"
        gates.add_row(
            check.criterion_id,
            check.stage,
            f"{check.metric} {check.comparison} {check.threshold:g}",
            value,
            verdict,
        )
    console.print(gates)
    console.print(
        f"run {result.run_id}: `meguri runs show {result.run_id}`, `meguri runs list -e train`"
    )


def _print_fairness(result: TrainResult) -> None:
    assert result.fairness is not None
    table = Table(title="Fairness gaps on test (model.fairness)", title_justify="left")
    for col in ("column", "gap", "value", "lowest group", "highest group"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for column, report in result.fairness.columns.items():
        for gap, value in report.gaps.items():
            quantity = _gap_quantity(gap)
            ends = report.extremes.get(quantity, {})
            table.add_row(
                column, gap, f"{value:.4f}", ends.get("lowest", "-"), ends.get("highest", "-")
            )
    console.print(table)


def _gap_quantity(gap: str) -> str:
    if gap.startswith("demographic_parity"):
        return "selection_rate"
    if gap.startswith("equal"):
        return "tpr"
    return gap.removesuffix("_difference")
