"""Dependency-driven dispatch on the embedded fleet: no superstep barrier, isolated runs.

Plans are given (no planner) and every task is pinned to an exact token count with
``ignore_eos`` so the long task is reliably ~10x longer than each chain step.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from langchain_core.messages import BaseMessageChunk

from endpoints.config import FleetConfig
from graph import Plan, RunFinished, RunResult, Task, arun_goal, astream_goal
from graph.api import graph_for
from graph.context import Context
from graph.events import PlanReady, TaskFinished, TaskStarted
from tests.helpers import FAST, pinned_task

pytestmark = pytest.mark.integration


def pinned(
    task_id: str, agent: str, tokens: int, deps: list[str] | None = None, text: str = ""
) -> Task:
    description = text or f"Step {task_id}: write one short sentence about bridges."
    return pinned_task(task_id, agent, deps, tokens=tokens, description=description)


# The long task holds a tools slot; the chain runs on the coder, reasoning and (another)
# tools slot, so each chain step can start as soon as its predecessor is done.
LONG_BESIDE_CHAIN = Plan(
    tasks=[
        pinned("long", "researcher", 160),
        pinned("a", "coder", 16),
        pinned("b", "reasoner", 16, ["a"]),
        pinned("c", "analyst", 16, ["b"]),
    ]
)


def at(moment: float | None) -> float:
    """A task's timestamp, which the run sets on every task that ran."""
    assert moment is not None
    return moment


def timeline(result: RunResult) -> str:
    t0 = min(r.started_at for r in result.tasks if r.started_at)
    return "\n".join(
        f"{r.task_id:>5} {r.endpoint}#{r.slot} ready {r.ready_at - t0:6.2f} "
        f"start {r.started_at - t0:6.2f} end {r.finished_at - t0:6.2f} "
        f"tokens {r.completion_tokens}"
        for r in result.tasks
        if r.started_at and r.finished_at and r.ready_at
    )


async def test_chain_runs_beside_the_long_task(embedded_fleet: FleetConfig) -> None:
    result = await arun_goal("Explain bridges", plan=LONG_BESIDE_CHAIN, **FAST)
    summary = f"timeline (s from first start):\n{timeline(result)}\n"
    summary += f"peak concurrency {result.metrics.peak_concurrency}"
    print(summary)

    assert [r.task_id for r in result.tasks] == ["long", "a", "b", "c"]
    assert all(r.status == "completed" for r in result.tasks), result.tasks
    by_id = {r.task_id: r for r in result.tasks}
    assert by_id["long"].completion_tokens == 160
    assert all(by_id[t].completion_tokens == 16 for t in "abc")
    # Dependencies are honoured: a step is ready only once its input is finished.
    assert at(by_id["b"].ready_at) >= at(by_id["a"].finished_at)
    assert at(by_id["c"].ready_at) >= at(by_id["b"].finished_at)
    assert at(by_id["b"].started_at) >= at(by_id["a"].finished_at)
    # No barrier: the chain's middle step started while the long task still ran.
    assert at(by_id["b"].started_at) < at(by_id["long"].finished_at)
    assert result.metrics.peak_concurrency >= 2
    assert result.metrics.tasks_completed == 4
    assert result.answer


