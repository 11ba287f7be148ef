"""A run's progress as short lines for people (the OpenAI door's ``reasoning_content``).

Chat front ends show ``reasoning_content`` as a "thinking" block: the plan when it is
ready, each task as it starts and ends, each fallback and tool call. Each line ends with a
newline, so the pieces join into readable text however a client concatenates them.
"""

from __future__ import annotations

from typing import Any

from graph import (
    PhaseStarted,
    Plan,
    PlanReady,
    RunResult,
    TaskFallback,
    TaskFinished,
    TaskResult,
    TaskStarted,
    TaskToolCall,
)

# A task description or an error is cut to this many characters in a progress line.
LINE_TEXT_CHARS = 120


def _short(text: str, limit: int = LINE_TEXT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plan_lines(plan: Plan, planner_s: float | None = None) -> str:
    """The plan: one line per task with its id, agent, dependencies and description."""
    took = f" in {planner_s:.1f} s" if planner_s is not None else ""
    count = len(plan.tasks)
    lines = [f"Plan{took}: {count} task{'s' if count != 1 else ''}"]
    for task in plan.tasks:
        after = f" (after {', '.join(task.dependencies)})" if task.dependencies else ""
        lines.append(f"- {task.id} {task.agent}{after}: {_short(task.description)}")
    return "\n".join(lines) + "\n"


def task_finished_line(result: TaskResult) -> str:
    """A task's end: status, seconds, tokens out and tool calls (or what went wrong)."""
    head = f"{result.task_id} {result.agent} {result.status}"
    if result.status != "completed":
        return f"{head}: {_short(result.error or 'no reason given')}\n"
    seconds = (
        result.finished_at - result.started_at
        if result.finished_at is not None and result.started_at is not None
        else result.latency_s
    )
    calls = len(result.tool_calls)
    details = [
        f"{seconds:.1f} s",
        f"{result.completion_tokens} tokens",
        f"{calls} tool call{'s' if calls != 1 else ''}",
    ]
    cut = ", cut at its token cap" if result.truncated else ""
    return f"{head} in {', '.join(details)}{cut}\n"


def progress_line(event: Any) -> str | None:
    """The line for one progress event (``None``: nothing worth a line).

    Waiting and queued events, the answer's own tokens and the voice summary's phase
    get no line: the first two are noise in a chat, the others come after the answer.
    """
    if isinstance(event, PhaseStarted):
        on = f" on {event.endpoint}" if event.endpoint else ""
        if event.phase == "planning":
            return "Planning...\n"
        if event.phase == "synthesizing":
            return f"Writing the answer{on}...\n"
        return None
    if isinstance(event, PlanReady):
        return plan_lines(event.plan, event.planner_s)
    if isinstance(event, TaskStarted):
        again = " (fallback)" if event.fallback else ""
        return f"{event.task_id} {event.agent} started on {event.endpoint} #{event.slot}{again}\n"
    if isinstance(event, TaskFallback):
        return (
            f"{event.task_id}: {event.failed_endpoint} failed ({_short(event.error)}); "
            f"trying {event.next_endpoint}\n"
        )
    if isinstance(event, TaskToolCall):
        if event.phase == "started":
            return f"{event.task_id} {event.agent} calls {event.tool}\n"
        if event.refused:
            return f"{event.task_id} {event.tool} refused: {_short(event.error or '')}\n"
        if not event.ok:
            return f"{event.task_id} {event.tool} failed: {_short(event.error or '')}\n"
        return f"{event.task_id} {event.tool} answered in {event.seconds:.1f} s\n"
    if isinstance(event, TaskFinished):
        return task_finished_line(event.result)
    return None


def result_lines(result: RunResult) -> str:
    """The progress of a finished run, told afterwards (``stream: false``)."""
    lines = plan_lines(result.plan, result.metrics.planner_s)
    return lines + "".join(task_finished_line(task) for task in result.tasks)
