"""``kitty-orch fleet up|status|script`` and ``kitty-orch endpoints``.

Every command reads one fleet (profile name, path or ``$KITTY_FLEET``). Errors a user can
fix (missing or malformed fleet file, unknown profile, port in use, model file missing)
print one red line naming the cause and the fix and exit with code 2; nothing is left
running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from endpoints import EndpointConfig, EndpointStatus, FleetConfig, health_for, load_fleet, probe_all
from kitty.cli._app import FLEET_HELP, app, fleet_app
from kitty.cli._console import console, err_console
from kitty.cli._errors import shows_errors
from kitty.cli._servers import embedded_servers
from kitty.errors import FleetError, UserError
from ops import EmbeddedFleet

FleetOption = Annotated[str | None, typer.Option("--fleet", "-f", help=FLEET_HELP)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TimeoutOption = Annotated[float, typer.Option(help="Seconds per probe request.")]

_HEALTH_STYLE = {"ok": "green", "loading": "yellow", "slow": "yellow", "down": "red"}
# Columns after the two leading ones (endpoint and tiers, or tier and endpoint).
_PROBE_COLUMNS = ("kind", "URL", "health", "busy/slots", "ctx/slot", "model", "latency")


def _probe(config: FleetConfig, timeout: float) -> list[EndpointStatus]:
    return asyncio.run(probe_all(config.all_endpoints(), timeout=timeout))


def _recent_latency_ms(base_url: str) -> float | None:
    """This process's recent request latency to a server, if it made calls."""
    recent = health_for(base_url).recent_latency_s
    return None if recent is None else recent * 1000


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class EndpointRow:
    """One row of an endpoint table: the probe's findings, or the values chosen instead.

    Attributes:
        lead: The two leading cells (endpoint and its tiers, or tier and endpoint).
        status: What the probe found.
        total_slots: Slots shown (the probe's, or configured ones).
        n_ctx: Context per slot shown.
        model: Model shown.
        latency_ms: Latency shown.
    """

    lead: tuple[str, str]
    status: EndpointStatus
    total_slots: int | None
    n_ctx: int | None
    model: str | None
    latency_ms: float | None


def endpoint_table(title: str, lead: tuple[str, str], rows: Iterable[EndpointRow]) -> Table:
    """A probe table: the two ``lead`` columns, then kind, URL, health, slots, ctx, model."""
    table = Table(title=title)
    for column in (*lead, *_PROBE_COLUMNS):
        table.add_column(column)
    for row in rows:
        status = row.status
        busy, total = status.busy_slots, row.total_slots
        style = _HEALTH_STYLE.get(status.health, "red")
        table.add_row(
            *row.lead,
            status.kind,
            status.base_url,
            f"[{style}]{status.health}[/]",
            "-" if busy is None and total is None else f"{_or(busy, '?')}/{_or(total, '?')}",
            _or(row.n_ctx, "-"),
            row.model or "-",
            "-" if row.latency_ms is None else f"{row.latency_ms:.0f} ms",
        )
    return table


def _or(value: object, missing: str) -> str:
    return missing if value is None else str(value)


def _print_details(statuses: Iterable[EndpointStatus]) -> None:
    for status in statuses:
        if status.detail:
            colour = "yellow" if status.healthy else "red"
            console.print(f"[{colour}]{escape(status.name)}:[/] {escape(status.detail)}")


# --------------------------------------------------------------------------- fleet up


