"""``kitty-orch fleet plan`` (memory per endpoint) and ``kitty-orch fleet whatif`` (SIMULATED).

``plan`` reads each endpoint's GGUF (or the declared ``launch.model_info``, or a running
Ollama's ``/api/show``) and prints weights, KV cache, a compute-buffer estimate and the total
against the machine's memory. ``whatif`` runs a scenario on the calibrated simulated fleet
under the current and a changed layout. Both take layout changes: ``--set tier.field=value``
and ``--add-replica TIER``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlparse

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from endpoints import FleetConfig, load_fleet
from endpoints.config import MachineConfig
from kitty.cli._app import FLEET_HELP, fleet_app
from kitty.cli._bench import bench_installed, bench_missing
from kitty.cli._console import console, err_console
from kitty.cli._errors import shows_errors
from kitty.errors import FleetError, UserError, format_validation_error
from ops import (
    FleetMemoryPlan,
    compare_with_seed,
    gib,
    machine_memory_bytes,
    memory_override_bytes,
    plan_fleet,
)

FleetOption = Annotated[str | None, typer.Option("--fleet", "-f", help=FLEET_HELP)]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Change a layout value: TIER.FIELD=VALUE (tools.slots=8, coder.ctx=16384, "
        "tools.launch.ctx_size=131072); repeatable.",
    ),
]
ReplicaOption = Annotated[
    list[str] | None,
    typer.Option("--add-replica", help="Add a replica of TIER's first endpoint; repeatable."),
]
MemoryOption = Annotated[
    float | None,
    typer.Option(
        "--memory-gb",
        help="The machine's memory in GiB (default: $KITTY_MEMORY_GB, else the fleet file's "
        "[machine] memory_gib, else this machine's).",
    ),
]

if TYPE_CHECKING:
    from kitty.bench import WhatIf

_SET_FORM = "TIER.FIELD=VALUE, e.g. tools.slots=8 or coder.launch.ctx_size=65536"


# --------------------------------------------------------------------------- layout changes


def _parse_value(raw: str) -> Any:
    """``8`` -> 8, ``true`` -> True, ``[...]`` -> list; anything else stays a string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _parse_set(text: str, config: FleetConfig) -> tuple[str, list[str], Any]:
    key, eq, raw = text.partition("=")
    parts = key.strip().split(".")
    if not eq or len(parts) < 2 or not all(parts) or not raw.strip():
        raise UserError(f"--set {text!r}: expected {_SET_FORM}")
    tier, fields = parts[0], parts[1:]
    config.tier(tier)  # unknown tier: FleetError listing the known ones
    if fields[0] == "name":
        raise UserError(f"--set {text!r}: an endpoint's name cannot be changed here")
    return tier, fields, _parse_value(raw.strip())


def _set_endpoint_field(endpoint: dict[str, Any], fields: list[str], value: Any) -> None:
    old_slots, old_ctx = endpoint.get("slots") or 1, endpoint["ctx"]
    launch = endpoint["launch"]
    # A total context that was ctx x slots stays that, so each slot keeps its context.
    coupled = launch.get("ctx_size") == old_ctx * old_slots
    target = endpoint
    for name in fields[:-1]:
        if not isinstance(target.get(name), dict):
            raise KeyError(name)
        target = target[name]
    target[fields[-1]] = value
    if coupled and fields in (["slots"], ["ctx"]) and isinstance(value, int):
        launch["ctx_size"] = (endpoint.get("slots") or 1) * endpoint["ctx"]


def _replica(endpoint: dict[str, Any], names: set[str], port: int) -> dict[str, Any]:
    copy = json.loads(json.dumps(endpoint))
    number = 2
    while f"{endpoint['name']}-{number}" in names:
        number += 1
    copy["name"] = f"{endpoint['name']}-{number}"
    url = urlparse(endpoint["base_url"])
    copy["base_url"] = f"{url.scheme}://{url.hostname}:{port}"
    return copy


