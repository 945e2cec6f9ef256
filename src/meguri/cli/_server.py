"""``meguri server``: the platform API (and the MLflow tracking subset) of the project here;
``meguri ui``: the same with the Studio's pages at ``/``."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("server")(server_cmd)
    app.command("ui")(ui_cmd)


def ui_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the Studio (web pages: overview and traceability, data, experiments, models,
    deployments, monitoring, documents, audit) with the platform API, on HOST:PORT. Sign in
    as a user made with `meguri users create NAME` (and `meguri users role set NAME viewer`)."""
    serve_platform(host=host, port=port, studio=True)


def server_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="A Host header to accept (repeat; default 127.0.0.1 and localhost). Others "
            "are refused, which stops DNS-rebinding attacks.",
        ),
    ] = None,
    public_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--public-origin",
            help="An origin such as https://ml.example.com that browsers reach the server "
            "through (a TLS proxy), for the Origin check of signed-in writes.",
        ),
    ] = None,
    secure_cookies: Annotated[
        bool | None,
        typer.Option(
            "--secure-cookies/--no-secure-cookies",
            help="Mark cookies Secure (default: when the request came over https).",
        ),
    ] = None,
    proxy_headers: Annotated[
        bool,
        typer.Option(help="Trust X-Forwarded-For/-Proto from 127.0.0.1 (behind a local proxy)."),
    ] = False,
) -> None:
    """Serve the platform API on HOST:PORT: /api/v1 (OpenAPI at /api/v1/openapi.json), the
    MLflow subset at /api/2.0/mlflow, sign-in at POST /login. No user exists until
    `meguri users create NAME --admin`."""
    serve_platform(
        host=host,
        port=port,
        allowed_hosts=tuple(allowed_host or ("127.0.0.1", "localhost")),
        public_origins=tuple(public_origin or ()),
        secure_cookies=secure_cookies,
        proxy_headers=proxy_headers,
        studio=False,
    )


def serve_platform(
    *,
    host: str,
    port: int,
    studio: bool,
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    public_origins: tuple[str, ...] = (),
    secure_cookies: bool | None = None,
    proxy_headers: bool = False,
    workspace: object | None = None,
) -> None:
    """Run the platform app (with the Studio when ``studio``) until Ctrl-C."""
    import uvicorn
    from rich.console import Console

    from meguri.server import ServerSettings, create_app

    settings = ServerSettings(
        host=host,
        port=port,
        allowed_hosts=allowed_hosts,
        public_origins=public_origins,
        secure_cookies=secure_cookies,
    )
    routers = []
    if studio:
        from meguri.studio import create_router

        routers.append(create_router())
    app = create_app(settings, workspace=workspace, extra_routers=routers)  # type: ignore[arg-type]
    what = "Studio and API" if studio else "API /api/v1, MLflow /api/2.0/mlflow"
    Console(stderr=True).print(f"meguri on http://{host}:{port} ({what}); Ctrl-C stops")
    uvicorn.run(
        app,
        host=host,
        port=port,
        proxy_headers=proxy_headers,
        forwarded_allow_ips="127.0.0.1",
        log_level="warning",
    )
