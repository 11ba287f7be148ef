"""Python API: run a goal and get a :class:`~graph.schemas.RunResult`, or stream progress.

Runs are isolated: each has its own ``run_id`` and completion registry; concurrent runs
in one process share only the endpoint limiters (so slot caps hold across them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from graph.builder import build_graph
from graph.context import Context
from graph.events import ProgressEvent, RunFinished, parse_event
from graph.metrics import compute_metrics
from graph.schemas import Plan, RunResult, TaskResult

_graphs: dict[int, CompiledStateGraph] = {}


def graph_for(checkpointer: Any | None = None) -> CompiledStateGraph:
    """The compiled graph for a checkpointer (compiled once, then reused)."""
    key = id(checkpointer)
    compiled = _graphs.get(key)
    if compiled is None:
        compiled = _graphs[key] = build_graph(checkpointer=checkpointer)
    return compiled


def make_context(
    *,
    fleet: str | None = None,
    max_tasks: int = 6,
    voice: bool = True,
    context: Context | None = None,
    **settings: Any,
) -> Context:
    """Build a :class:`Context` from keyword settings (``context`` wins when given)."""
    if context is not None:
        return context
    if not 1 <= max_tasks <= 50:
        raise ValueError(f"max_tasks must be between 1 and 50, got {max_tasks}")
    if fleet is not None:
        settings["fleet"] = str(fleet)
    return Context(max_tasks=max_tasks, voice=voice, **settings)


def _as_plan(plan: Plan | dict[str, Any] | None) -> Plan | None:
    if plan is None or isinstance(plan, Plan):
        return plan
    return Plan.model_validate(plan)


def build_result(
    values: dict[str, Any], *, goal: str, wall_s: float, thread_id: str | None
) -> RunResult:
    """Turn the graph's final state into a :class:`RunResult`."""
    plan = values.get("plan")
    plan = plan if isinstance(plan, Plan) else Plan.model_validate(plan)
    raw_results = values.get("results") or {}
    results = {
        k: v if isinstance(v, TaskResult) else TaskResult.model_validate(v)
        for k, v in raw_results.items()
    }
    metrics = compute_metrics(
        plan, results, values.get("timings") or {}, values.get("usage") or {}, wall_s
    )
    return RunResult(
        goal=values.get("goal") or goal,
        answer=values.get("answer") or "",
        voice_summary=values.get("voice_summary"),
        plan=plan,
        tasks=[results[t.id] for t in plan.tasks if t.id in results],
        metrics=metrics,
        thread_id=thread_id,
        run_id=values.get("run_id") or "",
        warnings=list(values.get("warnings") or []),
    )


async def astream_goal(
    goal: str,
    *,
    plan: Plan | dict[str, Any] | None = None,
    max_tasks: int = 6,
    voice: bool = True,
    fleet: str | None = None,
    context: Context | None = None,
    checkpointer: Any | None = None,
    thread_id: str | None = None,
    **settings: Any,
) -> AsyncIterator[ProgressEvent]:
    """Run a goal, yielding typed progress events and finally :class:`RunFinished`.

    Args:
        goal: What to do, in plain words.
        plan: A ready plan (skips the planner; validated strictly).
        max_tasks: Most tasks the planner may create.
        voice: Produce a voice summary.
        fleet: Fleet profile name or path (default ``$KITTY_FLEET`` or ``embedded``).
        context: Full settings; overrides the keyword settings when given.
        checkpointer: LangGraph checkpointer for durable runs.
        thread_id: Checkpoint thread (generated when a checkpointer is given).
        **settings: Further :class:`Context` fields (``thinking``, ``task_timeout_s``...).

    Yields:
        Progress events; the last one is :class:`RunFinished` with the result.
    """
    run_context = make_context(
        fleet=fleet, max_tasks=max_tasks, voice=voice, context=context, **settings
    )
    if checkpointer is not None and thread_id is None:
        thread_id = uuid.uuid4().hex
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}} if thread_id else {}
    compiled = graph_for(checkpointer)
    state_input = {"goal": goal, "plan": _as_plan(plan)}
    started = time.perf_counter()
    values: dict[str, Any] = {}
    async for mode, chunk in compiled.astream(
        state_input, config, context=run_context, stream_mode=["custom", "values"]
    ):
        if mode == "custom" and isinstance(chunk, dict) and "kind" in chunk:
            yield parse_event(chunk)
        elif mode == "values":
            values = chunk
    result = build_result(
        values, goal=goal, wall_s=time.perf_counter() - started, thread_id=thread_id
    )
    yield RunFinished(run_id=result.run_id, result=result)


async def arun_goal(goal: str, **kwargs: Any) -> RunResult:
    """Run a goal to the end and return its result (same arguments as :func:`astream_goal`).

    Task failures never raise: they are in ``result.tasks`` and named in the answer. Bad
    input raises ``ValueError`` subclasses (``PlanError``, ``FleetError``) with a message
    that says what to fix.
    """
    result: RunResult | None = None
    async for event in astream_goal(goal, **kwargs):
        if isinstance(event, RunFinished):
            result = event.result
    assert result is not None
    return result


def run_goal(goal: str, **kwargs: Any) -> RunResult:
    """Synchronous :func:`arun_goal`; works where an event loop already runs (Jupyter).

    The async graph runs on a fresh event loop (in a worker thread when this thread
    already has a running loop), so agent tasks waiting on dependencies never hold a
    thread of their own.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun_goal(goal, **kwargs))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, arun_goal(goal, **kwargs)).result()
