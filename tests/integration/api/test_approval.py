"""Plan approval: approve, edit, reject; in the Python API, through Command(resume) and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command
from typer.testing import CliRunner

from endpoints.config import FleetConfig
from graph import (
    Plan,
    PlanApproval,
    PlanApprovalRequired,
    PlanError,
    RunFinished,
    arun_goal,
    astream_goal,
    make_checkpointer,
)
from graph.api import graph_for
from graph.context import Context
from graph.planning._approval import REJECTED_ANSWER
from tests.helpers import FAST, record_task_calls
from tests.helpers import pinned_task as pinned
from tests.integration.studio.test_studio import studio_url  # noqa: F401  (fixture: langgraph dev)

pytestmark = pytest.mark.integration

PLAN = Plan(tasks=[pinned("A"), pinned("B", "analyst", ["A"])])


@pytest.fixture
def task_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Ids of the agent tasks whose model was called."""
    return record_task_calls(monkeypatch)


async def test_two_step_approval_with_an_edited_plan(
    embedded_fleet: FleetConfig, task_calls: list[str]
) -> None:
    async with make_checkpointer("memory") as saver:
        with pytest.raises(PlanApprovalRequired) as stopped:
            await arun_goal(
                "approval test", plan=PLAN, checkpointer=saver, approve_plan=True, **FAST
            )
        approval = stopped.value.approval
        assert [t.id for t in approval.plan.tasks] == ["A", "B"]
        assert approval.thread_id and task_calls == []  # nothing ran before the decision

        with pytest.raises(PlanError, match="cycle"):  # checked before resuming
            cyclic = {
                "tasks": [
                    pinned("X", deps=["Y"]).model_dump(),
                    pinned("Y", deps=["X"]).model_dump(),
                ]
            }
            await arun_goal(
                None,
                thread_id=approval.thread_id,
                checkpointer=saver,
                plan_decision={"action": "edit", "plan": cyclic},
            )

        edited = {"tasks": [pinned("X").model_dump()]}
        result = await arun_goal(
            None,
            thread_id=approval.thread_id,
            checkpointer=saver,
            plan_decision={"action": "edit", "plan": edited},
        )
    assert [t.task_id for t in result.tasks] == ["X"] and task_calls == ["X"]
    assert result.tasks[0].status == "completed"
    assert result.plan.source == "given"
    assert any("plan edited" in w for w in result.warnings)
    assert result.thread_id == approval.thread_id


async def test_callback_approves_and_reject_ends_the_run(
    embedded_fleet: FleetConfig, task_calls: list[str]
) -> None:
    seen: list[PlanApproval] = []

    async def approve(approval: PlanApproval) -> str:
        seen.append(approval)
        return "approve"

    # No checkpointer given: the API uses an in-memory one.
    result = await arun_goal("approval test", plan=PLAN, approve_plan=True, on_plan=approve, **FAST)
    assert len(seen) == 1 and seen[0].plan.tasks[0].id == "A"
    assert [t.status for t in result.tasks] == ["completed", "completed"]
    assert sorted(task_calls) == ["A", "B"]

    task_calls.clear()
    rejected = await arun_goal(
        "approval test",
        plan=PLAN,
        approve_plan=True,
        on_plan=lambda approval: {"action": "reject", "reason": "too vague"},
        **FAST,
    )
    assert rejected.answer.startswith(REJECTED_ANSWER) and "too vague" in rejected.answer
    assert rejected.tasks == [] and task_calls == []
    assert "plan rejected: too vague" in rejected.warnings


async def test_stream_ends_with_plan_approval_without_a_decision(
    embedded_fleet: FleetConfig,
) -> None:
    async with make_checkpointer("memory") as saver:
        events = [
            e
            async for e in astream_goal(
                "approval test", plan=PLAN, checkpointer=saver, approve_plan=True, **FAST
            )
        ]
        assert isinstance(events[-1], PlanApproval)
        assert not any(isinstance(e, RunFinished) for e in events)
        thread = events[-1].thread_id
        events = [
            e
            async for e in astream_goal(
                None, thread_id=thread, checkpointer=saver, plan_decision={"action": "approve"}
            )
        ]
    assert isinstance(events[-1], RunFinished)
    assert len(events[-1].result.tasks) == 2


