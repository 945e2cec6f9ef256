"""``meguri data profile|check|prepare``: the data phase of the spec, step by step or whole.

Importing this module adds the commands to ``meguri data`` (``_data.register`` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from meguri.cli._data import console, data_app
from meguri.cli._here import workspace as _workspace

if TYPE_CHECKING:
    from meguri.data import DatasetProfile, PreparedData, QualityReport
    from meguri.spec import ProjectSpec


def _spec() -> ProjectSpec:
    from meguri.spec import load_spec

    return load_spec()


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def print_profile(prof: DatasetProfile, limit: int = 40) -> None:
    from meguri.data._profile import profile_warnings

    table = Table(
        title=f"Profile: {prof.rows} rows × {len(prof.columns)} columns", title_justify="left"
    )
    for col in ("column", "type", "missing", "distinct", "min", "median", "max", "mean", "std"):
        table.add_column(col, justify="left" if col in ("column", "type") else "right")
    for column in prof.columns[:limit]:
        stats = column.numeric
        cells = [column.name, column.dtype, str(column.missing), str(column.distinct)]
        if stats is not None:
            median = stats.quantiles.get("p50")
            cells += [_num(v) for v in (stats.min, median, stats.max, stats.mean, stats.std)]
        else:
            top = ", ".join(f"{v.value}×{v.count}" for v in column.top[:3])
            cells += [top, "", "", "", ""]
        table.add_row(*cells)
    console.print(table)
    for warning in profile_warnings(prof):
        console.print(f"[yellow]warning[/] {warning.column}: {warning.message}")


def print_quality(report: QualityReport) -> None:
    failed = [r for r in report.results if not r.passed]
    style = {"error": "red", "warning": "yellow"}
    table = Table(
        title=f"Quality: {len(report.results)} checks, {len(failed)} failed", title_justify="left"
    )
    for col in ("check", "columns", "result", "rows", "message"):
        table.add_column(col, overflow="fold")
    for result in report.results:
        state = "pass" if result.passed else result.severity
        colour = "green" if result.passed else style.get(result.severity, "white")
        table.add_row(
            result.name,
            ", ".join(result.columns),
            f"[{colour}]{state}[/]",
            str(result.failing_rows or ""),
            "" if result.passed else result.message,
        )
    console.print(table)


@data_app.command("profile")
def profile_cmd(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@N or dsv-ID.")],
    target: Annotated[str | None, typer.Option(help="Correlate with this column.")] = None,
    html: Annotated[Path | None, typer.Option(help="Also write the HTML report here.")] = None,
) -> None:
    """Profile a dataset version (computed once, stored with the version)."""
    from meguri.data import (
        QualityReport,
        attachment,
        get_version,
        profile_version,
        render_profile_html,
    )

    ws = _workspace()
    version = get_version(ref, workspace=ws)
    with console.status(f"profiling {version.ref}…"):
        prof = profile_version(version, target=target, workspace=ws)
    print_profile(prof)
    if html is not None:
        stored = attachment(version.id, "quality", workspace=ws)
        quality = QualityReport.from_json(stored) if stored else None
        html.write_text(render_profile_html(prof, version.ref, quality=quality), encoding="utf-8")
        console.print(f"wrote the report {html}")


@data_app.command("check")
def check_cmd(ref: Annotated[str, typer.Argument(help="NAME, NAME@N or dsv-ID.")]) -> None:
    """Run the spec's quality checks (and the inferred ones) on a dataset version."""
    from meguri.data import check_version, get_version, profile_version

    ws, spec = _workspace(), _spec()
    version = get_version(ref, workspace=ws)
    with console.status(f"checking {version.ref}…"):
        target = spec.requirements.functional.target
        prof = profile_version(version, target=target, workspace=ws)
        report = check_version(version, spec, data_profile=prof, workspace=ws)
    print_quality(report)
    if report.errors:
        raise typer.Exit(1)


@data_app.command("prepare")
def prepare_cmd(
    source: Annotated[
        str | None, typer.Option(help="Which data source (default: the first).")
    ] = None,
) -> None:
    """Ingest, profile, check, split and prepare the data as the spec declares, with lineage."""
    from meguri.compute import executor
    from meguri.data import prepare

    ws, spec = _workspace(), _spec()
    engine = executor("ray") if spec.pipeline.compute == "ray" else None
    try:
        with console.status("preparing…") as status:
            result = prepare(
                spec,
                source=source,
                workspace=ws,
                engine=engine,
                progress=lambda m: status.update(f"{m}…"),
            )
    finally:
        if engine is not None:
            engine.close()
    print_prepared(result)


def print_prepared(result: PreparedData) -> None:
    print_quality(result.quality)
    table = Table(title=f"Prepared from {result.source.ref}", title_justify="left")
    for col in ("part", "version", "rows", "columns"):
        table.add_column(col, justify="right" if col in ("rows", "columns") else "left")
    for part, version in result.parts.items():
        table.add_row(part, version.ref, str(version.row_count), str(len(version.schema) - 1))
    console.print(table)
    steps = Table(title="Fitted on the training rows", title_justify="left")
    steps.add_column("#", justify="right")
    steps.add_column("step")
    steps.add_column("learned", overflow="fold")
    for item in result.transform.learned():
        learned = {k: v for k, v in item.items() if k not in ("step", "kind", "config")}
        steps.add_row(str(item["step"]), str(item["kind"]), _short(learned))
    console.print(steps)
    console.print(
        f"transform stored as sha256:{result.transform_digest[:16]}…; "
        f"lineage: `meguri data lineage {result.parts['train'].ref}`"
    )


def _short(learned: dict[str, object]) -> str:
    """A one-line digest: small values in full, long lists and mappings by their size."""
    return ", ".join(f"{key}={_brief(value)}" for key, value in learned.items())


def _brief(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        if len(value) > 4:
            return f"[{len(value)} items: {', '.join(map(_brief, value[:3]))}, …]"
        return "[" + ", ".join(map(_brief, value)) + "]"
    if isinstance(value, dict):
        if len(value) > 4:
            return f"{{{len(value)} columns}}"
        return "{" + ", ".join(f"{k}: {_brief(v)}" for k, v in value.items()) + "}"
    return str(value)
