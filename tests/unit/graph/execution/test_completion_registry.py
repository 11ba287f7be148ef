"""Completion registry: a task waits for its own dependencies, runs stay apart."""

from __future__ import annotations

import asyncio
import gc

from graph.execution._completion_registry import CompletionRegistry, forget, registry_for
from graph.schemas import TaskResult, TaskStatus


def done(task_id: str, output: str = "ok", status: TaskStatus = "completed") -> TaskResult:
    return TaskResult(task_id=task_id, status=status, agent="researcher", output=output)


async def test_wait_for_wakes_when_all_dependencies_complete() -> None:
    registry = CompletionRegistry("run-1")
    waiter = asyncio.create_task(registry.wait_for(["a", "b"]))
    await asyncio.sleep(0.01)
    registry.complete(done("a"))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # still waits for b
    registry.complete(done("b", "second"))
    results = await asyncio.wait_for(waiter, 1.0)
    assert list(results) == ["a", "b"]
    assert results["b"].output == "second"


async def test_wait_for_returns_at_once_for_finished_or_no_dependencies() -> None:
    registry = CompletionRegistry("run-2")
    registry.complete(done("a"))
    assert await asyncio.wait_for(registry.wait_for([]), 0.5) == {}
    assert (await asyncio.wait_for(registry.wait_for(["a"]), 0.5))["a"].status == "completed"


async def test_failed_results_wake_waiters_too() -> None:
    registry = CompletionRegistry("run-3")
    waiter = asyncio.create_task(registry.wait_for(["a"]))
    await asyncio.sleep(0)
    registry.complete(done("a", "", status="failed"))
    assert (await asyncio.wait_for(waiter, 1.0))["a"].status == "failed"


async def test_many_waiters_on_one_task() -> None:
    registry = CompletionRegistry("run-4")
    waiters = [asyncio.create_task(registry.wait_for(["root"])) for _ in range(5)]
    await asyncio.sleep(0)
    registry.complete(done("root"))
    outcomes = await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
    assert all(o["root"].output == "ok" for o in outcomes)


async def test_seed_wakes_waiters_and_does_not_overwrite() -> None:
    registry = CompletionRegistry("run-5")
    registry.complete(done("a", "live"))
    waiter = asyncio.create_task(registry.wait_for(["a", "b"]))
    await asyncio.sleep(0)
    registry.seed({"a": done("a", "from checkpoint"), "b": done("b", "from checkpoint")})
    results = await asyncio.wait_for(waiter, 1.0)
    assert results["a"].output == "live"
    assert results["b"].output == "from checkpoint"
    assert registry.get("b") is not None
    assert registry.get("zz") is None


async def test_registry_for_isolates_runs_by_id() -> None:
    first = await registry_for("run-iso-1", None)
    again = await registry_for("run-iso-1", None)
    other = await registry_for("run-iso-2", None)
    assert first is again
    assert first is not other
    waiter = asyncio.create_task(other.wait_for(["task_1"]))
    await asyncio.sleep(0)
    first.complete(done("task_1", "run 1's"))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # run 2's task_1 is not run 1's
    other.complete(done("task_1", "run 2's"))
    assert (await asyncio.wait_for(waiter, 1.0))["task_1"].output == "run 2's"


async def test_registry_for_without_checkpointer_starts_empty() -> None:
    registry = await registry_for("run-fresh", None)
    assert registry.get("task_1") is None


async def test_registries_are_dropped_when_unused() -> None:
    run_id = "gc-run"
    registry = await registry_for(run_id, None)
    registry.complete(done("a"))
    del registry
    gc.collect()  # a finished run leaves nothing behind
    assert (await registry_for(run_id, None)).get("a") is None


async def test_registry_with_task_ids_outlives_its_callers_until_the_run_is_done() -> None:
    """A task that fails at once must not take its result away before its dependent
    has even fetched the registry."""
    registry = await registry_for("pinned-run", None, ["a", "b"])
    registry.complete(done("a", "early failure", status="failed"))
    del registry
    gc.collect()
    again = await registry_for("pinned-run", None, ["a", "b"])
    early = again.get("a")
    assert early is not None and early.output == "early failure"
    again.complete(done("b"))  # every task done: only holders keep it now
    del again
    gc.collect()
    assert (await registry_for("pinned-run", None, ["a", "b"])).get("a") is None


async def test_forget_releases_a_cancelled_run() -> None:
    registry = await registry_for("cancelled-run", None, ["a", "b"])
    registry.complete(done("a"))
    forget("cancelled-run")
    del registry
    gc.collect()
    fresh = await registry_for("cancelled-run", None, ["a", "b"])
    assert fresh.get("a") is None
    forget("cancelled-run")
