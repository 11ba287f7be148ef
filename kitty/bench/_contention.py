"""Suite: contention. Long chains behind wide fan-outs of short tasks, on scarce slots.

The DAGs of :func:`kitty.bench._workload.contention_dags` list their short independent tasks
first, then a long chain, and run with 1-2 slots per endpoint
(:data:`kitty.bench._workload.CONTENTION_SLOTS`). Three schedulers, interleaved, best of N:

- ``oracle``: the eager FIFO oracle (:func:`kitty.bench._bare.run_oracle`): every task queues
  for its endpoint's ``asyncio.Semaphore`` the moment its dependencies finish, and the
  semaphore grants in arrival order, so the chain waits behind the fan-out;
- ``product``: the product with its default slot order (priority: the longest
  remaining path first, see :func:`graph.planning._validation.remaining_critical_path`);
- ``product_fifo``: the product with ``slot_order="fifo"`` (strict arrival order), when
  the run settings have that switch.

Each is also held against the list-scheduling lower bound (:mod:`kitty.bench._bound`). The main
figures come from the SIMULATED ``m3-ultra-sim`` fleet (servers started with the scarce
slots); one DAG also runs on a private copy of the embedded fleet with the same slots.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from endpoints.config import FleetConfig, load_fleet
from graph import Context
from kitty.bench._bare import new_client, server_slots
from kitty.bench._bound import (
    EndpointRates,
    lower_bound,
    measure_rates,
    rates_json,
    sim_rates,
    used_endpoints,
)
from kitty.bench._env import BenchEnv
from kitty.bench._prompting import endpoint_for
from kitty.bench._records import geomean
from kitty.bench._scheduling import compare
from kitty.bench._simserve import SIM_PROFILE, sim_fleet
from kitty.bench._workload import CONTENTION_SLOTS, Dag, contention_dags

TARGET_RATIO = 0.85
"""Most the product (priority order) may take, relative to the FIFO oracle (geomean)."""
TOKEN_SCALE = {"full": 1.0, "quick": 0.5, "smoke": 0.25}
TIME_SCALE = {"full": 0.05, "quick": 0.05, "smoke": 0.01}
EMBEDDED_TOKEN_SCALE = {"full": 0.5, "quick": 0.25, "smoke": 0.125}
EMBEDDED_DAG = "chain_behind_fan_out"
PROBE_TOKENS = {"full": 64, "quick": 32, "smoke": 16}


def variants() -> list[str]:
    """The schedulers to compare: the FIFO product only where the switch exists."""
    names = ["oracle", "product"]
    if "slot_order" in Context.model_fields:
        names.append("product_fifo")
    return names


def scarce_slots(fleet: FleetConfig) -> dict[str, int]:
    """Endpoint name -> scarce slot count (:data:`CONTENTION_SLOTS`, by tier)."""
    return {fleet.tier(tier).endpoints[0].name: n for tier, n in CONTENTION_SLOTS.items()}


def suite_dags(size: str) -> list[Dag]:
    """The DAGs for a run size (smoke: the first only)."""
    dags = contention_dags(TOKEN_SCALE[size])
    return dags[:1] if size == "smoke" else dags


def add_bounds(
    result: dict[str, Any],
    dags: list[Dag],
    fleet: FleetConfig,
    rates: dict[str, EndpointRates],
    seconds_per_wall_s: float,
) -> None:
    """Put the lower bound and the ratios to it (and fifo / priority) into each row.

    Prompt sizes are the ones the servers reported for the oracle's best run (outputs
    are seeded, so every scheduler sends the same prompts).
    """
    endpoints = {t.id: endpoint_for(t, fleet).name for dag in dags for t in dag.tasks}
    for row, dag in zip(result["dags"], dags, strict=True):
        spans = row["best_runs"]["oracle"]["spans"]
        prompts = {s["task_id"]: int(s["prompt_tokens"]) for s in spans}
        bound = lower_bound(dag.tasks, endpoints, prompts, rates)
        row["bound"] = bound
        row["ratio_to_bound"] = {
            v: round(best["seconds"] / bound["bound_s"], 3) if bound["bound_s"] else 0.0
            for v, best in row["best"].items()
        }
        if "product_fifo" in row["best"]:
            fifo, priority = row["best"]["product_fifo"], row["best"]["product"]
            row["fifo_over_priority"] = (
                round(fifo["wall_s"] / priority["wall_s"], 3) if priority["wall_s"] else 0.0
            )
    names = list(result["dags"][0]["best"]) if result["dags"] else []
    result["geomean_ratio_to_bound"] = {
        v: round(geomean([r["ratio_to_bound"][v] for r in result["dags"]]), 3) for v in names
    }
    if any("fifo_over_priority" in r for r in result["dags"]):
        result["geomean_fifo_over_priority"] = round(
            geomean([r["fifo_over_priority"] for r in result["dags"]]), 3
        )
    result["rates"] = rates_json(rates)
    result["seconds_per_wall_s"] = seconds_per_wall_s


def embedded_dag(size: str) -> Dag:
    """The DAG for the embedded fleet (smoke: 4 short tasks and a 3-step chain of it)."""
    dag = next(d for d in contention_dags(EMBEDDED_TOKEN_SCALE[size]) if d.name == EMBEDDED_DAG)
    if size != "smoke":
        return dag
    keep = {"w1", "w2", "w3", "w4", "c1", "c2", "c3"}
    return replace(dag, tasks=[t for t in dag.tasks if t.id in keep])


async def _simulated(env: BenchEnv) -> dict[str, Any]:
    """The main figures: every DAG on the SIMULATED fleet with scarce slots."""
    scale = TIME_SCALE[env.size]
    dags = suite_dags(env.size)
    slots = scarce_slots(load_fleet(SIM_PROFILE))
    with sim_fleet(scale, slots=slots) as fleet_path:
        sub = BenchEnv(fleet=fleet_path, size=env.size, reps=env.reps, out=env.out, log=env.log)
        result = await compare(
            sub,
            dags,
            seconds_per_wall_s=1 / scale,
            label="contention-sim-",
            variants=variants(),
            target=TARGET_RATIO,
        )
        fleet = sub.config
    rates = {name: sim_rates(name, n) for name, n in result["slots"].items()}
    add_bounds(result, dags, fleet, rates, 1 / scale)
    return {**result, "time_scale": scale, "token_scale": TOKEN_SCALE[env.size]}


async def _embedded(env: BenchEnv) -> dict[str, Any]:
    """One DAG on a private copy of the embedded fleet with the same scarce slots."""
    if not env.config.embedded:
        return {"skipped": f"fleet {env.config.name!r} is not embedded (needs a private copy)"}
    from kitty.bench._private import private_fleet

    dag = embedded_dag(env.size)
    with private_fleet(env.fleet, scarce_slots(env.config)) as fleet_path:
        sub = BenchEnv(fleet=fleet_path, size=env.size, reps=env.reps, out=env.out, log=env.log)
        fleet = sub.config
        slots = await server_slots(fleet)
        async with new_client() as client:
            rates = await measure_rates(
                used_endpoints(dag.tasks, fleet), slots, client, PROBE_TOKENS[env.size]
            )
        result = await compare(
            sub,
            [dag],
            label="contention-embedded-",
            variants=variants(),
            target=TARGET_RATIO,
            prime=env.size != "smoke",  # a smoke run only checks that it all runs
        )
    add_bounds(result, [dag], fleet, rates, 1.0)
    return {**result, "token_scale": EMBEDDED_TOKEN_SCALE[env.size]}


async def run_contention(env: BenchEnv) -> dict[str, Any]:
    """Run the suite; returns JSON-ready results (simulated and embedded parts)."""
    simulated = await _simulated(env)
    embedded = await _embedded(env)
    return {
        "simulated": simulated,
        "embedded": embedded,
        "target_ratio": TARGET_RATIO,
        "target_met": simulated["target_met"],
        "fifo_available": "product_fifo" in variants(),
    }


def _table(part: dict[str, Any], unit: str) -> list[str]:
    names = list(part["dags"][0]["best"]) if part["dags"] else []
    lines = [
        f"Task-phase time ({unit}), best of {part['reps']} (token scale "
        f"{part['token_scale']}), slots {part['slots']}; in brackets: ratio to the FIFO "
        "oracle, then to the lower bound.",
        "",
        "| DAG | shape | tasks | lower bound (binding) | "
        + " | ".join(names)
        + " | fifo / priority |",
        "|---|---|---:|---:|" + "---:|" * len(names) + "---:|",
    ]
    for row in part["dags"]:
        cells = []
        for v in names:
            best = row["best"][v]
            mark = "" if best["ok"] else " FAILED"
            cells.append(
                f"{best['seconds']:.2f} s ({row['ratio_to_oracle'][v]:.2f}x, "
                f"{row['ratio_to_bound'][v]:.2f}x){mark}"
            )
        bound = row["bound"]
        fifo = row.get("fifo_over_priority")
        lines.append(
            f"| {row['name']} | {row['shape']} | {row['tasks']} | {bound['bound_s']:.2f} s "
            f"({bound['binding']}) | " + " | ".join(cells) + f" | {fifo or '-'} |"
        )
    gm, gm_bound = part["geomean_ratio_to_oracle"], part["geomean_ratio_to_bound"]
    fifo_gm = part.get("geomean_fifo_over_priority")
    lines.append(
        "| **geomean** | | | | "
        + " | ".join(f"**{gm[v]:.3f}x**, {gm_bound[v]:.3f}x" for v in names)
        + f" | {fifo_gm or '-'} |"
    )
    return lines


def render_contention(suite: dict[str, Any]) -> list[str]:
    """Markdown of the contention suite."""
    sim = suite["simulated"]
    verdict = "met" if suite["target_met"] else "NOT met"
    lines = ["### SIMULATED fleet (`m3-ultra-sim`, scarce slots)", ""]
    lines += _table(sim, f"SIMULATED seconds, time scale {sim['time_scale']}")
    lines += [
        "",
        f"Target product <= {suite['target_ratio']}x the FIFO oracle (geomean, simulated): "
        f"**{verdict}**."
        + (
            ""
            if suite["fifo_available"]
            else " (`slot_order` not in the run settings yet: no product_fifo column.)"
        ),
    ]
    embedded = suite["embedded"]
    lines += ["", "### Embedded fleet (private copy, same scarce slots)", ""]
    if embedded.get("skipped"):
        lines.append(f"Skipped: {embedded['skipped']}")
    else:
        lines += _table(embedded, "seconds")
        lines += ["", f"Measured decode rates (tokens/s): {embedded['rates']}."]
    lines += [
        "",
        "Lower bound: max(critical path, per endpoint: completion tokens / best aggregate "
        "decode rate, prompt tokens / prefill rate); a task takes at least prompt / prefill "
        "+ completion / one sequence's decode rate. Simulated rates are the simulator's "
        "timing model; embedded ones are llama.cpp's timings (decode only, no prefill).",
    ]
    return lines
