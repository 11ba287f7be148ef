"""Progress events: emitted as LangGraph ``custom`` stream chunks, typed for callers.

Nodes write ``event.model_dump(mode="json")`` with LangGraph's stream writer, so Studio
and ``langgraph_sdk`` clients see plain dicts; :func:`parse_event` turns one back into its
model. Every event carries ``run_id`` so concurrent runs can be told apart.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, computed_field

from graph.schemas import Plan, RunResult, TaskResult, TaskStatus


class _Event(BaseModel):
    run_id: str
    at: float = Field(default_factory=time.time)


class PlanReady(_Event):
    """The plan is validated and its tasks are being dispatched."""

    kind: Literal["plan_ready"] = "plan_ready"
    plan: Plan
    planner_s: float


class TaskWaiting(_Event):
    """A task is dispatched and waits for its dependencies."""

    kind: Literal["task_waiting"] = "task_waiting"
    task_id: str
    agent: str
    waiting_on: list[str]


class TaskQueued(_Event):
    """A task's dependencies are met; it waits for a slot on ``endpoint``."""

    kind: Literal["task_queued"] = "task_queued"
    task_id: str
    agent: str
    endpoint: str
    tier: str


class TaskStarted(_Event):
    """A task holds slot ``slot`` of ``endpoint`` and its model call is under way."""

    kind: Literal["task_started"] = "task_started"
    task_id: str
    agent: str
    endpoint: str
    tier: str
    slot: int
    fallback: bool = False
    priority: float = 0.0


class TaskFallback(_Event):
    """An endpoint failed for a task; the next endpoint in the chain is tried."""

    kind: Literal["task_fallback"] = "task_fallback"
    task_id: str
    failed_endpoint: str
    error: str
    next_endpoint: str


class TaskToolCall(_Event):
    """A task's tool call started or finished (its model slot is free meanwhile).

    ``started`` carries the arguments; ``finished`` adds ``seconds``, ``ok`` and, for a
    failed or refused call, ``error``.
    """

    kind: Literal["task_tool_call"] = "task_tool_call"
    task_id: str
    agent: str
    tool: str
    phase: Literal["started", "finished"]
    args: dict[str, Any] = Field(default_factory=dict)
    seconds: float = 0.0
    ok: bool = False
    refused: bool = False
    error: str | None = None


class TaskFinished(_Event):
    """A task ended (completed, failed or skipped); carries its :class:`TaskResult`."""

    kind: Literal["task_finished"] = "task_finished"
    result: TaskResult

    @computed_field  # type: ignore[prop-decorator]
    @property
    def task_id(self) -> str:
        """Id of the task that ended."""
        return self.result.task_id

    @computed_field  # type: ignore[prop-decorator]
    @property
    def agent(self) -> str:
        """Its agent."""
        return self.result.agent

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> TaskStatus:
        """``completed``, ``failed`` or ``skipped``."""
        return self.result.status


class PhaseStarted(_Event):
    """A run-level phase began: ``planning``, ``synthesizing`` or ``summarizing``."""

    kind: Literal["phase_started"] = "phase_started"
    phase: Literal["planning", "synthesizing", "summarizing"]
    endpoint: str | None = None


class AnswerDelta(_Event):
    """A piece of the answer (or of the voice summary) as the model writes it.

    Only sent when the run was started with ``stream_answer=True``. The pieces of one
    phase, joined, are that phase's text as the model wrote it; a call that failed over
    to another endpoint starts again, so a consumer that shows pieces live should take
    the final ``RunFinished`` answer as the authority.
    """

    kind: Literal["answer_delta"] = "answer_delta"
    phase: Literal["synthesizing", "summarizing"]
    text: str


class RunFinished(_Event):
    """The run is over; the last event of :func:`graph.astream_goal`."""

    kind: Literal["run_finished"] = "run_finished"
    result: RunResult


ProgressEvent = Annotated[
    PlanReady
    | TaskWaiting
    | TaskQueued
    | TaskStarted
    | TaskFallback
    | TaskToolCall
    | TaskFinished
    | PhaseStarted
    | AnswerDelta
    | RunFinished,
    Field(discriminator="kind"),
]

_adapter: TypeAdapter[ProgressEvent] = TypeAdapter(ProgressEvent)


def parse_event(data: dict[str, Any]) -> ProgressEvent:
    """Turn a ``custom`` stream chunk back into its typed event."""
    return _adapter.validate_python(data)