def _warn_if_over_committed(config: FleetConfig) -> None:
    """Warn on stderr when the fleet needs more memory than this machine has."""
    from ops import memory_override_bytes, plan_fleet

    try:
        plan = plan_fleet(config, memory_bytes=memory_override_bytes(None), probe_ollama=False)
    except ValueError as exc:  # an unknown KV cache type: the script/server will say more
        err_console.print(f"[yellow]memory plan skipped:[/] {escape(str(exc))}")
        return
    warning = plan.warning()
    if warning:
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}")


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """Let ``kill`` stop the fleet as cleanly as Ctrl-C does."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_fleet_up(config: FleetConfig, embedded: EmbeddedFleet) -> None:
    startup = {s.endpoint.name: s.startup_s for s in embedded.servers}
    statuses = _probe(config, timeout=5.0)
    tiers = config.tiers_by_endpoint()
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
        console.print(f"[yellow]already served by another process:[/] {', '.join(embedded.reused)}")
    console.print(
        f"[green]fleet {config.name} up[/] ({len(embedded.servers)} started in "
        f"{sum(startup.values()):.2f} s); Ctrl-C to stop"
    )


@fleet_app.command("up")
@shows_errors
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
    config = load_fleet(fleet)
    if not config.embedded:
        raise FleetError(
            f"fleet {config.name!r} is not embedded (its servers run outside kitty-orch); "
            "generate their launch script with: "
            f"kitty-orch fleet script --fleet {fleet or config.name}"
        )
    _warn_if_over_committed(config)
    # Ctrl-C while the servers start: the ones started are stopped again.
    with _sigterm_as_ctrl_c(), contextlib.suppress(KeyboardInterrupt):
        servers = embedded_servers(
            config, announce=False, verbose=verbose, startup_timeout_s=startup_timeout
        )
        with servers as embedded:
            assert embedded is not None  # the fleet is embedded
            _print_fleet_up(config, embedded)
            try:
                while True:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                console.print("stopping fleet...")
    console.print("[green]fleet stopped[/]")


# --------------------------------------------------------------------------- status


def _status_record(status: EndpointStatus, tiers: list[str]) -> dict[str, Any]:
    record = status.model_dump()
    record["tiers"] = tiers
    record["healthy"] = status.healthy
    record["recent_latency_ms"] = _recent_latency_ms(status.base_url)
    return record


def ctx_mismatches(config: FleetConfig, statuses: Iterable[EndpointStatus]) -> list[str]:
    """Warnings for servers whose per-slot context differs from the fleet file's ``ctx``.

    The server's ``/props`` ``n_ctx`` is what a request may use; budgets are computed from
    the file, so a smaller server context refuses prompts that the budget let through.
    """
    configured = {e.name: e for e in config.all_endpoints()}
    found: list[str] = []
    for status in statuses:
        endpoint = configured.get(status.name)
        if endpoint is None or status.n_ctx is None or status.n_ctx == endpoint.ctx:
            continue
        found.append(
            f"{status.name}: the server has {status.n_ctx} context tokens per slot but the "
            f"fleet file says ctx = {endpoint.ctx}; set ctx = {status.n_ctx} in "
            f"{config.source or 'the fleet file'} or restart the server with "
            f"-c {endpoint.ctx * (endpoint.slots or 1)}"
        )
    return found


@fleet_app.command("status")
@shows_errors
def fleet_status(
    fleet: FleetOption = None, as_json: JsonOption = False, timeout: TimeoutOption = 2.0
) -> None:
    """Probe every endpoint: health, busy/total slots, context, model, latency.

    Exits 0 when every endpoint is healthy, 1 otherwise.
    """
    config = load_fleet(fleet)
    statuses = _probe(config, timeout)
    tiers = config.tiers_by_endpoint()
    healthy = all(s.healthy for s in statuses)
    mismatches = ctx_mismatches(config, statuses)
    if as_json:
        payload = {
            "fleet": config.name,
            "source": config.source,
            "healthy": healthy,
            "endpoints": [_status_record(s, tiers[s.name]) for s in statuses],
            "warnings": mismatches,
        }
        typer.echo(json.dumps(payload, indent=2))
    else:
        rows = [
            EndpointRow(
                (s.name, ", ".join(tiers[s.name])), s, s.total_slots, s.n_ctx, s.model, s.latency_ms
            )
            for s in statuses
        ]
        console.print(endpoint_table(f"fleet {config.name}", ("endpoint", "tier(s)"), rows))
        _print_details(statuses)
        for mismatch in mismatches:
            console.print(f"[yellow]warning:[/] {escape(mismatch)}")
        up = sum(s.healthy for s in statuses)
        colour = "green" if healthy else "red"
        console.print(f"[{colour}]{up}/{len(statuses)} endpoints healthy[/]")
    raise typer.Exit(0 if healthy else 1)


# --------------------------------------------------------------------------- script


@fleet_app.command("script")
@shows_errors
def fleet_script(
    fleet: FleetOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the script to FILE (made executable)."),
    ] = None,
) -> None:
    """Print (or write) a bash script that starts the fleet's llama-server / Ollama servers."""
    from ops import render_launch_script, write_launch_script

    config = load_fleet(fleet)
    _warn_if_over_committed(config)
    try:
        script = render_launch_script(config)
    except ValueError as exc:  # ops.launch: an endpoint it cannot launch (no model_path...)
        raise FleetError(str(exc)) from None
    if output is None:
        typer.echo(script, nl=False)
        return
    try:
        path = write_launch_script(config, output)
    except OSError as exc:
        raise UserError(
            f"cannot write {output}: {exc.strerror or exc}; choose a writable path"
        ) from None
    err_console.print(f"[green]wrote[/] {escape(str(path))}; run it with: bash {escape(str(path))}")