async def test_invalid_resume_value_asks_again(embedded_fleet: FleetConfig) -> None:
    """Studio path: a bad Command(resume=...) interrupts again with the error."""
    async with make_checkpointer("memory") as saver:
        compiled = graph_for(saver)
        config: RunnableConfig = {"configurable": {"thread_id": "studio-like"}}
        context = Context(approve_plan=True, **FAST)
        await compiled.ainvoke({"goal": "approval test", "plan": PLAN}, config, context=context)
        state = await compiled.aget_state(config)
        assert state.next == ("approval",)
        assert state.interrupts[0].value["plan"]["tasks"][0]["id"] == "A"

        await compiled.ainvoke(Command(resume={"action": "maybe"}), config, context=context)
        state = await compiled.aget_state(config)
        assert state.next == ("approval",)
        assert "invalid plan decision" in state.interrupts[0].value["error"]

        final = await compiled.ainvoke(
            Command(resume={"action": "reject"}), config, context=context
        )
    assert final["answer"] == REJECTED_ANSWER


def test_cli_run_approve_plan_reject_then_resume_approve(
    embedded_fleet: FleetConfig, tmp_path: Path
) -> None:
    from kitty.cli.main import app

    runner = CliRunner()
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(PLAN.model_dump_json(), encoding="utf-8")
    db = tmp_path / "cp.sqlite"
    common = ["--plan", str(plan_file), "--no-voice", "--set", "synthesis_max_tokens=16"]

    rejected = runner.invoke(
        app,
        ["run", "goal", *common, "--approve-plan", "--checkpoint", str(db), "--json"],
        input="n\nnot today\n",
    )
    assert rejected.exit_code == 0, rejected.output
    body = json.loads(rejected.stdout.strip().splitlines()[-1])
    assert body["answer"].startswith(REJECTED_ANSWER) and body["tasks"] == []

    # A run stopped at approval (by the API), continued by the CLI with "y".
    import asyncio

    async def start() -> str:
        async with make_checkpointer(db) as saver:
            with pytest.raises(PlanApprovalRequired) as stopped:
                await arun_goal("goal", plan=PLAN, checkpointer=saver, approve_plan=True, **FAST)
        return str(stopped.value.approval.thread_id)

    thread = asyncio.run(start())
    resumed = runner.invoke(app, ["resume", thread, "--checkpoint", str(db), "--json"], input="y\n")
    assert resumed.exit_code == 0, resumed.output
    body = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert body["thread_id"] == thread
    assert [t["status"] for t in body["tasks"]] == ["completed", "completed"]

    again = runner.invoke(app, ["resume", thread, "--checkpoint", str(db)])
    assert again.exit_code == 2 and "no unfinished work" in again.output


async def test_studio_shows_the_interrupt_and_resumes_with_a_command(
    studio_url: str,  # noqa: F811  (the fixture imported above)
) -> None:
    """LangGraph Studio / langgraph_sdk: the plan interrupt is native, resumed by Command."""
    from langgraph_sdk import get_client

    client = get_client(url=studio_url)
    thread = await client.threads.create()
    context = {"approve_plan": True, "fleet": "embedded", **FAST}
    await client.runs.wait(
        thread["thread_id"],
        "kitty",
        input={"goal": "approval in studio", "plan": PLAN.model_dump(mode="json")},
        context=context,
    )
    state = await client.threads.get_state(thread["thread_id"])
    assert state["next"] == ["approval"]
    waiting = state["interrupts"][0]["value"]
    assert waiting["kind"] == "plan_approval"
    assert [t["id"] for t in waiting["plan"]["tasks"]] == ["A", "B"]

    edited = {"tasks": [pinned("only").model_dump(mode="json")]}
    await client.runs.wait(
        thread["thread_id"],
        "kitty",
        command={"resume": {"action": "edit", "plan": edited}},
        context=context,
    )
    state = await client.threads.get_state(thread["thread_id"])
    assert state["next"] == []
    values = state["values"]
    assert isinstance(values, dict)  # a graph with a state schema: values are a mapping
    assert list(values["results"]) == ["only"]
    assert values["answer"].strip()
