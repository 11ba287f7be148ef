"""Progress events of one agent task, from the call layer's hooks (``CallObserver``)."""

from __future__ import annotations

import time
from typing import Any

from endpoints.calls import ModelCall
from endpoints.fleet import EndpointHandle
from graph._node_support import emit
from graph.events import TaskFallback, TaskQueued, TaskStarted
from graph.schemas import Task


class TaskObserver:
    """Turns executor hooks into progress events for one task, and remembers where it ran.

    What it remembers (endpoint, slot, first start, attempts, requests) survives a call
    cut short by the run deadline, whose result would otherwise lose it.
    """

    def __init__(self, run_id: str, task: Task, priority: float = 0.0) -> None:
        self.run_id = run_id
        self.task = task
        self.priority = priority
        self.endpoint: str | None = None
        self.tier: str | None = None
        self.slot: int | None = None
        self.fallback = False
        self.started_at: float | None = None
        self.queued_at: float | None = None
        self.queued_s = 0.0
        self.attempts: list[str] = []
        self.calls: list[ModelCall] = []

    def _stop_queue_clock(self) -> None:
        if self.queued_at is not None:
            self.queued_s += time.perf_counter() - self.queued_at
            self.queued_at = None

    def queued(self, handle: EndpointHandle) -> None:
        """The task waits for a slot on ``handle``."""
        self._stop_queue_clock()  # an earlier endpoint's slot wait timed out
        self.endpoint, self.tier, self.slot = handle.name, handle.tier, None
        self.attempts.append(handle.name)
        self.queued_at = time.perf_counter()
        emit(
            TaskQueued(
                run_id=self.run_id,
                task_id=self.task.id,
                agent=self.task.agent,
                endpoint=handle.name,
                tier=handle.tier,
            )
        )

    def started(self, handle: EndpointHandle, slot: int, fallback: bool) -> None:
        """A request of the task started on ``slot`` of ``handle``."""
        self.slot, self.fallback = slot, fallback
        self.started_at = self.started_at or time.time()
        self._stop_queue_clock()
        emit(
            TaskStarted(
                run_id=self.run_id,
                task_id=self.task.id,
                agent=self.task.agent,
                endpoint=handle.name,
                tier=handle.tier,
                slot=slot,
                fallback=fallback,
                priority=self.priority,
            )
        )

    def finished(self, handle: EndpointHandle, call: ModelCall) -> None:
        """A request ended; its record is kept."""
        self.calls.append(call)

    def fell_back(self, handle: EndpointHandle, error: str, next_handle: EndpointHandle) -> None:
        """``handle`` failed; ``next_handle`` is tried."""
        emit(
            TaskFallback(
                run_id=self.run_id,
                task_id=self.task.id,
                failed_endpoint=handle.name,
                error=error,
                next_endpoint=next_handle.name,
            )
        )

    def so_far(self) -> dict[str, Any]:
        """Where the task ran until now, as :class:`TaskResult` fields."""
        self._stop_queue_clock()  # cut while waiting for a slot
        return {
            "endpoint": self.endpoint,
            "slot": self.slot,
            "fallback_used": self.fallback,
            "started_at": self.started_at,
            "attempts": list(self.attempts),
            "calls": list(self.calls),
            "queued_s": self.queued_s,
            "latency_s": sum(c.latency_s for c in self.calls),
        }
