"""``kitty-orch serve``: the HTTP brain service (``POST /api/query/parallel`` and friends)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from cli.app import FLEET_HELP, app
from cli.resume import CHECKPOINT_HELP
from endpoints.config import FleetError, load_fleet
from graph.checkpoint import check_location, make_checkpointer
from service.security import exposure_warning
from service.settings import (
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_PORT,
    TOKEN_ENV_VAR,
    ServiceSettings,
    parse_context_pairs,
)

err_console = Console(stderr=True, soft_wrap=True, highlight=False)


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(2)


@app.command("serve")
def serve_command(
    host: Annotated[
        str,
        typer.Option(
            help="Interface to bind. Loopback by default; anything else is reachable from "
            f"other machines, so set {TOKEN_ENV_VAR} first."
        ),
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = DEFAULT_PORT,
    fleet: Annotated[str | None, typer.Option("--fleet", "-f", help=FLEET_HELP)] = None,
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest request body accepted (413 above).", min=1024)
    ] = DEFAULT_MAX_BODY_BYTES,
    max_query_chars: Annotated[
        int, typer.Option(help="Longest query accepted (422 above).", min=1)
    ] = DEFAULT_MAX_QUERY_CHARS,
    context: Annotated[
        list[str] | None,
        typer.Option(
            "--context",
            "-c",
            help="Default run setting KEY=VALUE, repeatable, e.g. -c synthesis_max_tokens=256 "
            "-c run_deadline_s=120 -c thinking=high.",
        ),
    ] = None,
    public_docs: Annotated[
        bool, typer.Option(help="Serve /docs and /openapi.json without the token.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", metavar="PATH|URL", help=CHECKPOINT_HELP)
    ] = None,
) -> None:
    """Serve the HTTP API: POST /api/query/parallel (+ /stream), GET /api/endpoints, /healthz.

    Token: env KITTY_API_TOKEN (not a flag: flags show in process lists). Docs at /docs.
    """
    from ops.embedded import EmbeddedFleetError, ensure_embedded_fleet, port_is_free
    from service.server import serve

    try:
        overrides = parse_context_pairs(context or [])
        settings = ServiceSettings(
            host=host,
            port=port,
            fleet=fleet,
            max_body_bytes=max_body_bytes,
            max_query_chars=max_query_chars,
            context_overrides=overrides,
            public_docs=public_docs,
            checkpointer_factory=lambda: make_checkpointer(checkpoint),
        )
        check_location(checkpoint)
    except (ValueError, ValidationError) as exc:
        raise _fail(str(exc)) from None
    if port and ":" not in host and not port_is_free(host, port):
        raise _fail(f"port {port} on {host} is already in use; pick another with --port")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per model call is noise
    warning = exposure_warning(host, settings.api_token)
    if warning:
        err_console.print(f"[bold red]{escape(warning)}[/]")
    try:
        config = load_fleet(fleet)
        if config.embedded:
            ensure_embedded_fleet(config)  # a clean error now instead of a startup traceback
        serve(settings, log_level=log_level)
    except (FleetError, EmbeddedFleetError) as exc:
        raise _fail(str(exc)) from None
