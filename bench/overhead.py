"""Suite 2: per-task overhead of the product over the bare-asyncio oracle.

A large plan of 1-token tasks (agents in rotation over every endpoint, some
dependencies) makes the model calls as cheap as they get, so what is left is
orchestration: LangGraph supersteps and ``Send`` tasks, the completion registry, the slot
limiter, LangChain's chat model, progress events and result records.
``(product - oracle) / tasks`` is that cost per task.
"""

from __future__ import annotations

from typing import Any

from bench.bare import new_client, run_oracle, server_slots
from bench.env import BenchEnv
from bench.product import run_product
from bench.records import VariantRun, best
from bench.workload import GOAL, layered_plan

TARGET_MS_PER_TASK = 2.0


def task_count(env: BenchEnv) -> int:
    """200 tasks (60 with ``--quick``, 20 in smoke runs)."""
    return {"full": 200, "quick": 60, "smoke": 20}[env.size]


async def run_overhead(env: BenchEnv) -> dict[str, Any]:
    """Run the suite; returns JSON-ready results."""
    env.ensure_fleet()
    slots = await server_slots(env.config)
    count = task_count(env)
    tasks = layered_plan(count, tokens=1).tasks
    runs: dict[str, list[VariantRun]] = {"product": [], "oracle": []}
    # one unmeasured round warms connections and the servers' prompt caches
    for rep in range(env.reps + 1):
        order = ["product", "oracle"] if rep % 2 else ["oracle", "product"]
        for variant in order:
            if variant == "product":
                run, _ = await run_product(tasks, GOAL, env.fleet)
            else:
                async with new_client() as client:
                    run = await run_oracle(tasks, GOAL, env.config, client, slots)
            if run.error:
                env.log(f"  overhead {variant}: FAILED {run.error}")
            if rep:
                runs[variant].append(run)
    product, oracle = best(runs["product"]), best(runs["oracle"])
    per_task_ms = (product.wall_s - oracle.wall_s) / count * 1000
    env.log(
        f"  {count} tasks: product {product.wall_s:.2f}s  oracle {oracle.wall_s:.2f}s  "
        f"-> {per_task_ms:+.2f} ms/task"
    )
    return {
        "tasks": count,
        "max_tokens": 1,
        "reps": env.reps,
        "product": product.summary(),
        "oracle": oracle.summary(),
        "all_wall_s": {v: [round(r.wall_s, 4) for r in rs] for v, rs in runs.items()},
        "ms_per_task": round(per_task_ms, 3),
        "target_ms_per_task": TARGET_MS_PER_TASK,
        "target_met": bool(per_task_ms <= TARGET_MS_PER_TASK),
        "all_completed": bool(product.ok and oracle.ok),
    }
