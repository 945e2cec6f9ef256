"""``meguri serve MODEL[@ALIAS]``: the inference server for a registered version or a folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from meguri.serve import PackageSource


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)


def serve_cmd(
    model: Annotated[
        str | None,
        typer.Argument(help="NAME, NAME@ALIAS, NAME@VERSION or a version id (mv-…)."),
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option("--model-dir", help="Serve this package folder (e.g. /opt/ml/model)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(help="Processes (one per core).")] = 1,
    capture_rate: Annotated[
        float, typer.Option(help="Share of requests captured to Parquet (0 to 1).")
    ] = 0.0,
    capture_url: Annotated[
        str | None,
        typer.Option(help="Folder or s3:// URL for captures (default .meguri/capture)."),
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Rows per micro-batch at most.")] = 256,
    max_wait_ms: Annotated[
        float, typer.Option(help="Longest wait for queued requests to join a batch.")
    ] = 2.0,
    max_body: Annotated[int, typer.Option(help="Largest request body in bytes.")] = 8 << 20,
    token: Annotated[
        str | None,
        typer.Option(envvar="MEGURI_SERVE_TOKEN", help="Require 'Authorization: Bearer TOKEN'."),
    ] = None,
) -> None:
    """Serve a model: SageMaker /invocations, MLflow scoring JSON, v2 inference, /metrics."""
    from meguri.errors import ConfigError
    from meguri.serve import ServeSettings, serve

    if (model is None) == (model_dir is None):
        raise ConfigError("meguri serve: name a registered MODEL[@ALIAS] or give --model-dir")
    source, default_capture = (
        _registered(model) if model is not None else _folder(model_dir)  # type: ignore[arg-type]
    )
    settings = ServeSettings(
        host=host,
        port=port,
        workers=workers,
        max_batch_rows=max_batch,
        max_wait_ms=max_wait_ms,
        max_body_bytes=max_body,
        capture_rate=capture_rate,
        capture_url=capture_url or (default_capture if capture_rate > 0 else None),
        auth_token=token,
    )
    serve(source, settings)


def _registered(ref: str) -> tuple[PackageSource, str | None]:
    from meguri.registry import download_package, get_model_version
    from meguri.serve import PackageSource
    from meguri.store import open_workspace
    from meguri.store._workspace import STATE_DIR

    ws = open_workspace()
    try:
        version = get_model_version(ref, workspace=ws)
        folder = download_package(version.id, workspace=ws)
    finally:
        ws.close()
    source = PackageSource(folder, version.package_digest, version.name, str(version.version))
    return source, str(ws.root / STATE_DIR / "capture")


def _folder(folder: Path) -> tuple[PackageSource, str | None]:
    from meguri.serve import PackageSource

    return PackageSource(folder.resolve()), None