def apply_layout(
    config: FleetConfig, sets: list[str] | None = None, add_replicas: list[str] | None = None
) -> FleetConfig:
    """A copy of ``config`` with the layout changes applied (the file is not touched).

    ``--set TIER.FIELD=VALUE`` sets a field of every endpoint of the tier; a total context
    (``launch.ctx_size``) that equalled ``ctx x slots`` is kept equal. ``--add-replica TIER``
    copies the tier's first endpoint as ``NAME-2`` on the next port above it that the fleet
    does not use.

    Raises:
        UserError: Malformed ``--set``, unknown field or a value the schema refuses; the
            message names the key and the accepted form.
        FleetError: Unknown tier.
    """
    data = config.model_dump()
    for text in sets or []:
        tier, fields, value = _parse_set(text, config)
        for endpoint in data["tiers"][tier]["endpoints"]:
            try:
                _set_endpoint_field(endpoint, fields, value)
            except KeyError as exc:
                raise UserError(
                    f"--set {text!r}: {'.'.join(fields)} is not an endpoint field ({exc} is "
                    f"not a table); expected {_SET_FORM}"
                ) from None
        _validate(data, f"--set {text!r}")
    for tier in add_replicas or []:
        config.tier(tier)
        names = {e["name"] for t in data["tiers"].values() for e in t["endpoints"]}
        taken = {
            urlparse(e["base_url"]).port for t in data["tiers"].values() for e in t["endpoints"]
        }
        first = data["tiers"][tier]["endpoints"][0]
        port = (urlparse(first["base_url"]).port or 80) + 1
        while port in taken:
            port += 1
        data["tiers"][tier]["endpoints"].append(_replica(first, names, port))
    return _validate(data, "--add-replica")


def _validate(data: dict[str, Any], what: str) -> FleetConfig:
    try:
        return FleetConfig.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc.errors())
        raise UserError(f"{what}: {problems}; expected {_SET_FORM}") from None


def _changes(sets: list[str] | None, replicas: list[str] | None) -> list[str]:
    return [f"--set {s}" for s in sets or []] + [f"--add-replica {r}" for r in replicas or []]


# --------------------------------------------------------------------------- plan


def _plan_table(plan: FleetMemoryPlan, title: str) -> Table:
    seed = {c.item: c for c in compare_with_seed(plan)}
    table = Table(title=title)
    for column in ("endpoint", "source", "slots x ctx", "cache", "weights", "KV", "KV/slot"):
        table.add_column(column)
    table.add_column("compute*")
    table.add_column("total", style="bold")
    if seed:
        table.add_column("seed est.")
    for row in plan.endpoints:
        weights = gib(row.weights_bytes) if row.source != "unknown" else "?"
        if row.weights_shared_with:
            weights += " (shared)"
        cells = [
            row.endpoint,
            row.source,
            f"{row.slots} x {row.ctx_per_slot}",
            row.cache_type_k
            if row.cache_type_k == row.cache_type_v
            else "/".join((row.cache_type_k, row.cache_type_v)),
            weights,
            gib(row.kv_bytes),
            gib(row.kv_bytes_per_slot),
            gib(row.compute_bytes) if row.compute_bytes else "-",
            gib(row.total_bytes),
        ]
        if seed:
            estimate = seed.get(row.endpoint)
            cells.append(f"~{estimate.seed_gb:g} GB" if estimate else "-")
        table.add_row(*cells)
    return table


def _print_machine(plan: FleetMemoryPlan, machine: MachineConfig | None) -> None:
    """Say which machine the plan is for when it is not this one."""
    if plan.machine_source != "declared" or machine is None:
        return
    named = f"{machine.name}, " if machine.name else ""
    console.print(
        f"for the machine the fleet declares: {escape(named)}{machine.memory_gib:g} GiB "
        f"({escape('[machine]')} in its file; this machine has {gib(machine_memory_bytes())}; "
        "--memory-gb overrides)"
    )


