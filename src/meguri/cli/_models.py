"""``meguri models list|show|register|promote|alias|archive|card|export``: the model registry."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from meguri.cli._here import workspace as _workspace

if TYPE_CHECKING:
    from meguri.registry import GateReport
    from meguri.store.metadata import ModelEvent, ModelVersion

models_app = typer.Typer(
    help="The model registry: versions, aliases, gated promotion.", no_args_is_help=True
)
console = Console(width=None if sys.stdout.isatty() else 160)

_REF_HELP = "NAME, NAME@ALIAS, NAME@VERSION, NAME@latest or a version id (mv-…)."


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


def _when(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")


def _gates(report: GateReport) -> str:
    if not report.results:
        return "[yellow]none[/]"
    if report.passed:
        return f"[green]pass[/] ({len(report.results)})"
    return f"[red]fail[/] ({len(report.failing)}/{len(report.results)})"


def _status(version: ModelVersion) -> str:
    return "[green]ready[/]" if version.status.value == "ready" else "[dim]archived[/]"


def _headline(metrics: dict[str, float], count: int = 2) -> str:
    keys = sorted(metrics, key=lambda k: (not k.startswith("test/"), k))[:count]
    return ", ".join(f"{k} {metrics[k]:.4g}" for k in keys) or "-"


@models_app.command("list")
def list_cmd(
    all_models: Annotated[
        bool, typer.Option("--all", help="Also models whose versions are all archived.")
    ] = False,
) -> None:
    """The registered models: latest version, aliases, size of their history."""
    from meguri.registry import list_models

    ws = _workspace()
    found = list_models(workspace=ws, include_archived=all_models)
    if not found:
        console.print("No models yet. Train with `meguri train`, then `meguri models register`.")
        return
    table = Table(title=f"Models of project {ws.project.name}")
    for col in ("name", "versions", "latest", "aliases", "metrics", "created"):
        table.add_column(col)
    repo = ws.metadata.models
    for model in found:
        versions = repo.versions(model.id)
        latest = repo.latest(model.id)
        aliases = ", ".join(f"{a.alias} -> {a.version}" for a in repo.aliases(model.id))
        cells = [model.name, str(len(versions)), str(latest.version) if latest else "-"]
        cells += [aliases or "-", _headline(latest.metrics) if latest else "-"]
        table.add_row(*cells, _when(model.created_at))
    console.print(table)


@models_app.command("show")
def show_cmd(ref: Annotated[str, typer.Argument(help=_REF_HELP)]) -> None:
    """A model's versions (with their gates), aliases and history; details of one version."""
    from meguri.registry import check_gates, get_model_version

    ws = _workspace()
    chosen = get_model_version(ref, workspace=ws)
    repo = ws.metadata.models
    model = repo.get_model(ws.project.id, chosen.name)
    table = Table(
        title=f"Model {model.name}" + (f": {model.description}" if model.description else "")
    )
    for col in ("version", "id", "status", "aliases", "metrics", "gates", "run", "created"):
        table.add_column(col)
    for version in repo.versions(model.id):
        gates = _gates(check_gates(version.id, workspace=ws))
        mark = "*" if version.id == chosen.id else ""
        table.add_row(
            f"{version.version}{mark}",
            version.id,
            _status(version),
            ", ".join(version.aliases) or "-",
            _headline(version.metrics),
            gates,
            version.run_id,
            _when(version.created_at),
        )
    console.print(table)
    _show_version(chosen, check_gates(chosen.id, workspace=ws))
    _show_events(repo.events(model.id))


def _show_version(version: ModelVersion, report: GateReport) -> None:
    head = Table.grid(padding=(0, 2))
    for label, value in (
        ("version", f"{version.ref} ({version.id})"),
        ("status", _status(version)),
        ("task", version.task or "-"),
        ("runtime", version.runtime or "-"),
        ("package", f"sha256:{version.package_digest}"),
        ("run", version.run_id),
        ("spec version", version.spec_version_id or "-"),
        ("description", version.description or "-"),
        ("tags", ", ".join(f"{k}={v}" for k, v in sorted(version.tags.items())) or "-"),
        ("by", f"{version.created_by}, {_when(version.created_at)}"),
    ):
        head.add_row(f"[bold]{label}[/]", value)
    console.print(head)
    metrics = Table(title="metrics", title_justify="left", show_header=False)
    for key in sorted(version.metrics):
        metrics.add_row(key, f"{version.metrics[key]:.6g}")
    if version.metrics:
        console.print(metrics)
    _show_gates(report)


