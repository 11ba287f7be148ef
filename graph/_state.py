"""Graph state: what flows between the planner, the agent tasks and the synthesizer."""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

from typing_extensions import TypedDict

from graph.images import ImageRecord
from graph.schemas import Plan, Task, TaskResult


def merge_results(
    left: dict[str, TaskResult] | None, right: dict[str, TaskResult] | None
) -> dict[str, TaskResult]:
    """Merge task results by task id; ``None`` resets (a new goal on the same thread)."""
    if right is None:
        return {}
    return {**(left or {}), **right}


class InputState(TypedDict, total=False):
    """What a caller (or Studio) sends.

    Attributes:
        goal: The goal in plain words.
        plan: Optional ready plan; the planner then only validates it.
        images: Images for the goal: ``data:image/...;base64,...`` or ``https://`` URLs
            (Studio), or records already cleaned (the Python API). The planner checks and
            cleans them into ``attachments`` and empties this field.
    """

    goal: str
    plan: Plan | None
    images: list[str | ImageRecord] | None


class OutputState(TypedDict, total=False):
    """What a run returns."""

    run_id: str
    goal: str
    plan: Plan
    results: dict[str, TaskResult]
    answer: str
    voice_summary: str | None
    timings: dict[str, float]
    usage: dict[str, int]
    warnings: list[str]


class OrchestratorState(TypedDict, total=False):
    """Full state of a run.

    ``results`` merges per task id (parallel agent tasks each add their own). ``timings``
    and ``usage`` hold the planner/synthesizer/summarizer figures for the run metrics.
    ``attachments`` holds the run's cleaned images once, by sha256; a task that needs
    them carries only their hashes.
    """

    goal: str
    plan: Plan | None
    images: list[str | ImageRecord] | None
    attachments: dict[str, ImageRecord]
    run_id: str
    results: Annotated[dict[str, TaskResult], merge_results]
    answer: str
    voice_summary: str | None
    timings: dict[str, float]
    usage: dict[str, int]
    warnings: list[str]


class AgentInput(TypedDict):
    """Payload of one ``Send("agent", ...)``: a task and what it needs to run.

    ``priority`` is the task's slot priority: its remaining critical path in tokens
    (absent in payloads checkpointed before it existed: 0). ``images`` holds the sha256
    of each run image the task needs (absent: none).
    """

    run_id: str
    goal: str
    task: Task
    plan_ids: list[str]
    extra: dict[str, Any]
    priority: NotRequired[float]
    images: NotRequired[list[str]]