def _print_totals(plan: FleetMemoryPlan) -> None:
    console.print(
        f"fleet {plan.fleet}: weights {gib(plan.weights_bytes)} + KV {gib(plan.kv_bytes)} + "
        f"compute {gib(plan.compute_bytes)} (estimate) = [bold]{gib(plan.total_bytes)}[/] "
        f"of {gib(plan.machine_bytes)} ({plan.machine_source})"
    )
    warning = plan.warning()
    if warning:
        console.print(f"[bold red]OVER-COMMITTED:[/] {escape(warning)}")
    else:
        share = plan.headroom_bytes / plan.machine_bytes if plan.machine_bytes else 0
        console.print(
            f"[green]fits:[/] {gib(plan.headroom_bytes)} left ({share:.0%}) for the OS and apps"
        )
    if plan.incomplete:
        console.print(
            f"[yellow]not counted (model unknown):[/] {', '.join(plan.incomplete)}; give its "
            "GGUF path or declare [..launch.model_info]"
        )
    for row in plan.endpoints:
        for note in row.notes:
            console.print(f"[yellow]{escape(row.endpoint)}:[/] {escape(note)}")
    console.print(
        "* compute = ESTIMATE: 16 x ubatch x (n_embd + n_ff) + logits buffer, flash attention "
        "assumed; (shared) = the same weights file is mapped by an endpoint above, counted once"
    )


def _print_seed(plan: FleetMemoryPlan) -> None:
    rows = compare_with_seed(plan)
    if not rows:
        return
    table = Table(title="original design's M3 Ultra 256 GB table vs computed")
    for column in ("item", "seed estimate", "computed", "computed / seed"):
        table.add_column(column)
    for row in rows:
        off = "" if 0.8 <= row.ratio <= 1.25 else " [bold red]off[/]"
        table.add_row(
            row.item, f"~{row.seed_gb:g} GB", f"{row.computed_gib:.1f} GiB", f"{row.ratio:.2f}{off}"
        )
    console.print(table)
    console.print(
        "seed total resident ~154 GB + OS/headroom ~40 GB + KV ~62 GB = 256 GB; "
        f"computed headroom at 256 GiB: {gib(256 * 1024**3 - plan.total_bytes)}"
    )


def _print_change(before: FleetMemoryPlan, after: FleetMemoryPlan, changes: list[str]) -> None:
    table = Table(title=f"memory change: {' '.join(changes)}")
    for column in ("endpoint", "before", "after", "change"):
        table.add_column(column)
    old = {r.endpoint: r.total_bytes for r in before.endpoints}
    for row in after.endpoints:
        was = old.get(row.endpoint)
        delta = row.total_bytes - (was or 0)
        if was is not None and delta == 0:
            continue
        table.add_row(
            row.endpoint,
            "-" if was is None else gib(was),
            gib(row.total_bytes),
            f"{'+' if delta >= 0 else '-'}{gib(abs(delta))}",
        )
    delta = after.total_bytes - before.total_bytes
    table.add_row(
        "[bold]fleet[/]",
        gib(before.total_bytes),
        gib(after.total_bytes),
        f"{'+' if delta >= 0 else '-'}{gib(abs(delta))}",
    )
    console.print(table)


def _plan(config: FleetConfig, memory_bytes: int | None) -> FleetMemoryPlan:
    try:  # planned for the machine the fleet is for, wherever it is planned
        return plan_fleet(config, memory_bytes=memory_bytes, declared_machine=True)
    except ValueError as exc:  # an unknown KV cache type in extra_args
        raise FleetError(f"fleet {config.name}: {exc}") from None