def _show_gates(report: GateReport) -> None:
    if not report.results:
        console.print("[yellow]gates:[/] no success-criterion results recorded for its run")
        return
    table = Table(title="gates (latest result per criterion)", title_justify="left")
    for col in ("criterion", "stage", "metric", "value", "needs", "result"):
        table.add_column(col)
    for r in report.results:
        value = "-" if r.value is None else f"{r.value:.6g}"
        verdict = "[green]pass[/]" if r.passed else "[red]fail[/]"
        needs = f"{r.comparison} {r.threshold:g}"
        table.add_row(r.criterion_id, r.stage, r.metric, value, needs, verdict)
    console.print(table)


def _show_events(events: list[ModelEvent]) -> None:
    table = Table(title="history", title_justify="left")
    for col in ("when", "event", "version", "by", "detail"):
        table.add_column(col)
    numbers: dict[str, str] = {}
    for event in events:
        if event.kind == "registered" and event.version_id:
            numbers[event.version_id] = str(len(numbers) + 1)
    for event in events:
        detail = _detail(event.detail)
        version = numbers.get(event.version_id or "", event.version_id or "-")
        table.add_row(_when(event.created_at), event.kind, version, event.created_by, detail)
    console.print(table)


def _detail(detail: dict[str, object]) -> str:
    shown = []
    for key, value in sorted(detail.items()):
        if value is None or key == "checks":
            continue
        if key == "failing" and isinstance(value, list):
            value = " ".join(str(f.get("criterion")) for f in value if isinstance(f, dict))
        elif key.endswith("digest"):
            value = f"{str(value)[:12]}…"
        shown.append(f"{key}={value}")
    return ", ".join(shown)


@models_app.command("register")
def register_cmd(
    run: Annotated[str, typer.Argument(help="The training run: ID, unique ID prefix or name.")],
    name: Annotated[str, typer.Option("--name", "-n", help="The model's name.")],
    description: Annotated[str | None, typer.Option(help="What this version is.")] = None,
) -> None:
    """Register the model package a training run logged as the next version of NAME."""
    from meguri.registry import register_model

    version = register_model(run, name, workspace=_workspace(), description=description)
    console.print(f"registered [bold]{version.ref}[/] ({version.id}) from run {version.run_id}")


@models_app.command("promote")
def promote_cmd(
    ref: Annotated[str, typer.Argument(help=_REF_HELP)],
    to: Annotated[str, typer.Option("--to", help="The alias to point at it.")] = "production",
    override: Annotated[
        str | None,
        typer.Option("--override", help="Promote despite failing gates; the reason is recorded."),
    ] = None,
) -> None:
    """Point an alias (production by default) at a version once its gates pass."""
    from meguri.registry import promote

    version = promote(ref, to, override_reason=override, workspace=_workspace())
    note = " [yellow](gates overridden)[/]" if override else ""
    console.print(f"{to} -> [bold]{version.ref}[/] ({version.id}){note}")


@models_app.command("alias")
def alias_cmd(
    ref: Annotated[str, typer.Argument(help=_REF_HELP)],
    alias: Annotated[str, typer.Argument(help="e.g. staging, champion.")],
    remove: Annotated[bool, typer.Option("--remove", help="Remove the alias instead.")] = False,
) -> None:
    """Point ALIAS at a version (or remove it from the model with --remove)."""
    from meguri.registry import remove_alias, set_alias

    ws = _workspace()
    if remove:
        remove_alias(ref, alias, workspace=ws)
        console.print(f"removed alias {alias} of {ref.partition('@')[0]}")
        return
    version = set_alias(ref, alias, workspace=ws)
    console.print(f"{alias} -> [bold]{version.ref}[/] ({version.id})")


@models_app.command("archive")
def archive_cmd(ref: Annotated[str, typer.Argument(help=_REF_HELP)]) -> None:
    """Archive a version: it keeps its history, loses its aliases and can get none."""
    from meguri.registry import archive

    version = archive(ref, workspace=_workspace())
    console.print(f"archived [bold]{version.ref}[/] ({version.id})")


