"""The agent tool loop with a scripted model and a real MCP server (stdio, the mcp SDK).

The model is a :class:`~tests.fake_chat.FakeChat` (scripted tool calls); the tools are
real: ``tests/mcp_servers/fabrication.py`` started by langchain-mcp-adapters, its call log
says which calls reached it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool

from endpoints.fleet import get_runtime
from graph import arun_goal
from graph.events import TaskToolCall
from graph.prompts import NO_TOOLS
from kitty.tools._mcp import aclose_mcp_sessions
from tests.fake_chat import FakeChat, Reply
from tests.helpers import offline_fleet
from tests.mcp_servers.fabrication import QUEUE_MARKER

REPO = Path(__file__).resolve().parents[4]


@dataclass
class ToolFleet:
    path: str
    chat: FakeChat
    call_log: Path

    def server_calls(self) -> list[dict[str, Any]]:
        if not self.call_log.exists():
            return []
        return [json.loads(line) for line in self.call_log.read_text().splitlines()]


def _mcp_table(name: str, command: str, args: list[str], log: Path) -> str:
    return (
        f'\n[mcp.{name}]\ntransport = "stdio"\ncommand = {json.dumps(command)}\n'
        f"args = {json.dumps(args)}\ncwd = {json.dumps(str(REPO))}\n"
        f"env = {{ FABRICATION_CALL_LOG = {json.dumps(str(log))} }}\n"
    )


@pytest.fixture
def tool_fleet(tmp_path: Path, fresh_fleet_state: None) -> Iterator[ToolFleet]:
    """An offline fleet (fake models that support tools) with the fabrication MCP server."""
    path = offline_fleet(tmp_path)
    text = path.read_text().replace('kind = "llamacpp"', 'kind = "llamacpp"\nsupports_tools = true')
    log = tmp_path / "calls.jsonl"
    text += _mcp_table("fabrication", sys.executable, ["-m", "tests.mcp_servers.fabrication"], log)
    text += _mcp_table("ghost", "/nonexistent/ghost-mcp", [], log)
    text += f"\n[memory]\nstore = {json.dumps(str(tmp_path / 'memory.sqlite'))}\n"
    path.write_text(text)
    chat = FakeChat().install(str(path))
    yield ToolFleet(str(path), chat, log)


def plan(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"tasks": list(tasks)}


def task(task_id: str, agent: str, **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "agent": agent, "description": f"Do {task_id}.", **fields}


def call(name: str, **args: Any) -> Reply:
    return Reply(text="", tool_calls=({"name": name, "args": args},))


async def run(fleet: ToolFleet, the_plan: dict[str, Any], **settings: Any) -> Any:
    try:
        return await arun_goal("Print a hook", fleet=fleet.path, plan=the_plan, **settings)
    finally:
        await aclose_mcp_sessions()


async def test_named_choice_offers_that_tool_alone_and_its_answer_reaches_the_model(
    tool_fleet: ToolFleet,
) -> None:
    tool_fleet.chat.script(call("fabrication.check_queue"), "The queue is short.", task="q")
    result = await run(
        tool_fleet, plan(task("q", "fabricator", tool_choice="fabrication.check_queue"))
    )
    outcome = result.tasks[0]
    assert outcome.status == "completed" and outcome.output == "The queue is short."
    [record] = outcome.tool_calls
    assert record.name == "fabrication.check_queue" and record.ok and not record.refused
    assert QUEUE_MARKER in record.output
    assert [c["tool"] for c in tool_fleet.server_calls()] == ["check_queue"]
    first, second = tool_fleet.chat.calls_for(task="q")
    assert first.bound["tools"] == ["fabrication.check_queue"]
    assert first.bound["tool_choice"] == "required"
    assert second.bound["tool_choice"] == "auto"  # later rounds let the model answer
    assert set(second.bound["tools"]) == {
        "fabrication.check_queue",
        "fabrication.submit_job",
    }  # the fabricator's allowlist, as the server provides it
    reply = next(m for m in second.messages if isinstance(m, ToolMessage))
    assert QUEUE_MARKER in str(reply.content)
    assert "fabrication.check_queue" in first.system and NO_TOOLS not in first.system
    assert result.metrics.tool_calls == 1 and result.metrics.tool_calls_refused == 0
    [synthesis] = tool_fleet.chat.calls_for(phase="synthesizer")
    assert QUEUE_MARKER in synthesis.prompt  # the tool's answer reaches the synthesizer


async def test_a_tool_outside_the_allowlist_is_refused_and_never_reaches_the_server(
    tool_fleet: ToolFleet,
) -> None:
    # The fabricator may submit jobs; the analyst may not (its allowlist is memory.*).
    tool_fleet.chat.script(
        call("fabrication.submit_job", file="hook.stl"), "I could not submit it.", task="a"
    )
    result = await run(tool_fleet, plan(task("a", "analyst", tool_choice="auto")))
    outcome = result.tasks[0]
    assert outcome.status == "completed"
    [record] = outcome.tool_calls
    assert record.refused and not record.ok and "not available to this task" in (record.error or "")
    assert tool_fleet.server_calls() == []  # refused before anything was sent
    second = tool_fleet.chat.calls_for(task="a")[1]
    reply = next(m for m in second.messages if isinstance(m, ToolMessage))
    assert str(reply.content).startswith("refused:")
    assert result.metrics.tool_calls_refused == 1


async def test_arguments_off_the_schema_are_refused_and_two_bad_rounds_end_the_loop(
    tool_fleet: ToolFleet,
) -> None:
    bad = call("fabrication.submit_job", printer="x1")  # ``file`` is required
    tool_fleet.chat.script(bad, bad, "Giving up on the job.", task="s")
    result = await run(tool_fleet, plan(task("s", "fabricator", tool_choice="required")))
    outcome = result.tasks[0]
    assert outcome.status == "completed" and outcome.output == "Giving up on the job."
    assert [r.refused for r in outcome.tool_calls] == [True, True]
    assert "'file' is a required property" in (outcome.tool_calls[0].error or "")
    assert tool_fleet.server_calls() == []
    assert any("2 rounds of refused tool calls" in w for w in outcome.warnings)
    third = tool_fleet.chat.calls_for(task="s")[2]
    assert "tools" not in third.bound  # after two bad rounds: answer without tools


async def test_a_tool_that_raises_is_reported_to_the_model_and_the_task_completes(
    tool_fleet: ToolFleet,
) -> None:
    tool_fleet.chat.script(call("fabrication.broken_sensor"), "Sensor is down.", task="b")
    result = await run(
        tool_fleet,
        plan(task("b", "fabricator", tool_choice="fabrication.broken_sensor")),
        agent_tools={"fabricator": ["fabrication.*"]},
    )
    outcome = result.tasks[0]
    assert outcome.status == "completed"
    [record] = outcome.tool_calls
    assert not record.ok and not record.refused and "sensor offline" in (record.error or "")
    assert [c["tool"] for c in tool_fleet.server_calls()] == ["broken_sensor"]
    reply = next(
        m for m in tool_fleet.chat.calls_for(task="b")[1].messages if isinstance(m, ToolMessage)
    )
    assert "sensor offline" in str(reply.content)
    assert result.metrics.tool_calls_failed == 1


async def test_a_tool_that_hangs_times_out_and_the_task_completes(tool_fleet: ToolFleet) -> None:
    tool_fleet.chat.script(call("fabrication.slow_check", seconds=30), "Too slow.", task="t")
    result = await run(
        tool_fleet,
        plan(task("t", "fabricator", tool_choice="fabrication.slow_check")),
        agent_tools={"fabricator": ["fabrication.slow_check"]},
        tool_timeout_s=0.5,
    )
    outcome = result.tasks[0]
    assert outcome.status == "completed"
    assert "did not answer within 0.5s" in (outcome.tool_calls[0].error or "")


async def test_an_mcp_server_that_cannot_start_fails_only_the_task_that_needs_it(
    tool_fleet: ToolFleet,
) -> None:
    result = await run(
        tool_fleet,
        plan(
            task("needs", "fabricator", tool_choice="ghost.scan"),
            task("other", "coder"),
        ),
        agent_tools={"fabricator": ["ghost.*"]},
    )
    needs, other = result.tasks
    assert needs.status == "failed"
    assert "ghost" in (needs.error or "") and "/nonexistent/ghost-mcp" in (needs.error or "")
    assert other.status == "completed"


async def test_agents_without_tools_are_told_so(tool_fleet: ToolFleet) -> None:
    await run(tool_fleet, plan(task("c", "coder")))
    [only] = tool_fleet.chat.calls_for(task="c")
    assert only.system.endswith(NO_TOOLS) and "tools" not in only.bound


async def test_python_tools_run_off_the_model_slot(tool_fleet: ToolFleet) -> None:
    seen: dict[str, Any] = {}
    runtime = get_runtime(tool_fleet.path)

    @tool
    async def count_parts(kind: str) -> str:
        """Count the parts of one kind in stock."""
        seen["in_use"] = sum(h.limiter.stats().in_use for h in runtime.candidates(["coder"]))
        return f"12 {kind}"

    tool_fleet.chat.script(call("count_parts", kind="screws"), "12 screws.", task="p")
    events: list[TaskToolCall] = []
    from graph import astream_goal

    async for event in astream_goal(
        "Count parts",
        fleet=tool_fleet.path,
        plan=plan(task("p", "coder", tool_choice="count_parts")),
        tools=[count_parts],
        agent_tools={"coder": ["count_parts"]},
    ):
        if isinstance(event, TaskToolCall):
            events.append(event)
    assert seen["in_use"] == 0  # the tool ran while no model slot was held
    assert [(e.tool, e.phase) for e in events] == [
        ("count_parts", "started"),
        ("count_parts", "finished"),
    ]
    assert events[-1].ok and events[-1].seconds >= 0


async def test_the_planner_is_told_which_tools_each_agent_has(
    tool_fleet: ToolFleet, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="kitty.tools"):
        await run(tool_fleet, plan(task("x", "coder")))
        await arun_goal("Print a hook", fleet=tool_fleet.path)
        await arun_goal("Print a hook", fleet=tool_fleet.path)
    [warning] = [r.getMessage() for r in caplog.records if "no source provides" in r.getMessage()]
    assert "fabricator: fabrication.open_in_slicer, fabrication.segment_mesh;" in warning
    assert "MCP servers configured: fabrication, ghost" in warning
    planner = tool_fleet.chat.calls_for(phase="planner")[0]
    assert "- fabricator:" in planner.prompt
    line = next(ln for ln in planner.prompt.splitlines() if ln.startswith("- fabricator:"))
    # what the server really provides, not the allowlist (which also names tools it lacks)
    assert line.endswith("(tools: fabrication.check_queue, fabrication.submit_job)")
    coder = next(ln for ln in planner.prompt.splitlines() if ln.startswith("- coder:"))
    assert "tools:" not in coder
