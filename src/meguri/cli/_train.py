"""``meguri train``: the model phase of the spec, with a leaderboard and the gates."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from meguri.train._train import TrainResult

console = Console(width=None if sys.stdout.isatty() else 140)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)


def train_cmd(
    experiment: Annotated[str, typer.Option(help="Experiment of the runs.")] = "train",
) -> None:
    """Prepare the data, cross-validate the candidates, evaluate the best, check the gates."""
    from meguri.spec import find_spec_file, load_spec, save_spec_version
    from meguri.store import open_workspace
    from meguri.train._train import train

    spec = load_spec()
    ws = open_workspace()
    text = find_spec_file().read_text(encoding="utf-8")
    version, _ = save_spec_version(ws.metadata, ws.project.id, text, created_by=ws.user)
    with console.status("training…") as status:
        result = train(
            spec,
            workspace=ws,
            spec_version_id=version.id,
            experiment=experiment,
            progress=lambda m: status.update(f"{m}…"),
        )
    print_result(result)
    if not all(c.passed for c in result.checks):
        raise typer.Exit(1)


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
    for key in sorted(k.split("/", 1)[1] for k in result.metrics if k.startswith("test/")):
        low, high = result.intervals.get(key, (float("nan"), float("nan")))
        metrics.add_row(
            key,
            f"{result.metrics[f'validation/{key}']:.4f}",
            f"{result.metrics[f'test/{key}']:.4f}",
            f"[{low:.4f}, {high:.4f}]",
        )
    console.print(metrics)
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
