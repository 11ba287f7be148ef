"""``kitty-orch serve``: the HTTP brain service (``POST /api/query/parallel`` and friends)."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape

from endpoints import load_fleet
from graph import check_location, make_checkpointer
from kitty.cli._app import CHECKPOINT_HELP, FLEET_HELP, app
from kitty.cli._console import err_console
from kitty.cli._errors import shows_errors
from kitty.errors import SettingsError, UserError, format_validation_error
from kitty.service import (
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENT_RUNS,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_PORT,
    TOKEN_ENV_VAR,
    ServiceSettings,
    exposure_warning,
    parse_context_pairs,
)
from kitty.telemetry import TRACES_ENDPOINT_ENV, otlp_traces_endpoint


@app.command("serve")
@shows_errors
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
    run_settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="NAME=VALUE",
            help="Default run setting NAME=VALUE of every request, as for run (repeatable), "
            "e.g. --set synthesis_max_tokens=256 --set thinking=high.",
        ),
    ] = None,
    deprecated_context: Annotated[
        list[str] | None,
        typer.Option("--context", "-c", hidden=True, help="Deprecated spelling of --set."),
    ] = None,
    public_docs: Annotated[
        bool, typer.Option(help="Serve /docs and /openapi.json without the token.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            "--otlp-endpoint",
            metavar="URL",
            help="Send OpenTelemetry traces of every run (GenAI spans: run, tasks, model "
            "and tool calls) to this collector's OTLP/HTTP address, e.g. "
            "http://127.0.0.1:4318 (spans go to its /v1/traces). Default: "
            "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or $OTEL_EXPORTER_OTLP_ENDPOINT; "
            "neither set: no tracing.",
        ),
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", metavar="PATH|URL", help=CHECKPOINT_HELP)
    ] = None,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(
            "--allowed-hosts",
            metavar="HOST,HOST",
            help="Host names the service answers besides localhost, 127.0.0.1 and [::1] "
            "(comma-separated, any port; *.example.org matches its subdomains), e.g. a "
            "reverse proxy's or a LAN name. Requests for any other Host get 400, which "
            "blocks DNS rebinding. Checked on a loopback --host, and on any --host once "
            f"given; a non-loopback --host without it accepts any Host (use {TOKEN_ENV_VAR}).",
        ),
    ] = None,
    max_concurrent_runs: Annotated[
        int,
        typer.Option(
            help="Runs in flight at once; more get 429 with Retry-After. 0: no limit.", min=0
        ),
    ] = DEFAULT_MAX_CONCURRENT_RUNS,
    service_name: Annotated[
        str | None,
        typer.Option(
            "--service-name",
            metavar="NAME",
            help="Hosts serving one service over one Redis: give them the same name and "
            "--max-concurrent-runs holds for them all, background runs included. "
            "Default: HOST:PORT.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="uvicorn worker processes sharing the port. More than 1 needs the Redis "
            "slot store (KITTY_SLOT_STORE or [coordination] slot_store), so caps, "
            "--max-concurrent-runs and thread resumes hold for all workers together, and "
            "a SQLite file or Postgres for --checkpoint.",
        ),
    ] = 1,
    keep_days: Annotated[
        float | None,
        typer.Option(
            metavar="N",
            help="Delete checkpoint threads (the stored queries and answers) whose last "
            "checkpoint is older than N days, at startup and then hourly. Default: keep all.",
        ),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            metavar="NAME=FLEET",
            help="Another workflow of the OpenAI-compatible door (/v1): model NAME runs on "
            "fleet FLEET (profile name or path); repeatable. /v1/models lists "
            "kitty-orchestrator (the --fleet) and these.",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API: POST /api/query/parallel (+ /stream), GET /api/endpoints, /healthz.

    Token: env KITTY_API_TOKEN (not a flag: flags show in process lists). Docs at /docs.
    """
    from kitty.service import check_workers, serve
    from ops import ensure_embedded_fleet, port_is_free

    if deprecated_context:
        err_console.print(
            "[yellow]--context/-c is deprecated; use --set NAME=VALUE (as for kitty-orch run)[/]"
        )
    overrides = parse_context_pairs([*(deprecated_context or []), *(run_settings or [])])
    try:
        settings = ServiceSettings(
            host=host,
            port=port,
            fleet=fleet,
            max_body_bytes=max_body_bytes,
            max_query_chars=max_query_chars,
            context_overrides=overrides,
            public_docs=public_docs,
            checkpointer_factory=lambda: make_checkpointer(checkpoint),
            allowed_hosts=(allowed_hosts or "").split(","),
            max_concurrent_runs=max_concurrent_runs,
            service_name=service_name,
            keep_days=keep_days,
            models=_model_pairs(models or []),
        )
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc.errors())) from None
    check_location(checkpoint)
    check_workers(workers, fleet, checkpoint)
    if port and ":" not in host and not port_is_free(host, port):
        raise UserError(f"port {port} on {host} is already in use; pick another with --port")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per model call is noise
    warning = exposure_warning(host, settings.api_token)
    if warning:
        err_console.print(f"[bold red]{escape(warning)}[/]")
    # Checked now (one red line, not a startup traceback); the workers inherit it.
    traces = otlp_traces_endpoint(os.environ, otlp_endpoint)
    if otlp_endpoint and traces:
        os.environ[TRACES_ENDPOINT_ENV] = traces
    config = load_fleet(fleet)
    if config.embedded:
        ensure_embedded_fleet(config)  # a clean error now instead of a startup traceback
    serve(settings, log_level=log_level, workers=workers, checkpoint=checkpoint)


def _model_pairs(pairs: list[str]) -> dict[str, str]:
    """``--model NAME=FLEET`` items as a mapping.

    Raises:
        SettingsError: An item without ``=``, or a name given twice.
    """
    models: dict[str, str] = {}
    for pair in pairs:
        name, sep, fleet = pair.partition("=")
        if not sep or not name.strip() or not fleet.strip():
            raise SettingsError(f"--model {pair!r}: write NAME=FLEET, e.g. --model big=m3-ultra")
        if name.strip() in models:
            raise SettingsError(f"--model {name.strip()!r} is given twice; give each name once")
        models[name.strip()] = fleet.strip()
    return models
