"""Per-run completion registry: how a dispatched task waits for its own dependencies.

Every task of a plan is sent in one superstep; each agent node awaits the results of its
dependencies here, so it starts the moment they are done instead of at the next
superstep barrier. Runs are keyed by ``run_id``: concurrent runs never see each other.

A registry created in a process that resumes a run is seeded from the checkpoint's
pending writes: tasks that finished before an interruption are not re-run by LangGraph,
and their results reach their dependents from there. A finished task's result is
written to the checkpoint (:func:`persist_result`) *before* its dependents are woken, so
no dependent ever runs on a result a crash could still lose.

A run's registry is kept alive until every task of its plan has a result (or the run is
cancelled, see :func:`forget`): a task that fails at once, before a sibling that depends
on it has even started, must not take its result away with it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from langchain_core.runnables import RunnableConfig

from graph.schemas import TaskResult

logger = logging.getLogger("kitty.graph")

RESULTS_CHANNEL = "results"
_CHECKPOINTER_KEY = "__pregel_checkpointer"
_TASK_ID_KEY = "__pregel_task_id"
# Early writes are filed under their own task id: LangGraph ignores writes of tasks it
# does not know, so they never apply twice; the registry reads them after a resume.
EARLY_WRITE_SUFFIX = "~result"


class CompletionRegistry:
    """Results of one run's finished tasks, with a wait per task id."""

    def __init__(self, run_id: str, task_ids: Iterable[str] = ()) -> None:
        self.run_id = run_id
        self.created_at = time.time()
        self._expected = set(task_ids)
        self._results: dict[str, TaskResult] = {}
        self._events: dict[str, asyncio.Event] = {}
        # Every caller awaits this one seeding (results saved before a resume): a sibling
        # that read the registry before it was seeded would run a finished task again.
        self.seeding: asyncio.Future[None] | None = None

    def _event(self, task_id: str) -> asyncio.Event:
        event = self._events.get(task_id)
        if event is None:
            event = self._events[task_id] = asyncio.Event()
        return event

    def complete(self, result: TaskResult) -> None:
        """Record a task's outcome and wake its dependents."""
        self._results[result.task_id] = result
        self._event(result.task_id).set()
        if self._expected and self._expected <= self._results.keys():
            with _creation_lock:  # every task is done: tasks still running keep it alive
                if _pinned.get(self.run_id) is self:
                    del _pinned[self.run_id]

    def get(self, task_id: str) -> TaskResult | None:
        """The result of a finished task, if any."""
        return self._results.get(task_id)

    async def wait_for(self, task_ids: list[str]) -> dict[str, TaskResult]:
        """Wait until every listed task has a result; return them by id."""
        for task_id in task_ids:
            if task_id not in self._results:
                await self._event(task_id).wait()
        return {task_id: self._results[task_id] for task_id in task_ids}

    def seed(self, results: dict[str, TaskResult]) -> None:
        """Record results known from before (checkpoint pending writes or state)."""
        for result in results.values():
            if result.task_id not in self._results:
                self.complete(result)


_registries: weakref.WeakValueDictionary[str, CompletionRegistry] = weakref.WeakValueDictionary()
_pinned: dict[str, CompletionRegistry] = {}  # runs with tasks still to finish
_creation_lock = threading.Lock()


def _as_result(value: Any) -> TaskResult | None:
    if isinstance(value, TaskResult):
        return value
    if isinstance(value, dict):
        try:
            return TaskResult.model_validate(value)
        except ValueError:
            return None
    return None


