"""One orchestrator process of ``bench scale --processes N`` (run as ``python -m``).

``python -m kitty.bench.scale_worker FLEET GOALS FIRST_INDEX IN_FLIGHT``: warms up (imports,
slot discovery), prints ``ready``, waits for a line on stdin, then runs ``GOALS`` small
goals (:func:`kitty.bench._workload.small_goal_plan`, ``IN_FLIGHT`` at a time) through the Python
API and prints one JSON line: goals completed, errors, wall seconds from the start line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from endpoints.fleet import get_runtime
from graph import RunResult, arun_goal
from kitty.bench._workload import small_goal_plan

SETTINGS: dict[str, Any] = {"voice": False, "synthesis_max_tokens": 4}


def completed(result: RunResult | BaseException) -> bool:
    """True when a goal ran and every task of it completed."""
    return not isinstance(result, BaseException) and all(
        t.status == "completed" for t in result.tasks
    )


async def run_goals(fleet: str, goals: int, first: int, in_flight: int) -> dict[str, Any]:
    """Run ``goals`` small goals, ``in_flight`` at a time; returns the JSON summary."""
    gate = asyncio.Semaphore(in_flight)

    async def one(index: int) -> RunResult:
        async with gate:
            return await arun_goal(
                f"Scale test: plan a small printed part, variant {index}",
                plan=small_goal_plan(index),
                fleet=fleet,
                **SETTINGS,
            )

    began = time.perf_counter()
    results = await asyncio.gather(*(one(first + i) for i in range(goals)), return_exceptions=True)
    wall = time.perf_counter() - began
    return {
        "goals": goals,
        "completed": sum(1 for r in results if completed(r)),
        "errors": [repr(r) for r in results if isinstance(r, BaseException)][:3],
        "wall_s": round(wall, 2),
    }


async def _main(fleet: str, goals: int, first: int, in_flight: int) -> None:
    import langchain_openai  # noqa: F401  (2 s of imports, before the start line)

    await get_runtime(fleet).discover()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    print(json.dumps(await run_goals(fleet, goals, first, in_flight)), flush=True)


if __name__ == "__main__":
    fleet_arg, goals_arg, first_arg, in_flight_arg = sys.argv[1:5]
    asyncio.run(_main(fleet_arg, int(goals_arg), int(first_arg), int(in_flight_arg)))