# --------------------------------------------------------------------------- endpoints


def _watch(config: FleetConfig, seconds: float, timeout: float, as_json: bool) -> None:
    from dataclasses import asdict

    from endpoints import get_runtime
    from kitty.cli._endpoints_watch import EndpointPeaks, peaks_table, watch_endpoints

    runtime = get_runtime(config)
    peaks: list[EndpointPeaks] = []
    # Ctrl-C or SIGTERM ends the watch early; the peaks seen so far are still printed.
    try:
        with _sigterm_as_ctrl_c():
            asyncio.run(watch_endpoints(config, runtime, seconds, timeout, into=peaks))
    except KeyboardInterrupt:
        err_console.print("watch stopped early; peaks so far:")
    if as_json:
        records = [{**asdict(p), "cap_held": p.cap_held} for p in peaks]
        typer.echo(json.dumps({"fleet": config.name, "peaks": records}))
        return
    shared = runtime.store.description != "local"
    title = f"peaks over {seconds:g} s, fleet {config.name}"
    console.print(peaks_table(title, peaks, shared))


def _endpoint_record(
    tier: str,
    endpoint: EndpointConfig,
    status: EndpointStatus,
    shared: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """One endpoint of one tier: probe findings, configured values where the probe has none.

    ``shared`` is (leases, queued) of every process on a shared slot store (Redis).
    """
    recent = _recent_latency_ms(endpoint.base_url)
    return {
        "tier": tier,
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
        "latency_ms": recent if recent is not None else status.latency_ms,
        "latency_source": "recent" if recent is not None else "probe",
        "supports_tools": endpoint.supports_tools,
        "supports_vision": endpoint.supports_vision,
        "store_leases": None if shared is None else shared[0],
        "store_queued": None if shared is None else shared[1],
    }


@app.command("endpoints")
@shows_errors
def endpoints_command(
    fleet: FleetOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 2.0,
    watch: Annotated[
        float,
        typer.Option(
            "--watch",
            min=0,
            help="Poll the servers for SECONDS and print each one's peaks (busy, requests "
            "waiting inside it for a slot, leases): did any get more requests than slots?",
        ),
    ] = 0,
) -> None:
    """List every endpoint per tier: kind, URL, health, slots, context, model, latency.

    Latency is this process's recent request latency when it has made calls, else the
    probe's round trip. With ``--watch`` the servers are polled for a while instead.
    """
    from endpoints import get_runtime

    config = load_fleet(fleet)
    if watch:
        _watch(config, watch, timeout, as_json)
        return
    statuses = {s.name: s for s in _probe(config, timeout)}
    runtime = get_runtime(config)
    # Leases and queue depth of every process sharing the slot store (none when local).
    shared = asyncio.run(runtime.lease_counts())
    records = [
        _endpoint_record(tier_name, endpoint, statuses[endpoint.name], shared.get(endpoint.name))
        for tier_name, tier in config.tiers.items()
        for endpoint in tier.endpoints
    ]
    if as_json:
        store = runtime.store.description
        typer.echo(
            json.dumps({"fleet": config.name, "slot_store": store, "endpoints": records}, indent=2)
        )
        return
    rows = [
        EndpointRow(
            (r["tier"], r["name"]),
            statuses[r["name"]],
            r["total_slots"],
            r["n_ctx"],
            r["model"],
            r["latency_ms"],
        )
        for r in records
    ]
    console.print(endpoint_table(f"endpoints of fleet {config.name}", ("tier", "endpoint"), rows))
    if shared:
        held = ", ".join(
            f"{n} {leases} held / {queued} queued" for n, (leases, queued) in shared.items()
        )
        console.print(f"slot leases on {escape(runtime.store.description)}: {escape(held)}")
    _print_details(statuses.values())
