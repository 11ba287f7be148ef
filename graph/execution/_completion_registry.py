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
on it has even started, must not take its result away with it. The registries of all
runs live in the process runtime (:class:`RunRegistries`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from opentelemetry.trace import SpanContext

from endpoints.runtime import RuntimeSlot, process_runtime
from graph.persistence import RunCheckpoint
from graph.schemas import TaskResult

logger = logging.getLogger("kitty.graph")

RESULTS_CHANNEL = "results"
# Early writes are filed under their own task id: LangGraph ignores writes of tasks it
# does not know, so they never apply twice; the registry reads them after a resume.
EARLY_WRITE_SUFFIX = "~result"


class CompletionRegistry:
    """Results of one run's finished tasks, with a wait per task id."""

    def __init__(
        self, run_id: str, task_ids: Iterable[str] = (), runs: RunRegistries | None = None
    ) -> None:
        self.run_id = run_id
        self._runs = runs
        self.created_at = time.time()
        self._expected = set(task_ids)
        self._results: dict[str, TaskResult] = {}
        self._events: dict[str, asyncio.Event] = {}
        # Every caller awaits this one seeding (results saved before a resume): a sibling
        # that read the registry before it was seeded would run a finished task again.
        self.seeding: asyncio.Future[None] | None = None
        # Task id -> its trace span, for the spans of its dependents to link to (tasks
        # that finished before a resume ran in another trace: they have none here).
        self.spans: dict[str, SpanContext] = {}

    def _event(self, task_id: str) -> asyncio.Event:
        event = self._events.get(task_id)
        if event is None:
            event = self._events[task_id] = asyncio.Event()
        return event

    def complete(self, result: TaskResult) -> None:
        """Record a task's outcome and wake its dependents."""
        self._results[result.task_id] = result
        self._event(result.task_id).set()
        if self._runs and self._expected and self._expected <= self._results.keys():
            self._runs.unpin(self)  # every task is done: tasks still running keep it alive

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


class RunRegistries:
    """The registry of every run in this process, by ``run_id``.

    Attributes:
        lock: Guards creation, seeding and pinning.
        registries: Run id -> registry, while anything holds it.
        pinned: Runs with tasks still to finish: kept alive here.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.registries: weakref.WeakValueDictionary[str, CompletionRegistry] = (
            weakref.WeakValueDictionary()
        )
        self.pinned: dict[str, CompletionRegistry] = {}

    def unpin(self, registry: CompletionRegistry) -> None:
        """Stop keeping ``registry`` alive (if it is the one pinned for its run)."""
        with self.lock:
            if self.pinned.get(registry.run_id) is registry:
                del self.pinned[registry.run_id]


RUN_REGISTRIES = RuntimeSlot("completion registries of this process's runs", RunRegistries)


def _as_result(value: Any) -> TaskResult | None:
    if isinstance(value, TaskResult):
        return value
    if isinstance(value, dict):
        try:
            return TaskResult.model_validate(value)
        except ValueError:
            return None
    return None


async def _pending_results(checkpoint: RunCheckpoint | None) -> dict[str, TaskResult]:
    """Task results already written in the current checkpoint (before an interruption)."""
    if checkpoint is None:
        return {}
    saved = await checkpoint.read()
    found: dict[str, TaskResult] = {}
    for _task, channel, value in (saved.pending_writes or []) if saved else []:
        if channel != RESULTS_CHANNEL or not isinstance(value, dict):
            continue
        for item in value.values():
            result = _as_result(item)
            if result is not None:
                found[result.task_id] = result
    return found


async def persist_result(checkpoint: RunCheckpoint | None, result: TaskResult) -> bool:
    """Write a finished task's result to the run's checkpoint now (durable runs only).

    LangGraph saves a task's writes only after the node returns; dependents woken
    before that could act on a result a crash would lose (and the task would run again
    on resume). Called before :meth:`CompletionRegistry.complete`, this closes the gap.

    Args:
        checkpoint: Where the calling node stands
            (:func:`~graph.persistence.current_checkpoint`); ``None``: not a durable run.
        result: The finished task's result.

    Returns:
        True when the result was written (False without a checkpointer, or on error:
        the run goes on, it is only less durable).
    """
    if checkpoint is None or not (checkpoint.checkpoint_id and checkpoint.task_id):
        return False
    writes: list[tuple[str, Any]] = [(RESULTS_CHANNEL, {result.task_id: result})]
    write = asyncio.ensure_future(checkpoint.write(writes, EARLY_WRITE_SUFFIX))
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


def _log_failed_write(write: asyncio.Future[bool]) -> None:
    if not write.cancelled() and write.exception() is not None:
        logger.warning("early write of a cancelled run failed", exc_info=write.exception())


async def registry_for(
    run_id: str, checkpoint: RunCheckpoint | None, task_ids: Iterable[str] = ()
) -> CompletionRegistry:
    """The registry of a run, created (and seeded after a resume) on first use.

    Args:
        run_id: The run.
        checkpoint: Where the calling node stands, to seed from
            (:func:`~graph.persistence.current_checkpoint`); ``None``: nothing to seed.
        task_ids: Every task id of the run's plan: the registry stays alive until each
            has a result. Without them it lives only while some caller holds it.
    """
    runs = process_runtime().get(RUN_REGISTRIES)
    with runs.lock:
        registry = runs.registries.get(run_id)
        if registry is None:
            registry = runs.registries[run_id] = CompletionRegistry(run_id, task_ids, runs)
            if task_ids:
                runs.pinned[run_id] = registry
        if registry.seeding is None:
            registry.seeding = asyncio.ensure_future(_seed(registry, checkpoint))
        seeding = registry.seeding
    try:
        # Shielded: one caller's cancellation must not cancel the seeding its siblings await.
        await asyncio.shield(seeding)
    except Exception:
        # A failed read fails the callers that shared it; the next caller reads again,
        # so a passing store hiccup costs one task, not the whole run.
        with runs.lock:
            if registry.seeding is seeding:
                registry.seeding = None
        raise
    return registry


async def _seed(registry: CompletionRegistry, checkpoint: RunCheckpoint | None) -> None:
    seeded = await _pending_results(checkpoint)
    if seeded:
        logger.info(
            "run %s resumed: %d task results from the checkpoint", registry.run_id, len(seeded)
        )
        registry.seed(seeded)


def forget(run_id: str) -> None:
    """Stop keeping a run's registry alive (the run is cancelled; a resume seeds anew)."""
    runs = process_runtime().get(RUN_REGISTRIES)
    with runs.lock:
        runs.pinned.pop(run_id, None)
