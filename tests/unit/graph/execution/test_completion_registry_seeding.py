"""Every task of a resumed run sees the results saved before the interruption."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from endpoints.runtime import process_runtime
from graph.execution._completion_registry import (
    RESULTS_CHANNEL,
    RUN_REGISTRIES,
    forget,
    registry_for,
)
from graph.persistence import RunCheckpoint
from graph.schemas import TaskResult


class SlowCheckpointer:
    """Reads take a while, as a real store's do; the checkpoint holds task a's result."""

    def __init__(self, fail: bool = False) -> None:
        self.reads = 0
        self.fail = fail

    async def aget_tuple(self, config: Any) -> Any:
        self.reads += 1
        await asyncio.sleep(0.05)
        if self.fail:
            raise OSError("disk I/O error")
        done = TaskResult(task_id="a", agent="coder", status="completed", output="A")
        return SimpleNamespace(pending_writes=[("x", RESULTS_CHANNEL, {"a": done})])


def config_for(saver: Any) -> RunCheckpoint:
    """Where a node of thread ``t`` stands at checkpoint ``c1``, saving to ``saver``."""
    return RunCheckpoint(checkpointer=saver, thread_id="t", checkpoint_id="c1")


async def test_every_sibling_waits_for_the_seeding() -> None:
    run_id = uuid.uuid4().hex
    saver = SlowCheckpointer()

    async def sibling() -> tuple[Any, TaskResult | None]:
        registry = await registry_for(run_id, config_for(saver), ["a", "b", "c"])
        return registry, registry.get("a")  # what the agent node checks at once

    outcomes = await asyncio.gather(*(sibling() for _ in range(3)))
    assert all(registry is outcomes[0][0] for registry, _ in outcomes)
    # Before the fix only the creator waited: siblings saw no result for "a" and re-ran it.
    seen = [result for _, result in outcomes]
    assert all(result is not None and result.output == "A" for result in seen)
    assert saver.reads == 1
    forget(run_id)


async def test_a_failed_read_reaches_every_caller() -> None:
    run_id = uuid.uuid4().hex
    saver = SlowCheckpointer(fail=True)
    outcomes = await asyncio.gather(
        *(registry_for(run_id, config_for(saver), ["a", "b"]) for _ in range(2)),
        return_exceptions=True,
    )
    assert all(isinstance(o, OSError) for o in outcomes)
    forget(run_id)


async def test_a_cancelled_caller_does_not_cancel_the_seeding() -> None:
    run_id = uuid.uuid4().hex
    saver = SlowCheckpointer()
    first = asyncio.create_task(registry_for(run_id, config_for(saver), ["a", "b"]))
    second = asyncio.create_task(registry_for(run_id, config_for(saver), ["a", "b"]))
    await asyncio.sleep(0)
    first.cancel()
    registry = await second
    assert registry.get("a") is not None
    with pytest.raises(asyncio.CancelledError):
        await first
    forget(run_id)
    assert run_id not in process_runtime().get(RUN_REGISTRIES).pinned


async def test_a_failed_read_is_tried_again_by_the_next_caller() -> None:
    run_id = uuid.uuid4().hex
    saver = SlowCheckpointer(fail=True)
    with pytest.raises(OSError):
        await registry_for(run_id, config_for(saver), ["a", "b"])
    saver.fail = False  # the store is back
    registry = await registry_for(run_id, config_for(saver), ["a", "b"])
    assert registry.get("a") is not None and saver.reads == 2
    forget(run_id)