@models_app.command("card")
def card_cmd(
    ref: Annotated[str, typer.Argument(help=_REF_HELP)],
    html: Annotated[bool, typer.Option("--html", help="HTML instead of Markdown.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write it to this file, not stdout.")
    ] = None,
) -> None:
    """The version's model card: intended use, data, evaluation, criteria, limitations."""
    from meguri.registry import read_card

    text = read_card(ref, html=html, workspace=_workspace())
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text, encoding="utf-8")
    console.print(f"wrote the model card of {ref} to [bold]{out}[/]")


@models_app.command("export")
def export_cmd(
    ref: Annotated[str, typer.Argument(help=_REF_HELP)],
    out: Annotated[Path, typer.Option("--out", "-o", help="A new or empty folder.")],
    kind: Annotated[
        str,
        typer.Option(
            "--format",
            help="container (a Docker build context), kubernetes (Deployment, Service and "
            "HPA manifests) or ray-serve (a Ray Serve config and the package).",
        ),
    ] = "container",
    env: Annotated[
        str, typer.Option("--env", help="The spec's deploy environment (kubernetes, ray-serve).")
    ] = "production",
    image: Annotated[
        str | None,
        typer.Option(help="kubernetes: the image to run (default meguri-NAME:VERSION)."),
    ] = None,
    namespace: Annotated[str | None, typer.Option(help="kubernetes: the namespace.")] = None,
) -> None:
    """Write the version as a Docker build context (SageMaker contract), as Kubernetes
    manifests for that image, or as a Ray Serve application config."""
    from meguri.errors import ConfigError

    writers = {"container": _export_container, "kubernetes": _export_kubernetes}
    writers["ray-serve"] = _export_ray_serve
    if kind not in writers:
        raise ConfigError(f"--format {kind!r} is not known; use one of {', '.join(writers)}")
    writers[kind](ref, out, env=env, image=image, namespace=namespace)


def _export_container(ref: str, out: Path, **_: str | None) -> None:
    from meguri.registry import download_package, get_model_version
    from meguri.registry._export import export_container, image_tag

    ws = _workspace()
    version = get_model_version(ref, workspace=ws)
    folder = download_package(version.id, workspace=ws)
    context = export_container(
        folder,
        out,
        expected_digest=version.package_digest,
        name=version.name,
        version=str(version.version),
    )
    tag = image_tag(version.name, str(version.version))
    console.print(
        f"wrote a build context for {version.ref} in [bold]{context}[/]: "
        f"`docker build -t {tag} {context}`, then `docker run -p 8080:8080 {tag} serve`"
    )


def _export_kubernetes(
    ref: str, out: Path, *, env: str, image: str | None, namespace: str | None
) -> None:
    from meguri.deploy._kubernetes import manifests_for, resource_name, write_manifests
    from meguri.deploy._scaleout import resolve_target
    from meguri.errors import ConfigError

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty folder; choose a new one")
    target = resolve_target(ref, env=env, workspace=_workspace())
    manifests = manifests_for(target, image=image, namespace=namespace)
    path = write_manifests(manifests, out / f"{resource_name(target.label)}.yaml")
    scaling = target.scaling
    secret = ""
    if target.environment.auth_token_env is not None:
        from meguri.deploy._kubernetes import token_secret_name

        secret = (
            f", `kubectl create secret generic {token_secret_name(target)} "
            f"--from-literal=token=${target.environment.auth_token_env}`"
        )
    console.print(
        f"wrote a Deployment, Service, HPA ({scaling.replicas} to {scaling.max_replicas} "
        f"replicas) and PodDisruptionBudget for {target.version.ref} in {env} to [bold]{path}[/]: "
        f"build the image with `meguri models export {ref} --format container`{secret}, then "
        f"`kubectl apply -f {path}`"
    )


def _export_ray_serve(ref: str, out: Path, *, env: str, **_: str | None) -> None:
    from meguri.deploy._ray_serve import export_ray_serve

    path = export_ray_serve(ref, out, env=env, workspace=_workspace())
    console.print(
        f"wrote a Ray Serve config for {ref} in {env} to [bold]{path}[/] (the package is in "
        f"{path.parent / 'model'}): `serve run {path}` here, or `serve deploy {path}` on a "
        "cluster that can read that folder"
    )
