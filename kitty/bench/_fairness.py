"""Suite: fairness. One big goal and five small goals submitted together on one fleet.

The goals of :func:`kitty.bench._workload.fairness_plans` (given plans, big first) start at the
same instant on the SIMULATED ``m3-ultra-sim`` fleet with scarce slots
(:data:`kitty.bench._workload.CONTENTION_SLOTS`), once per slot order, interleaved:

- ``fifo``: ``slot_order="fifo"``, strict arrival order (the big goal's twelve tasks
  arrived first, so every small goal waits behind them);
- ``priority``: the default order (longest remaining path first, and least attained
  service across runs where the product has it).

A goal's latency runs from its submission to its ``RunFinished`` event (tasks plus a
4-token synthesis, voice off). Reported: mean and p95 over the small goals and over all
six, and the big goal's latency, each the median over the repetitions.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from endpoints.config import load_fleet
from graph import Context, Plan, arun_goal
from kitty.bench._env import BenchEnv
from kitty.bench._simserve import SIM_PROFILE, sim_fleet
from kitty.bench._workload import fairness_plans

TOKEN_SCALE = {"full": 1.0, "quick": 0.5, "smoke": 0.25}
TIME_SCALE = {"full": 0.05, "quick": 0.05, "smoke": 0.01}
SYNTHESIS_TOKENS = 4


def orders() -> list[str]:
    """The slot orders to compare (only the default before the switch exists)."""
    return ["fifo", "priority"] if "slot_order" in Context.model_fields else ["priority"]


def p95(values: list[float]) -> float:
    """95th percentile, linear between the closest ranks (the value itself for one)."""
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def latency_stats(latencies: list[float], big_index: int = 0) -> dict[str, float]:
    """Mean and p95 of the small goals and of all, plus the big goal's latency."""
    small = [s for i, s in enumerate(latencies) if i != big_index]
    return {
        "small_mean_s": statistics.fmean(small) if small else 0.0,
        "small_p95_s": p95(small),
        "all_mean_s": statistics.fmean(latencies) if latencies else 0.0,
        "all_p95_s": p95(latencies),
        "big_s": latencies[big_index] if latencies else 0.0,
    }


async def _goal(goal: str, plan: Plan, fleet: str, settings: dict[str, Any]) -> float:
    began = time.perf_counter()
    result = await arun_goal(
        goal,
        plan=plan.model_copy(deep=True),
        fleet=fleet,
        voice=False,
        synthesis_max_tokens=SYNTHESIS_TOKENS,
        **settings,
    )
    failed = [t.task_id for t in result.tasks if t.status != "completed"]
    if failed:
        raise RuntimeError(f"{goal!r}: tasks {failed} did not complete")
    return time.perf_counter() - began


async def run_together(plans: list[tuple[str, Plan]], fleet: str, order: str) -> list[float]:
    """Submit every goal at once with one slot order; wall seconds per goal, in order."""
    settings = {"slot_order": order} if "slot_order" in Context.model_fields else {}
    # created in list order, so the big goal's tasks reach the slots first
    tasks = [asyncio.create_task(_goal(goal, plan, fleet, settings)) for goal, plan in plans]
    return list(await asyncio.gather(*tasks))


async def run_fairness(env: BenchEnv) -> dict[str, Any]:
    """Run the suite; returns JSON-ready results (times in SIMULATED seconds)."""
    from kitty.bench._contention import scarce_slots

    scale = TIME_SCALE[env.size]
    plans = fairness_plans(TOKEN_SCALE[env.size])
    names = orders()
    runs: dict[str, list[dict[str, float]]] = {o: [] for o in names}
    with sim_fleet(scale, slots=scarce_slots(load_fleet(SIM_PROFILE))) as fleet_path:
        await run_together(plans[1:2], fleet_path, names[-1])  # warm-up: imports, compiles
        for rep in range(env.reps):
            for order in names[rep % len(names) :] + names[: rep % len(names)]:
                seconds = await run_together(plans, fleet_path, order)
                stats = latency_stats([s / scale for s in seconds])
                runs[order].append(stats)
                env.log(
                    f"  fairness {order:8s}: small mean {stats['small_mean_s']:6.1f}s "
                    f"p95 {stats['small_p95_s']:6.1f}s  all mean {stats['all_mean_s']:6.1f}s "
                    f"p95 {stats['all_p95_s']:6.1f}s  big {stats['big_s']:6.1f}s"
                )
    medians = {
        order: {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}
        for order, rs in runs.items()
    }
    result: dict[str, Any] = {
        "simulated": True,
        "time_scale": scale,
        "token_scale": TOKEN_SCALE[env.size],
        "reps": env.reps,
        "goals": [
            {
                "goal": goal,
                "tasks": len(plan.tasks),
                "tokens": sum(t.max_tokens or 0 for t in plan.tasks),
            }
            for goal, plan in plans
        ],
        "orders": names,
        "median": medians,
        "runs": runs,
    }
    if "fifo" in medians:
        fifo, fair = medians["fifo"], medians["priority"]
        result["priority_over_fifo"] = {
            k: round(fair[k] / fifo[k], 3) if fifo[k] else 0.0 for k in fifo
        }
    return result


def render_fairness(suite: dict[str, Any]) -> list[str]:
    """Markdown of the fairness suite."""
    goals = suite["goals"]
    big, small = goals[0], goals[1:]
    lines = [
        f"**SIMULATED** (`m3-ultra-sim`, scarce slots, time scale {suite['time_scale']}). "
        f"One big goal ({big['tasks']} tasks, {big['tokens']} tokens) and {len(small)} small "
        f"ones ({small[0]['tasks'] if small else 0} tasks each) submitted together; goal "
        f"latency = submission to RunFinished, SIMULATED seconds, median of {suite['reps']}.",
        "",
        "| slot order | small goals: mean | small goals: p95 | all: mean | all: p95 | big goal |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for order in suite["orders"]:
        m = suite["median"][order]
        lines.append(
            f"| {order} | {m['small_mean_s']:.1f} s | {m['small_p95_s']:.1f} s | "
            f"{m['all_mean_s']:.1f} s | {m['all_p95_s']:.1f} s | {m['big_s']:.1f} s |"
        )
    ratio = suite.get("priority_over_fifo")
    if ratio:
        lines.append(
            "| **priority / fifo** | "
            + " | ".join(
                f"**{ratio[k]:.2f}x**"
                for k in ("small_mean_s", "small_p95_s", "all_mean_s", "all_p95_s", "big_s")
            )
            + " |"
        )
    else:
        lines += ["", "(`slot_order` is not in the run settings yet: only the default order.)"]
    return lines