async def test_concurrent_goals_keep_their_results_apart(embedded_fleet: FleetConfig) -> None:
    # Same task ids in both plans: only the run id keeps them apart. Run two's
    # descriptions are much longer, so its prompts are measurably bigger.
    wordy = "Describe in detail, covering materials, loads, history and maintenance, " * 6
    plan_one = Plan(tasks=[pinned("s1", "researcher", 8), pinned("s2", "analyst", 8, ["s1"])])
    plan_two = Plan(
        tasks=[
            pinned("s1", "researcher", 12, text=wordy + "bridges."),
            pinned("s2", "analyst", 12, ["s1"], text=wordy + "tunnels."),
            pinned("only_two", "coder", 8),
        ]
    )
    one, two = await asyncio.gather(
        arun_goal("Goal one: bridges", plan=plan_one, **FAST),
        arun_goal("Goal two: tunnels", plan=plan_two, **FAST),
    )
    assert one.run_id and two.run_id and one.run_id != two.run_id
    assert (one.goal, two.goal) == ("Goal one: bridges", "Goal two: tunnels")
    assert [r.task_id for r in one.tasks] == ["s1", "s2"]
    assert [r.task_id for r in two.tasks] == ["s1", "only_two", "s2"]  # topological order
    assert all(r.status == "completed" for r in one.tasks + two.tasks)
    # Each run got its own model calls: the pinned token counts say whose task it was.
    assert [r.completion_tokens for r in one.tasks] == [8, 8]
    assert [r.completion_tokens for r in two.tasks] == [12, 8, 12]
    assert two.result("s1").prompt_tokens > one.result("s1").prompt_tokens + 50
    # s2 of each run waited for its own run's s1.
    for run in (one, two):
        assert at(run.result("s2").ready_at) >= at(run.result("s1").finished_at)
    assert one.result("s2").output != two.result("s2").output
    assert one.metrics.tasks_total == 2 and two.metrics.tasks_total == 3


async def test_astream_goal_event_order(embedded_fleet: FleetConfig) -> None:
    plan = Plan(
        tasks=[
            pinned("x", "researcher", 8),
            pinned("y", "coder", 8),
            pinned("z", "reasoner", 8, ["x", "y"]),
        ]
    )
    events = [e async for e in astream_goal("Stream it", plan=plan, **FAST)]
    kinds = [e.kind for e in events]
    assert isinstance(events[-1], RunFinished)
    assert kinds.count("run_finished") == 1
    assert kinds.count("plan_ready") == 1
    run_id = events[-1].result.run_id
    assert all(e.run_id == run_id for e in events)
    plan_at = kinds.index("plan_ready")
    plan_ready = events[plan_at]
    assert isinstance(plan_ready, PlanReady)
    assert [t.id for t in plan_ready.plan.tasks] == ["x", "y", "z"]
    for task_id in "xyz":
        started = [
            i for i, e in enumerate(events) if isinstance(e, TaskStarted) and e.task_id == task_id
        ]
        finished = [
            i for i, e in enumerate(events) if isinstance(e, TaskFinished) and e.task_id == task_id
        ]
        assert len(started) == 1 and len(finished) == 1, task_id
        assert plan_at < started[0] < finished[0]
    z_start = next(
        i for i, e in enumerate(events) if isinstance(e, TaskStarted) and e.task_id == "z"
    )
    for dep in "xy":
        assert any(isinstance(e, TaskFinished) and e.task_id == dep for e in events[:z_start]), (
            f"z started before {dep} finished"
        )
    assert "task_waiting" in kinds  # z waited for its dependencies
    assert events[-1].result.answer


async def test_messages_mode_streams_tokens_from_agent_nodes(
    embedded_fleet: FleetConfig,
) -> None:
    plan = Plan(tasks=[pinned("p", "researcher", 12), pinned("q", "coder", 12)])
    context = Context(voice=False, synthesis_max_tokens=8)
    chunks: dict[str, list[str]] = {}
    async for part in graph_for().astream(
        {"goal": "Stream tokens", "plan": plan}, context=context, stream_mode="messages"
    ):
        # The "messages" mode yields (message chunk, metadata) pairs.
        message, metadata = cast(tuple[BaseMessageChunk, dict[str, Any]], part)
        node = metadata.get("langgraph_node")
        if node == "agent":
            task_id = metadata.get("kitty_task_id", "?")
            chunks.setdefault(task_id, []).append(str(message.content))
        elif node is not None:
            chunks.setdefault(f"node:{node}", []).append(str(message.content))
    assert set(chunks) >= {"p", "q"}, sorted(chunks)
    for task_id in "pq":
        # Streamed piece by piece, not as one final message.
        assert sum(1 for piece in chunks[task_id] if piece) >= 4, chunks[task_id]
    assert "node:synthesizer" in chunks
