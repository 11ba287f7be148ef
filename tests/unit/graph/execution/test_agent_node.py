"""The agent node with a fake chat model: empty and cut answers, nodes that never raise,
and the per-attempt figures behind the run metrics.

No server runs (see the ``fake_fleet`` fixture).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

import graph.execution._agent_node
from endpoints.clients import llamacpp as engine
from endpoints.fleet import get_runtime
from endpoints.runtime import process_runtime
from graph import Plan, arun_goal
from graph.context import Context
from graph.events import TaskFinished, TaskStarted
from graph.execution._completion_registry import RUN_REGISTRIES
from graph.synthesis import synthesis_messages
from tests.conftest import FakeFleet
from tests.fake_chat import Reply, connect_error
from tests.helpers import collect_run
from tests.helpers import simple_task as task

FAST: dict[str, Any] = {"voice": False}


# --------------------------------------------------------------------------- empty and cut answers


async def test_an_empty_answer_is_retried_once_then_fails(fake_fleet: FakeFleet) -> None:
    chat = fake_fleet.chat
    chat.script(
        Reply("", output_tokens=512, reasoning="Let me think. " * 50), repeat=True, task="r"
    )
    chat.script(Reply(""), Reply("second time lucky"), task="ok")

    result = await arun_goal(
        "Empty", plan=Plan(tasks=[task("r"), task("ok")]), fleet=fake_fleet.path, **FAST
    )

    r = result.result("r")
    assert r.status == "failed" and r.output == ""
    assert len(chat.calls_for(task="r")) == 2
    error = r.error or ""
    assert "returned nothing" in error and "reasoning" in error and "max_tokens" in error
    ok = result.result("ok")
    assert ok.status == "completed" and ok.output == "second time lucky"
    assert len(chat.calls_for(task="ok")) == 2 and len(ok.calls) == 2


async def test_an_answer_cut_at_the_cap_is_completed_but_flagged(fake_fleet: FakeFleet) -> None:
    fake_fleet.chat.script(Reply("cut off mid", finish_reason="length"), task="r")
    plan = Plan(tasks=[task("r"), task("whole")])

    result = await arun_goal("Cut", plan=plan, fleet=fake_fleet.path, **FAST)

    r = result.result("r")
    assert r.status == "completed" and r.truncated and r.output == "cut off mid"
    assert not result.result("whole").truncated
    assert any("r" in w and "max_tokens" in w and "cut" in w for w in result.warnings)
    synthesis = fake_fleet.chat.calls_for(phase="synthesizer")[0]
    assert "cut at its length limit" in synthesis.prompt
    state = {"goal": "Cut", "plan": plan, "results": {t.task_id: t for t in result.tasks}}
    messages, _ = await synthesis_messages(
        state,  # type: ignore[arg-type]
        Context(fleet=fake_fleet.path),
        get_runtime(fake_fleet.path).handles("reasoning")[0].config,
    )
    assert str(messages[-1].content).count("cut at its length limit") == 1


# --------------------------------------------------------------------------- nodes never raise


class ReadFailingSaver(InMemorySaver):
    """Fails every checkpoint read that names a checkpoint (the registry's seed read)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = 0

    async def aget_tuple(self, config: Any) -> Any:
        if config.get("configurable", {}).get("checkpoint_id"):
            self.failed += 1
            raise OSError("disk I/O error")
        return await super().aget_tuple(config)


async def test_a_checkpoint_read_error_inside_the_tasks_never_raises(
    fake_fleet: FakeFleet,
) -> None:
    saver = ReadFailingSaver()
    plan = Plan(tasks=[task("a"), task("b"), task("after", deps=["a", "b"])])

    result = await asyncio.wait_for(
        arun_goal("Reads fail", plan=plan, fleet=fake_fleet.path, checkpointer=saver, **FAST), 30
    )

    assert saver.failed >= 1
    assert [r.task_id for r in result.tasks] == ["a", "b", "after"]
    for r in result.tasks:  # each task has a result: completed, or failed by the read
        assert r.status == "completed" or "internal error: OSError: disk I/O error" in (
            r.error or ""
        ), r
    assert result.answer == "final answer"


async def test_a_registry_error_fails_only_its_task(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry read of one task fails; its siblings and its dependent go on."""
    real = graph.execution._agent_node.registry_for
    calls: list[int] = []

    async def failing_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk I/O error")
        return await real(*args, **kwargs)

    monkeypatch.setattr(graph.execution._agent_node, "registry_for", failing_once)
    plan = Plan(tasks=[task("a"), task("b"), task("c"), task("after", deps=["a", "b", "c"])])

    result = await asyncio.wait_for(
        arun_goal("Reads fail", plan=plan, fleet=fake_fleet.path, **FAST), 30
    )

    statuses = {r.task_id: r.status for r in result.tasks}
    failed = [t for t, s in statuses.items() if s == "failed"]
    assert len(failed) == 1 and failed[0] != "after", statuses
    assert result.result(failed[0]).error == "internal error: OSError: disk I/O error"
    assert statuses["after"] == "completed"  # woken by the failed task's result
    assert f"{failed[0]} (researcher) FAILED" in fake_fleet.chat.calls_for(task="after")[0].prompt
    assert result.answer == "final answer"


async def test_a_broken_progress_stream_does_not_lose_a_result(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_emit = graph.execution._agent_node.emit

    def emit(event: Any) -> None:
        if isinstance(event, TaskFinished) and event.task_id == "a":
            raise RuntimeError("stream writer closed")
        real_emit(event)

    monkeypatch.setattr(graph.execution._agent_node, "emit", emit)
    plan = Plan(tasks=[task("a"), task("b", "coder")])

    result = await arun_goal("Emit fails", plan=plan, fleet=fake_fleet.path, **FAST)

    assert [r.status for r in result.tasks] == ["completed", "completed"]


async def test_cancelling_during_the_early_write_unpins_the_run(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    writing = asyncio.Event()

    writers: list[str] = []

    async def stuck_write(config: Any, result: Any) -> bool:
        writers.append(result.task_id)
        if len(writers) == 2:
            writing.set()
        await asyncio.sleep(3600)
        return True

    monkeypatch.setattr(graph.execution._agent_node, "persist_result", stuck_write)
    run_ids: set[str] = set()

    async def run() -> None:
        # Both tasks are in the early write when the run is cancelled: no task waiting on
        # its dependencies is left to unpin the run on its way out.
        plan = Plan(tasks=[task("a"), task("b")])
        async for event in graph.astream_goal("Stuck", plan=plan, fleet=fake_fleet.path, **FAST):
            if isinstance(event, TaskStarted):
                run_ids.add(event.run_id)

    running = asyncio.create_task(run())
    await asyncio.wait_for(writing.wait(), 10)
    (run_id,) = run_ids
    assert run_id in process_runtime().get(RUN_REGISTRIES).pinned
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert run_id not in process_runtime().get(RUN_REGISTRIES).pinned


# --------------------------------------------------------------------------- metrics


async def test_a_failed_attempt_is_charged_to_its_own_endpoint(fake_fleet: FakeFleet) -> None:
    fake_fleet.chat.script(
        Reply("", error=connect_error, delay_s=0.4), endpoint="fake-tools", phase="task"
    )

    result = await arun_goal("Charge", plan=Plan(tasks=[task("r")]), fleet=fake_fleet.path, **FAST)

    r = result.result("r")
    assert r.endpoint == "fake-reasoning" and r.attempts == ["fake-tools", "fake-reasoning"]
    assert [(c.endpoint, c.status) for c in r.calls] == [
        ("fake-tools", "down"),
        ("fake-reasoning", "ok"),
    ]
    assert r.latency_s == pytest.approx(sum(c.latency_s for c in r.calls))
    usage = result.metrics.endpoints
    assert usage["fake-tools"].busy_s == pytest.approx(r.calls[0].latency_s)
    assert usage["fake-tools"].busy_s >= 0.4
    assert usage["fake-reasoning"].busy_s < 0.3
    assert usage["fake-reasoning"].tasks == 1 and usage["fake-tools"].tasks == 0


async def test_a_task_cut_by_the_run_deadline_keeps_where_it_ran(fake_fleet: FakeFleet) -> None:
    fake_fleet.chat.script(Reply("never", delay_s=30), task="slow")

    result, events = await collect_run(
        "Deadline",
        plan=Plan(tasks=[task("slow", "vision_analyst")]),
        fleet=fake_fleet.path,
        run_deadline_s=0.5,
        **FAST,
    )

    slow = result.result("slow")
    assert slow.status == "failed" and "run deadline" in (slow.error or "")
    (started,) = [e for e in events if isinstance(e, TaskStarted)]
    assert (slow.endpoint, slow.slot, slow.attempts) == (
        "fake-vision",
        started.slot,
        ["fake-vision"],
    )
    assert slow.started_at is not None and slow.finished_at is not None
    assert slow.finished_at - slow.started_at >= 0.3
    assert [c.status for c in slow.calls] == ["cancelled"]
    assert slow.latency_s >= 0.3
    assert result.metrics.endpoints["fake-vision"].busy_s >= 0.3


async def test_prompt_building_time_is_reported_as_prepare_s(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def slow_tokenizer(*args: Any, **kwargs: Any) -> list[int] | None:
        await asyncio.sleep(0.3)
        return None  # as if the server cannot count: the safe bound is used

    monkeypatch.setattr(engine, "tokenize", slow_tokenizer)
    # A result too long to fit b's prompt for certain: its budget must be counted.
    fake_fleet.chat.script("word " * 800, task="a")

    result = await arun_goal(
        "Prepare",
        plan=Plan(tasks=[task("a"), task("b", deps=["a"])]),
        fleet=fake_fleet.path,
        **FAST,
    )

    # b's prompt is budgeted (it carries a's result): its fixed part is counted first.
    assert result.result("b").prepare_s >= 0.3
    for r in result.tasks:
        assert r.ready_at is not None and r.started_at is not None
        gap = r.started_at - r.ready_at
        assert gap == pytest.approx(r.prepare_s + r.queued_s, abs=0.1)
