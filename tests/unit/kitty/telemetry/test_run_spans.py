"""The spans of a run on a scripted fleet, read back from the SDK's in-memory exporter.

The fleet's models are a :class:`~tests.fake_chat.FakeChat` (scripted answers, tool
calls and token usage); the spans are the real ones, from an SDK ``TracerProvider`` with
a ``SimpleSpanProcessor`` installed in the process's tracing (``reset_runtime`` drops it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import tool
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from endpoints.calls import process_tracing
from graph import PlanReady, RunFinished, arun_goal, astream_goal
from tests.fake_chat import FakeChat, Reply
from tests.helpers import FAST, offline_fleet

GOAL = "Count the screws for the wall hook"


@dataclass
class TracedFleet:
    path: str
    chat: FakeChat
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def chats(self, phase: str, task: str | None = None) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans()
            if attrs(s).get("gen_ai.operation.name") == "chat"
            and attrs(s).get("kitty.phase") == phase
            and (task is None or attrs(s).get("kitty.task.id") == task)
        ]

    def task_span(self, task_id: str) -> ReadableSpan:
        [span] = [
            s
            for s in self.spans()
            if attrs(s).get("gen_ai.operation.name") == "invoke_agent"
            and attrs(s).get("kitty.task.id") == task_id
        ]
        return span


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


@pytest.fixture
def traced(tmp_path: Path, fresh_fleet_state: None) -> Iterator[TracedFleet]:
    """An offline fleet whose fake models parse tool calls, with spans kept in memory."""
    path = offline_fleet(tmp_path)
    path.write_text(
        path.read_text().replace('kind = "llamacpp"', 'kind = "llamacpp"\nsupports_tools = true')
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    process_tracing().install(provider)
    yield TracedFleet(str(path), FakeChat().install(str(path)), exporter)
    provider.shutdown()


@tool
async def count_parts(kind: str) -> str:
    """Count the parts of one kind in stock."""
    return f"12 {kind}"


TWO_TASKS = {
    "tasks": [
        {"id": "task_1", "agent": "coder", "description": "Count parts.", "dependencies": []},
        {
            "id": "task_2",
            "agent": "researcher",
            "description": "Check the count.",
            "dependencies": ["task_1"],
        },
    ]
}


async def test_a_run_is_one_trace_of_run_task_chat_and_tool_spans(traced: TracedFleet) -> None:
    chat = traced.chat
    chat.script(json.dumps(TWO_TASKS), phase="planner")
    chat.script(
        Reply(text="", tool_calls=({"name": "count_parts", "args": {"kind": "screws"}},)),
        Reply(text="12 screws.", input_tokens=40, output_tokens=4),
        task="task_1",
    )
    chat.script(Reply(text="Enough screws.", input_tokens=123, output_tokens=45), task="task_2")
    result = await arun_goal(
        GOAL,
        fleet=traced.path,
        tools=[count_parts],
        agent_tools={"coder": ["count_parts"]},
        voice=True,
    )
    assert [t.status for t in result.tasks] == ["completed", "completed"]

    [run] = traced.named("invoke_agent kitty-orchestrator")
    assert run.parent is None
    assert attrs(run)["gen_ai.operation.name"] == "invoke_agent"
    assert attrs(run)["gen_ai.agent.name"] == "kitty-orchestrator"
    assert attrs(run)["kitty.run_id"] == result.run_id
    assert attrs(run)["kitty.thread_id"] == result.thread_id
    assert attrs(run)["gen_ai.usage.input_tokens"] == result.metrics.prompt_tokens
    assert run.status.status_code is StatusCode.UNSET

    first, second = traced.task_span("task_1"), traced.task_span("task_2")
    assert (first.name, second.name) == ("invoke_agent coder", "invoke_agent researcher")
    assert parent_id(first) == parent_id(second) == span_id(run)
    assert attrs(first)["gen_ai.agent.name"] == "coder"
    assert attrs(first)["kitty.endpoint"] == "fake-coder"
    assert attrs(first)["kitty.tier"] == "coder"
    assert attrs(first)["kitty.slot"] in (0, 1)
    assert attrs(first)["kitty.queued_s"] >= 0
    assert attrs(first)["kitty.task.status"] == "completed"
    assert attrs(first)["gen_ai.provider.name"] == "llama.cpp"
    assert attrs(first)["kitty.tool_calls"] == 1
    # task_2 waited for task_1: its span links to task_1's, and starts after it ends.
    assert [link.context.span_id for link in second.links] == [span_id(first)]
    assert first.links == ()
    assert second.start_time is not None and first.end_time is not None
    assert second.start_time >= first.end_time
    assert attrs(second)["gen_ai.usage.input_tokens"] == 123
    assert attrs(second)["gen_ai.usage.output_tokens"] == 45

    # One chat span per request, each a child of its task's span.
    tool_round, answer = traced.chats("task", "task_1")
    assert parent_id(tool_round) == parent_id(answer) == span_id(first)
    [checked] = traced.chats("task", "task_2")
    assert parent_id(checked) == span_id(second)
    chat_attrs = attrs(checked)
    assert checked.name == "chat smollm2-fake-tools"
    assert chat_attrs["gen_ai.request.model"] == "smollm2-fake-tools"
    assert chat_attrs["gen_ai.response.model"] == "smollm2-fake-tools"
    assert chat_attrs["gen_ai.provider.name"] == "llama.cpp"
    assert chat_attrs["gen_ai.usage.input_tokens"] == 123
    assert chat_attrs["gen_ai.usage.output_tokens"] == 45
    assert chat_attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert chat_attrs["server.address"] == "127.0.0.1"
    assert chat_attrs["server.port"] > 0
    assert chat_attrs["kitty.endpoint"] == "fake-tools"
    assert chat_attrs["kitty.run_id"] == result.run_id
    assert chat_attrs["kitty.fallback"] is False
    assert attrs(answer)["gen_ai.usage.input_tokens"] == 40

    # The planner's, synthesizer's and summarizer's calls are children of the run span.
    for phase in ("planner", "synthesizer", "summarizer"):
        [call] = traced.chats(phase)
        assert parent_id(call) == span_id(run), phase
        assert "kitty.task.id" not in attrs(call)

    # The tool call is a child of its task's span, between the two model calls.
    [tool_call] = traced.named("execute_tool count_parts")
    assert parent_id(tool_call) == span_id(first)
    assert attrs(tool_call)["gen_ai.operation.name"] == "execute_tool"
    assert attrs(tool_call)["gen_ai.tool.name"] == "count_parts"
    assert attrs(tool_call)["gen_ai.tool.call.id"] == "call_0"
    assert "error.type" not in attrs(tool_call)
    assert tool_round.end_time is not None and tool_call.start_time is not None
    assert tool_round.end_time <= tool_call.start_time  # the slot was given back meanwhile

    spans = traced.spans()
    assert len(spans) == 1 + 2 + 6 + 1  # run, tasks, chats (plan, 3 task, synth, summary), tool
    assert len({s.context.trace_id for s in spans if s.context}) == 1
    # No content on any span: neither the goal, nor outputs, nor tool arguments.
    values = " ".join(str(v) for s in spans for v in attrs(s).values())
    assert GOAL not in values and "screws" not in values


async def test_a_fallback_is_a_failed_chat_span_followed_by_another(traced: TracedFleet) -> None:
    plan = {"tasks": [{"id": "c", "agent": "coder", "description": "Write it."}]}
    traced.chat.fail(endpoint="fake-coder", phase="task")
    result = await arun_goal(GOAL, fleet=traced.path, plan=plan, **FAST)
    assert result.tasks[0].fallback_used
    failed, served = traced.chats("task", "c")
    task = traced.task_span("c")
    assert parent_id(failed) == parent_id(served) == span_id(task)
    assert attrs(failed)["kitty.endpoint"] == "fake-coder"
    assert attrs(failed)["error.type"] == "down"
    assert failed.status.status_code is StatusCode.ERROR
    assert "cannot connect" in (failed.status.description or "")
    assert attrs(served)["kitty.endpoint"] == "fake-tools"
    assert attrs(served)["kitty.fallback"] is True
    assert "error.type" not in attrs(served)
    assert attrs(task)["kitty.fallback"] is True
    assert attrs(task)["kitty.endpoint"] == "fake-tools"


async def test_a_failed_task_and_a_refused_tool_call_fail_their_spans(
    traced: TracedFleet,
) -> None:
    plan = {
        "tasks": [
            {"id": "t", "agent": "coder", "description": "Count.", "tool_choice": "count_parts"},
            {"id": "f", "agent": "researcher", "description": "Look it up."},
        ]
    }
    traced.chat.script(
        Reply(text="", tool_calls=({"name": "count_parts", "args": {"colour": 3}},)),
        "No count.",
        task="t",
    )
    traced.chat.fail(task="f")  # every endpoint of its chain refuses the connection
    await arun_goal(
        GOAL,
        fleet=traced.path,
        plan=plan,
        tools=[count_parts],
        agent_tools={"coder": ["count_parts"]},
        **FAST,
    )
    [refused] = traced.named("execute_tool count_parts")
    assert attrs(refused)["error.type"] == "refused"
    assert refused.status.status_code is StatusCode.ERROR
    failed = traced.task_span("f")
    assert attrs(failed)["kitty.task.status"] == "failed"
    assert attrs(failed)["error.type"] == "failed"
    assert failed.status.status_code is StatusCode.ERROR
    assert [attrs(s)["error.type"] for s in traced.chats("task", "f")] == ["down", "down"]


async def test_the_run_span_is_not_current_for_the_consumer(traced: TracedFleet) -> None:
    seen: list[trace.Span] = []
    async for _event in astream_goal(GOAL, fleet=traced.path, **FAST):
        seen.append(trace.get_current_span())
    assert seen and all(span is trace.INVALID_SPAN for span in seen)
    [run] = traced.named("invoke_agent kitty-orchestrator")
    assert run.status.status_code is StatusCode.UNSET


async def test_a_consumer_that_stops_early_cancels_the_run_span(traced: TracedFleet) -> None:
    stream = astream_goal(GOAL, fleet=traced.path, **FAST)
    async for event in stream:
        if isinstance(event, PlanReady):
            break
    await stream.aclose()
    [run] = traced.named("invoke_agent kitty-orchestrator")
    assert attrs(run)["error.type"] == "cancelled"
    assert run.status.status_code is StatusCode.ERROR


async def test_stopping_at_the_result_does_not_fail_the_run_span(traced: TracedFleet) -> None:
    stream = astream_goal(GOAL, fleet=traced.path, **FAST)
    async for event in stream:
        if isinstance(event, RunFinished):
            break
    await stream.aclose()
    [run] = traced.named("invoke_agent kitty-orchestrator")
    assert run.status.status_code is StatusCode.UNSET
    assert "error.type" not in attrs(run)


async def test_without_a_provider_spans_are_no_ops(tmp_path: Path, fresh_fleet_state: None) -> None:
    path = str(offline_fleet(tmp_path))
    FakeChat().install(path)
    assert process_tracing().provider is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)  # nothing global either
    span = process_tracing().tracer().start_span("probe")
    assert not span.is_recording()
    result = await arun_goal(GOAL, fleet=path, **FAST)
    assert result.tasks[0].status == "completed"
