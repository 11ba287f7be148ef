"""The Python API's contract: results, bad input errors, the sync wrapper."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from endpoints.config import FleetConfig, FleetError
from graph import Context, Plan, PlanError, RunResult, Task, arun_goal, run_goal
from tests.helpers import pinned_task

pytestmark = pytest.mark.integration

FAST: dict[str, Any] = {"voice": False, "synthesis_max_tokens": 8}


def tiny_plan(*agents: str) -> Plan:
    return Plan(
        tasks=[
            pinned_task(f"t{i}", agent, tokens=4, description="Say one word about hooks.")
            for i, agent in enumerate(agents, 1)
        ]
    )


def check_result(result: RunResult, ids: list[str]) -> None:
    assert [r.task_id for r in result.tasks] == ids
    assert [t.id for t in result.plan.tasks] == ids
    assert result.plan.source == "given"
    assert result.run_id
    assert result.answer
    for task in result.tasks:
        assert task.status == "completed"
        assert task.endpoint and task.slot is not None and task.model
        assert task.started_at and task.finished_at and task.ready_at
        assert task.ready_at <= task.started_at <= task.finished_at
        assert task.latency_s > 0 and task.completion_tokens == 4
        assert task.attempts == [task.endpoint]
    metrics = result.metrics
    assert metrics.tasks_total == metrics.tasks_completed == len(ids)
    assert metrics.wall_s >= metrics.execution_s > 0
    assert metrics.synthesis_s > 0 and metrics.summary_s == 0
    assert metrics.completion_tokens >= 4 * len(ids)
    assert sum(e.tasks for e in metrics.endpoints.values()) == len(ids)
    assert result.voice_summary is None


async def test_arun_goal_with_plan_as_dict(embedded_fleet: FleetConfig) -> None:
    plan = tiny_plan("researcher", "coder").model_dump()
    result = await arun_goal("Hooks", plan=plan, **FAST)
    check_result(result, ["t1", "t2"])
    assert result.goal == "Hooks"
    with pytest.raises(KeyError):
        result.result("nope")


async def test_context_object_and_voice_summary(embedded_fleet: FleetConfig) -> None:
    context = Context(voice=True, synthesis_max_tokens=8, summary_max_tokens=8)
    result = await arun_goal("Hooks", plan=tiny_plan("analyst"), context=context)
    assert result.voice_summary
    assert result.metrics.summary_s > 0


def test_run_goal_without_a_running_loop(embedded_fleet: FleetConfig) -> None:
    check_result(run_goal("Hooks", plan=tiny_plan("fabricator"), **FAST), ["t1"])


async def test_run_goal_inside_a_running_loop(embedded_fleet: FleetConfig) -> None:
    """As in Jupyter: the sync wrapper runs the graph on a fresh loop in a worker thread."""
    check_result(run_goal("Hooks", plan=tiny_plan("researcher"), **FAST), ["t1"])


async def test_empty_goal_is_rejected(embedded_fleet: FleetConfig) -> None:
    with pytest.raises(PlanError, match="goal is empty"):
        await arun_goal("   ", **FAST)


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (tiny_plan("plumber"), "unknown agent 'plumber'"),
        (
            Plan(tasks=[Task(id="a", agent="coder", description="x", dependencies=["b"])]),
            "unknown task 'b'",
        ),
        ({"tasks": []}, "plan is not valid"),
        ({"tasks": [{"id": "a", "assigned_to": "coder", "description": "x"}]}, "not valid"),
    ],
)
async def test_bad_given_plan_raises_plan_error(
    embedded_fleet: FleetConfig, plan: Any, message: str
) -> None:
    with pytest.raises(PlanError, match=message):
        await arun_goal("Hooks", plan=plan, **FAST)


async def test_bad_settings_say_what_to_fix(embedded_fleet: FleetConfig) -> None:
    with pytest.raises(ValueError, match="max_tasks: Input should be greater than or equal to 1"):
        await arun_goal("Hooks", max_tasks=0, **FAST)
    with pytest.raises(FleetError, match="unknown fleet profile 'nowhere'"):
        await arun_goal("Hooks", plan=tiny_plan("coder"), fleet="nowhere", **FAST)


def test_fleet_preparation_imports_the_chat_clients(embedded_fleet: FleetConfig) -> None:
    """The ~2 s client import happens before dispatch, not inside the first agent task
    (where it would hold the event loop and delay every task sent beside it)."""
    code = (
        "import asyncio, sys\n"
        "from graph.context import Context\n"
        "from graph._node_support import prepare_fleet\n"
        "assert 'langchain_openai' not in sys.modules\n"
        "asyncio.run(prepare_fleet(Context(fleet='embedded')))\n"
        "assert 'langchain_openai' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
