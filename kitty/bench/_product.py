"""The product's graph as a benchmark variant (the public streaming API, voice off).

The task phase is timed from the ``plan_ready`` event to the ``synthesizing`` phase
event, as the caller receives them: it covers dispatch, every agent node, the
dependency waits and the superstep that collects the results, but not the synthesis
that follows (kept tiny) - the baselines have no synthesis either.
"""

from __future__ import annotations

import time
from typing import Any

from graph import PhaseStarted, Plan, PlanReady, RunFinished, RunResult, Task, astream_goal
from kitty.bench._records import TaskSpan, VariantRun

SYNTHESIS_TOKENS = 4


def spans_of(result: RunResult) -> list[TaskSpan]:
    """Task spans from a run result's timestamps."""
    return [
        TaskSpan(
            task_id=r.task_id,
            endpoint=r.endpoint or "",
            started_at=r.started_at or r.finished_at or 0.0,
            finished_at=r.finished_at or 0.0,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            ok=r.status == "completed",
        )
        for r in result.tasks
    ]


async def run_product(
    tasks: list[Task], goal: str, fleet: str, **settings: Any
) -> tuple[VariantRun, RunResult | None]:
    """Run a given plan through :func:`graph.api.astream_goal`.

    Args:
        tasks: The DAG.
        goal: Goal text.
        fleet: Fleet profile.
        **settings: Further run settings (defaults: voice off, 4-token synthesis).

    Returns:
        The timed run and the full :class:`RunResult` (for timelines).
    """
    settings = {"voice": False, "synthesis_max_tokens": SYNTHESIS_TOKENS, **settings}
    plan = Plan(tasks=[t.model_copy(deep=True) for t in tasks], source="given")
    ready_at: float | None = None
    synth_at: float | None = None
    result: RunResult | None = None
    began = time.perf_counter()
    try:
        async for event in astream_goal(goal, plan=plan, fleet=fleet, **settings):
            if isinstance(event, PlanReady):
                ready_at = time.perf_counter()
            elif isinstance(event, PhaseStarted) and event.phase == "synthesizing":
                synth_at = time.perf_counter()
            elif isinstance(event, RunFinished):
                result = event.result
    except Exception as exc:  # report, don't crash the whole benchmark
        return VariantRun("product", time.perf_counter() - began, [], repr(exc)), None
    if result is None or ready_at is None or synth_at is None:
        return VariantRun("product", 0.0, [], "the run emitted no plan/synthesis events"), result
    texts = {r.task_id: r.output for r in result.tasks}
    return VariantRun("product", synth_at - ready_at, spans_of(result), outputs=texts), result
