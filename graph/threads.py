"""What a checkpoint store says about a thread: for showing and continuing interrupted runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from pydantic import ValidationError

from endpoints.config import FleetConfig
from graph.api import graph_for, saved_context
from graph.context import Context
from graph.schemas import Plan, TaskResult
from kitty.errors import NothingToResume


@dataclass
class ThreadInfo:
    """What a thread's checkpoint says about an interrupted run.

    Attributes:
        thread_id: The thread.
        goal: The run's goal.
        plan: Its plan (``None`` when it stopped before planning finished).
        finished: Results of tasks that finished before the interruption.
        context: Settings the run started with (``None`` if none were saved).
        waiting_for_approval: The plan waits for an approve/edit/reject decision.
    """

    thread_id: str
    goal: str = ""
    plan: Plan | None = None
    finished: dict[str, TaskResult] = field(default_factory=dict)
    context: Context | None = None
    waiting_for_approval: bool = False

    @property
    def fleet(self) -> str | FleetConfig | None:
        """Fleet the run started with."""
        return self.context.fleet if self.context is not None else None


def _as_result(value: Any) -> TaskResult | None:
    if isinstance(value, TaskResult):
        return value
    try:
        return TaskResult.model_validate(value)
    except ValidationError:  # not a saved result
        return None


async def thread_info(thread_id: str, checkpointer: BaseCheckpointSaver) -> ThreadInfo:
    """Read an interrupted thread's goal, plan, finished tasks and settings.

    Raises:
        NothingToResume: The thread has no unfinished work in this store.
    """
    snapshot = await graph_for(checkpointer).aget_state({"configurable": {"thread_id": thread_id}})
    if not snapshot.next:
        raise NothingToResume(
            f"thread {thread_id!r} has no unfinished work in this checkpoint store (it "
            "finished, or never ran here); check the thread id and --checkpoint"
        )
    values = dict(snapshot.values or {})
    finished: dict[str, TaskResult] = {}
    for raw in (values.get("results") or {}).values():
        if (result := _as_result(raw)) is not None:
            finished[result.task_id] = result
    for task in snapshot.tasks:  # results written before the interruption
        writes = task.result if isinstance(task.result, dict) else {}
        for raw in (writes.get("results") or {}).values():
            if (result := _as_result(raw)) is not None:
                finished[result.task_id] = result
    plan = values.get("plan")
    return ThreadInfo(
        thread_id=thread_id,
        goal=str(values.get("goal") or ""),
        plan=plan if isinstance(plan, Plan) else (Plan.model_validate(plan) if plan else None),
        finished=finished,
        context=saved_context(dict(snapshot.metadata or {})),
        waiting_for_approval=bool(snapshot.interrupts),
    )


__all__ = ["ThreadInfo", "thread_info"]