@fleet_app.command("plan")
@shows_errors
def fleet_plan(
    fleet: FleetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    memory_gb: MemoryOption = None,
    set_values: SetOption = None,
    add_replica: ReplicaOption = None,
) -> None:
    """Memory per endpoint (weights, KV cache, compute estimate) against the machine's.

    The machine is the one the fleet file declares (``[machine] memory_gib``), else this
    one; ``--memory-gb`` overrides both. Exits 0 when the fleet fits, 1 when it
    over-commits the machine's memory.
    """
    config = load_fleet(fleet)
    memory_bytes = memory_override_bytes(memory_gb)
    changes = _changes(set_values, add_replica)
    before = _plan(config, memory_bytes)
    after = (
        _plan(apply_layout(config, set_values, add_replica), memory_bytes) if changes else before
    )
    if as_json:
        payload = after.to_json()
        if changes:
            payload["layout_changes"] = changes
            payload["before"] = before.to_json()["total"]
        typer.echo(json.dumps(payload, indent=2))
    else:
        title = f"memory plan: fleet {config.name}" + (" (changed layout)" if changes else "")
        console.print(_plan_table(after, title))
        _print_machine(after, config.machine)
        _print_totals(after)
        if changes:
            _print_change(before, after, changes)
        else:
            _print_seed(after)
    raise typer.Exit(1 if after.over_committed else 0)


# --------------------------------------------------------------------------- whatif


def _pct(value: float) -> str:
    return f"{value:.0%}"


def _print_whatif(report: WhatIf) -> None:
    current, changed = report.current, report.changed
    table = Table(title=f"what-if (SIMULATED): {report.scenario}, {' '.join(report.changes)}")
    for column in ("", "current", "changed"):
        table.add_column(column)
    table.add_row(
        "makespan (plan ready -> answer)",
        f"{current.makespan_s:.1f} s",
        f"{changed.makespan_s:.1f} s",
    )
    table.add_row("task phase", f"{current.task_phase_s:.1f} s", f"{changed.task_phase_s:.1f} s")
    table.add_row("synthesis", f"{current.synthesis_s:.1f} s", f"{changed.synthesis_s:.1f} s")
    console.print(table)
    per = Table(title="per endpoint (tasks): slots, utilisation, queue wait total / max")
    for column in ("endpoint", "current", "changed"):
        per.add_column(column)
    before = {e.endpoint: e for e in current.endpoints}
    for row in changed.endpoints:
        old = before.get(row.endpoint)
        if row.tasks == 0 and (old is None or old.tasks == 0):
            continue
        cells = [
            "-"
            if e is None
            else f"{e.slots} slots, {e.tasks} tasks, {_pct(e.utilisation)}, "
            f"wait {e.queue_wait_s:.1f} / {e.max_queue_wait_s:.1f} s"
            for e in (old, row)
        ]
        per.add_row(row.endpoint, *cells)
    console.print(per)
    for run in (current, changed):
        if run.error:
            console.print(f"[red]{run.layout} layout:[/] {escape(run.error)}")
    ratio = changed.makespan_s / current.makespan_s if current.makespan_s else 0.0
    console.print(
        f"the change: [bold]{report.verdict}[/] (makespan x{ratio:.2f}; SIMULATED seconds, "
        f"time scale {report.time_scale}, best of the runs; under 5% is run-to-run noise)"
    )


@fleet_app.command("whatif")
@shows_errors
def fleet_whatif(
    scenario: Annotated[
        str, typer.Option("--scenario", "-s", help="research_3, cad_fabrication_5 or FILE.json.")
    ],
    fleet: FleetOption = None,
    set_values: SetOption = None,
    add_replica: ReplicaOption = None,
    time_scale: Annotated[
        float, typer.Option(min=0.001, max=1.0, help="Wall seconds per simulated second.")
    ] = 0.25,
    repeats: Annotated[int, typer.Option(min=1, max=10, help="Runs per layout (best counts).")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Run a scenario on the SIMULATED fleet under the current and the changed layout."""
    if not bench_installed():  # the simulator it runs ships with the benchmarks
        raise UserError(bench_missing("kitty-orch fleet whatif"))
    from kitty.bench import load_scenario, what_if

    changes = _changes(set_values, add_replica)
    if not changes:
        raise UserError("give a layout change: --set TIER.FIELD=VALUE and/or --add-replica TIER")
    config = load_fleet(fleet)
    changed = apply_layout(config, set_values, add_replica)
    workload = load_scenario(scenario)
    err_console.print(f"running {workload.name} on two SIMULATED layouts of fleet {config.name}...")
    report = what_if(
        config, changed, workload, changes=changes, time_scale=time_scale, repeats=repeats
    )
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_whatif(report)
