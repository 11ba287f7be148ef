"""``kitty-orch fleet up|status|script`` and ``kitty-orch endpoints``.

Every command reads one fleet (profile name, path or ``$KITTY_FLEET``). Errors a user can
fix (missing or malformed fleet file, unknown profile, port in use, model file missing)
print one red line naming the cause and the fix and exit with code 2; nothing is left
running.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.app import FLEET_HELP, app, fleet_app
from endpoints.config import FleetConfig, FleetError, load_fleet
from endpoints.pool import health_for
from endpoints.probes import EndpointStatus, probe_all

console = Console(highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

FleetOption = Annotated[str | None, typer.Option("--fleet", "-f", help=FLEET_HELP)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_HEALTH_STYLE = {"ok": "green", "loading": "yellow", "slow": "yellow", "down": "red"}


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one red error line to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _load(fleet: str | None) -> FleetConfig:
    try:
        return load_fleet(fleet)
    except FleetError as exc:
        fail(str(exc))


def _tiers_by_endpoint(config: FleetConfig) -> dict[str, list[str]]:
    tiers: dict[str, list[str]] = {}
    for tier_name, tier in config.tiers.items():
        for endpoint in tier.endpoints:
            tiers.setdefault(endpoint.name, []).append(tier_name)
    return tiers


def _probe(config: FleetConfig, timeout: float) -> list[EndpointStatus]:
    return asyncio.run(probe_all(config.all_endpoints(), timeout=timeout))


def _health_cell(status: EndpointStatus) -> str:
    style = _HEALTH_STYLE.get(status.health, "red")
    return f"[{style}]{status.health}[/]"


def _slots_cell(status: EndpointStatus) -> str:
    total = "?" if status.total_slots is None else str(status.total_slots)
    busy = "?" if status.busy_slots is None else str(status.busy_slots)
    return "-" if status.total_slots is None and status.busy_slots is None else f"{busy}/{total}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _status_record(status: EndpointStatus, tiers: list[str]) -> dict[str, Any]:
    record = status.model_dump()
    record["tiers"] = tiers
    record["healthy"] = status.healthy
    recent = health_for(status.base_url).recent_latency_s
    record["recent_latency_ms"] = None if recent is None else recent * 1000
    return record


def _print_details(statuses: list[EndpointStatus]) -> None:
    for status in statuses:
        if status.detail:
            colour = "yellow" if status.healthy else "red"
            console.print(f"[{colour}]{escape(status.name)}:[/] {escape(status.detail)}")


@fleet_app.command("up")
def fleet_up(
    fleet: FleetOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Let llama.cpp log to stderr.")
    ] = False,
    startup_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each server's /health.")
    ] = 60.0,
) -> None:
    """Start an embedded fleet in this process and serve until Ctrl-C."""
    from ops.embedded import EmbeddedFleet, EmbeddedFleetError

    config = _load(fleet)
    if not config.embedded:
        fail(
            f"fleet {config.name!r} is not embedded (its servers run outside kitty-orch); "
            "generate their launch script with: "
            f"kitty-orch fleet script --fleet {fleet or config.name}"
        )
    embedded = EmbeddedFleet(config, verbose=verbose, startup_timeout_s=startup_timeout)
    previous_sigterm = signal.getsignal(signal.SIGTERM)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _terminate)
        try:
            embedded.start()
        except EmbeddedFleetError as exc:
            fail(str(exc))
        startup = {s.endpoint.name: s.startup_s for s in embedded.servers}
        statuses = _probe(config, timeout=5.0)
        tiers = _tiers_by_endpoint(config)
        table = Table(title=f"fleet {config.name} (embedded llama.cpp)")
        for column in ("endpoint", "tier(s)", "URL", "slots", "ctx/slot", "model", "startup"):
            table.add_column(column)
        for endpoint, status in zip(config.all_endpoints(), statuses, strict=True):
            seconds = startup.get(endpoint.name)
            table.add_row(
                endpoint.name,
                ", ".join(tiers[endpoint.name]),
                endpoint.base_url,
                str(status.total_slots or endpoint.slots or "?"),
                str(status.n_ctx or endpoint.ctx),
                status.model or endpoint.model,
                "reused" if seconds is None else f"{seconds:.2f} s",
            )
        console.print(table)
        if embedded.reused:
            console.print(
                f"[yellow]already served by another process:[/] {', '.join(embedded.reused)}"
            )
        total = sum(startup.values())
        console.print(
            f"[green]fleet {config.name} up[/] ({len(embedded.servers)} started in "
            f"{total:.2f} s); Ctrl-C to stop"
        )
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping fleet...")
    finally:
        embedded.stop()
        signal.signal(signal.SIGTERM, previous_sigterm)
    console.print("[green]fleet stopped[/]")


@fleet_app.command("status")
def fleet_status(
    fleet: FleetOption = None,
    as_json: JsonOption = False,
    timeout: Annotated[float, typer.Option(help="Seconds per probe request.")] = 2.0,
) -> None:
    """Probe every endpoint: health, busy/total slots, context, model, latency.

    Exits 0 when every endpoint is healthy, 1 otherwise.
    """
    config = _load(fleet)
    statuses = _probe(config, timeout)
    tiers = _tiers_by_endpoint(config)
    healthy = all(s.healthy for s in statuses)
    if as_json:
        payload = {
            "fleet": config.name,
            "source": config.source,
            "healthy": healthy,
            "endpoints": [_status_record(s, tiers[s.name]) for s in statuses],
        }
        typer.echo(json.dumps(payload, indent=2))
    else:
        table = Table(title=f"fleet {config.name}")
        for column in (
            "endpoint",
            "tier(s)",
            "kind",
            "URL",
            "health",
            "busy/slots",
            "ctx/slot",
            "model",
            "latency",
        ):
            table.add_column(column)
        for status in statuses:
            table.add_row(
                status.name,
                ", ".join(tiers[status.name]),
                status.kind,
                status.base_url,
                _health_cell(status),
                _slots_cell(status),
                "-" if status.n_ctx is None else str(status.n_ctx),
                status.model or "-",
                _ms(status.latency_ms),
            )
        console.print(table)
        _print_details(statuses)
        up = sum(s.healthy for s in statuses)
        colour = "green" if healthy else "red"
        console.print(f"[{colour}]{up}/{len(statuses)} endpoints healthy[/]")
    raise typer.Exit(0 if healthy else 1)


@fleet_app.command("script")
def fleet_script(
    fleet: FleetOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the script to FILE (made executable)."),
    ] = None,
) -> None:
    """Print (or write) a bash script that starts the fleet's llama-server / Ollama servers."""
    from ops.launch import render_launch_script, write_launch_script

    config = _load(fleet)
    try:
        if output is None:
            typer.echo(render_launch_script(config), nl=False)
            return
        path = write_launch_script(config, output)
    except ValueError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}; choose a writable path")
    err_console.print(f"[green]wrote[/] {escape(str(path))}; run it with: bash {escape(str(path))}")


