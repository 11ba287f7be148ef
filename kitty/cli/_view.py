"""The state of one run as its progress events tell it: a reducer the live view renders.

:class:`RunView` folds :mod:`graph.events` into one :class:`TaskView` per task. A task
that ended holds its :class:`~graph.schemas.TaskResult` (from ``TaskFinished``) and
nothing copied out of it; the other fields are what only the live events know (where
it is queued or running, when it started, that it fell back).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from graph import (
    PhaseStarted,
    Plan,
    PlanReady,
    RunFinished,
    RunResult,
    TaskFallback,
    TaskFinished,
    TaskQueued,
    TaskResult,
    TaskStarted,
    TaskToolCall,
    TaskWaiting,
)

TaskState = Literal[
    "pending", "waiting", "queued", "running", "tool", "completed", "failed", "skipped", "cancelled"
]
CANCELLED_ERROR = "cancelled by the user before it finished"


@dataclass
class TaskView:
    """One task: its result once it ended, its live whereabouts until then.

    Attributes:
        id: Task id.
        agent: Agent name.
        deps: Ids of the tasks it needs.
        state: Where it is: pending, waiting (on deps), queued (for a slot), running,
            tool (running a tool, no slot held), completed, failed, skipped, or cancelled
            (by Ctrl-C).
        endpoint: Endpoint it is queued for or running on.
        slot: Slot it holds while running.
        fallback: The endpoint it runs on belongs to a fallback tier.
        fell_back_from: Endpoint that failed for it before.
        dispatched_at: When the plan was dispatched.
        queued_at: When it started waiting for a slot.
        started_at: When its model call started.
        tool: The tool it is running now.
        tool_calls: Tool calls it has made so far.
        result: Its result, once it ended.
    """

    id: str
    agent: str
    deps: list[str]
    state: TaskState = "pending"
    endpoint: str | None = None
    slot: int | None = None
    fallback: bool = False
    fell_back_from: str | None = None
    dispatched_at: float | None = None
    queued_at: float | None = None
    started_at: float | None = None
    tool: str | None = None
    tool_calls: int = 0
    result: TaskResult | None = None

    @property
    def done(self) -> bool:
        """The task ended (completed, failed or skipped)."""
        return self.result is not None

    def finish(self, result: TaskResult) -> None:
        """Record the task's result."""
        self.result = result
        self.state = result.status


@dataclass
class RunView:
    """Run state rebuilt from progress events.

    Args:
        goal: The goal shown in the header.
        started: When the run started (epoch seconds).
    """

    goal: str
    started: float = field(default_factory=time.time)
    phase: str = "starting"
    phase_endpoint: str | None = None
    plan: Plan | None = None
    planner_s: float = 0.0
    run_id: str = ""
    tasks: dict[str, TaskView] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    result: RunResult | None = None
    interrupted: bool = False
    ended_at: float | None = None

    def apply(self, event: object) -> None:
        """Update the state with one progress event (other objects are ignored)."""
        self.run_id = self.run_id or getattr(event, "run_id", "")
        if isinstance(event, PhaseStarted):
            self.phase, self.phase_endpoint = event.phase, event.endpoint
        elif isinstance(event, PlanReady):
            self.set_plan(event.plan, event.at)
            self.planner_s = event.planner_s
            self.phase, self.phase_endpoint = "tasks", None
        elif isinstance(event, TaskWaiting):
            self._task(event.task_id, event.agent).state = "waiting"
        elif isinstance(event, TaskQueued):
            view = self._task(event.task_id, event.agent)
            view.state, view.endpoint, view.slot = "queued", event.endpoint, None
            view.queued_at = view.queued_at or event.at
        elif isinstance(event, TaskStarted):
            view = self._task(event.task_id, event.agent)
            view.state, view.endpoint, view.slot = "running", event.endpoint, event.slot
            view.fallback = event.fallback
            view.started_at = view.started_at or event.at
        elif isinstance(event, TaskFallback):
            self._task(event.task_id, "").fell_back_from = event.failed_endpoint
            self.warnings.append(
                f"{event.task_id}: {event.failed_endpoint} failed ({event.error}); "
                f"trying {event.next_endpoint}"
            )
        elif isinstance(event, TaskToolCall):
            view = self._task(event.task_id, event.agent)
            if event.phase == "started":
                view.state, view.tool, view.slot = "tool", event.tool, None
                view.tool_calls += 1
            else:
                view.state, view.tool = "queued", None
                view.tool_calls += event.refused  # a refused call never "started"
        elif isinstance(event, TaskFinished):
            self._task(event.task_id, event.agent).finish(event.result)
        elif isinstance(event, RunFinished):
            self.result = event.result
            self.phase = "done"
            self.ended_at = event.at

    def set_plan(self, plan: Plan, at: float | None = None) -> None:
        """Show a plan (from ``PlanReady``, or a given plan before the run starts)."""
        self.plan = plan
        for task in plan.tasks:
            view = self.tasks.setdefault(task.id, TaskView(task.id, task.agent, task.dependencies))
            view.agent, view.deps = task.agent, list(task.dependencies)
            if at is not None and view.dispatched_at is None:
                view.dispatched_at = at

    def replace_plan(self, plan: Plan) -> None:
        """Show an edited plan instead of the one shown (plan approval)."""
        self.tasks = {}
        self.set_plan(plan)

    def seed_finished(self, results: Iterable[TaskResult]) -> None:
        """Mark tasks that finished before this process started (a resumed run)."""
        for result in results:
            view = self.tasks.get(result.task_id)
            if view is not None:
                view.finish(result)

    def _task(self, task_id: str, agent: str) -> TaskView:
        view = self.tasks.get(task_id)
        if view is None:
            view = self.tasks[task_id] = TaskView(task_id, agent, [])
        return view

    def now(self) -> float:
        """The run's end once it ended (or was cancelled), else the current time."""
        return self.ended_at or time.time()

    def elapsed_s(self) -> float:
        """Seconds since the run started (up to its end)."""
        return self.now() - self.started

    def mark_cancelled(self) -> None:
        """Tasks still open when the run was cancelled."""
        self.interrupted = True
        self.ended_at = self.ended_at or time.time()
        for view in self.tasks.values():
            if not view.done:
                view.state = "cancelled"

    def partial_result(self) -> RunResult | None:
        """A :class:`RunResult` from the events seen so far (``None`` before a plan).

        Tasks that ended keep their results; the others fail as cancelled.
        """
        from graph import compute_metrics

        if self.plan is None:
            return None
        now = self.now()
        results: dict[str, TaskResult] = {}
        for task in self.plan.tasks:
            view = self.tasks[task.id]
            results[task.id] = view.result or _cancelled_result(view, now)
        metrics = compute_metrics(
            self.plan, results, {"planner_s": self.planner_s}, {}, now - self.started
        )
        return RunResult(
            goal=self.goal,
            answer="",
            plan=self.plan,
            tasks=list(results.values()),
            metrics=metrics,
            run_id=self.run_id,
            warnings=[*self.warnings, "run cancelled by the user (Ctrl-C); no answer"],
        )


def _cancelled_result(task: TaskView, now: float) -> TaskResult:
    """The one result built here: a task the user cancelled fails, with the time it ran."""
    return TaskResult(
        task_id=task.id,
        status="failed",
        error=CANCELLED_ERROR,
        agent=task.agent,
        endpoint=task.endpoint,
        slot=task.slot,
        fallback_used=task.fallback,
        latency_s=now - task.started_at if task.started_at else 0.0,
        ready_at=task.queued_at,
        started_at=task.started_at,
        finished_at=now,
    )