async def _pending_results(config: RunnableConfig) -> dict[str, TaskResult]:
    """Task results already written in the current checkpoint (before an interruption)."""
    configurable = config.get("configurable", {})
    checkpointer = configurable.get(_CHECKPOINTER_KEY)
    thread_id = configurable.get("thread_id")
    if checkpointer is None or thread_id is None:
        return {}
    lookup: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    checkpoint_id = (configurable.get("checkpoint_map") or {}).get("")
    if checkpoint_id:
        lookup["checkpoint_id"] = checkpoint_id
    try:
        saved = await checkpointer.aget_tuple({"configurable": lookup})
    except NotImplementedError:
        saved = await asyncio.to_thread(checkpointer.get_tuple, {"configurable": lookup})
    found: dict[str, TaskResult] = {}
    for _task, channel, value in (saved.pending_writes or []) if saved else []:
        if channel != RESULTS_CHANNEL or not isinstance(value, dict):
            continue
        for item in value.values():
            result = _as_result(item)
            if result is not None:
                found[result.task_id] = result
    return found


async def persist_result(config: RunnableConfig, result: TaskResult) -> bool:
    """Write a finished task's result to the run's checkpoint now (durable runs only).

    LangGraph saves a task's writes only after the node returns; dependents woken
    before that could act on a result a crash would lose (and the task would run again
    on resume). Called before :meth:`CompletionRegistry.complete`, this closes the gap.

    Returns:
        True when the result was written (False without a checkpointer, or on error:
        the run goes on, it is only less durable).
    """
    configurable = config.get("configurable", {})
    checkpointer = configurable.get(_CHECKPOINTER_KEY)
    thread_id = configurable.get("thread_id")
    checkpoint_id = (configurable.get("checkpoint_map") or {}).get("")
    task_id = configurable.get(_TASK_ID_KEY)
    if checkpointer is None or not (thread_id and checkpoint_id and task_id):
        return False
    target: RunnableConfig = {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": "",
            "checkpoint_id": checkpoint_id,
        }
    }
    writes = [(RESULTS_CHANNEL, {result.task_id: result})]
    write = asyncio.ensure_future(
        checkpointer.aput_writes(target, writes, f"{task_id}{EARLY_WRITE_SUFFIX}")
    )
    try:
        # Shielded: a run cancelled mid-write must not leave the store's write transaction
        # open (SQLite: "database is locked" for the resume); the write finishes, committed.
        await asyncio.shield(write)
    except asyncio.CancelledError:
        write.add_done_callback(_log_failed_write)
        raise
    except Exception:  # a store hiccup must not fail the task
        logger.warning("could not save task %s's result early", result.task_id, exc_info=True)
        return False
    return True


def _log_failed_write(write: asyncio.Future[None]) -> None:
    if not write.cancelled() and write.exception() is not None:
        logger.warning("early write of a cancelled run failed", exc_info=write.exception())


async def registry_for(
    run_id: str, config: RunnableConfig, task_ids: Iterable[str] = ()
) -> CompletionRegistry:
    """The registry of a run, created (and seeded after a resume) on first use.

    Args:
        run_id: The run.
        config: The calling node's config (finds the checkpoint to seed from).
        task_ids: Every task id of the run's plan: the registry stays alive until each
            has a result. Without them it lives only while some caller holds it.
    """
    with _creation_lock:
        registry = _registries.get(run_id)
        if registry is None:
            registry = _registries[run_id] = CompletionRegistry(run_id, task_ids)
            if task_ids:
                _pinned[run_id] = registry
        if registry.seeding is None:
            registry.seeding = asyncio.ensure_future(_seed(registry, config))
        seeding = registry.seeding
    try:
        # Shielded: one caller's cancellation must not cancel the seeding its siblings await.
        await asyncio.shield(seeding)
    except Exception:
        # A failed read fails the callers that shared it; the next caller reads again,
        # so a passing store hiccup costs one task, not the whole run.
        with _creation_lock:
            if registry.seeding is seeding:
                registry.seeding = None
        raise
    return registry


async def _seed(registry: CompletionRegistry, config: RunnableConfig) -> None:
    seeded = await _pending_results(config)
    if seeded:
        logger.info(
            "run %s resumed: %d task results from the checkpoint", registry.run_id, len(seeded)
        )
        registry.seed(seeded)


def forget(run_id: str) -> None:
    """Stop keeping a run's registry alive (the run is cancelled; a resume seeds anew)."""
    with _creation_lock:
        _pinned.pop(run_id, None)