@app.command("endpoints")
def endpoints_command(
    fleet: FleetOption = None,
    as_json: JsonOption = False,
    timeout: Annotated[float, typer.Option(help="Seconds per probe request.")] = 2.0,
) -> None:
    """List every endpoint per tier: kind, URL, health, slots, context, model, latency.

    Latency is this process's recent request latency when it has made calls, else the
    probe's round trip.
    """
    config = _load(fleet)
    statuses = {s.name: s for s in _probe(config, timeout)}
    rows: list[dict[str, Any]] = []
    for tier_name, tier in config.tiers.items():
        for endpoint in tier.endpoints:
            status = statuses[endpoint.name]
            recent = health_for(endpoint.base_url).recent_latency_s
            rows.append(
                {
                    "tier": tier_name,
                    "name": endpoint.name,
                    "kind": endpoint.kind,
                    "base_url": endpoint.base_url,
                    "health": status.health,
                    "detail": status.detail,
                    "busy_slots": status.busy_slots,
                    "total_slots": status.total_slots or endpoint.slots,
                    "configured_slots": endpoint.slots,
                    "n_ctx": status.n_ctx or endpoint.ctx,
                    "model": status.model or endpoint.model,
                    "latency_ms": recent * 1000 if recent is not None else status.latency_ms,
                    "latency_source": "recent" if recent is not None else "probe",
                    "supports_tools": endpoint.supports_tools,
                    "supports_vision": endpoint.supports_vision,
                }
            )
    if as_json:
        typer.echo(json.dumps({"fleet": config.name, "endpoints": rows}, indent=2))
        return
    table = Table(title=f"endpoints of fleet {config.name}")
    for column in (
        "tier",
        "endpoint",
        "kind",
        "URL",
        "health",
        "busy/slots",
        "ctx/slot",
        "model",
        "latency",
    ):
        table.add_column(column)
    for row in rows:
        status = statuses[row["name"]]
        busy = "?" if row["busy_slots"] is None else row["busy_slots"]
        total = "?" if row["total_slots"] is None else row["total_slots"]
        table.add_row(
            row["tier"],
            row["name"],
            row["kind"],
            row["base_url"],
            _health_cell(status),
            f"{busy}/{total}",
            str(row["n_ctx"]),
            row["model"],
            _ms(row["latency_ms"]),
        )
    console.print(table)
    _print_details(list(statuses.values()))
