"""The live view of a run: header, task table, endpoint slot bars, and one line per event.

:class:`RunScreen` is the rich renderable shown (and refreshed) while a run goes on; when
stdout is not a terminal, :func:`event_line` logs each event as a line instead and the
screen is printed once at the end.
"""

from __future__ import annotations

import json
import time

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from endpoints import FleetConfig
from graph import (
    PhaseStarted,
    PlanReady,
    TaskFallback,
    TaskFinished,
    TaskQueued,
    TaskStarted,
    TaskToolCall,
)
from kitty.cli._view import RunView, TaskView
from kitty.errors import FleetError

_STATE_STYLE = {
    "pending": "dim",
    "waiting": "dim",
    "queued": "yellow",
    "running": "cyan",
    "tool": "magenta",
    "completed": "green",
    "failed": "bold red",
    "skipped": "magenta",
    "cancelled": "red",
}
_DONE_LABEL = {"completed": "done", "failed": "failed", "skipped": "skipped"}
_PHASE_LABEL = {
    "starting": "starting",
    "planning": "planning",
    "tasks": "running tasks",
    "synthesizing": "synthesizing the answer",
    "summarizing": "writing the voice summary",
    "done": "done",
}


class RunScreen:
    """A run's live view (a rich renderable): what :class:`RunView` knows, drawn.

    Args:
        view: The run's state.
        fleet: Fleet whose slot limiters feed the slot bars (none: no bars).
    """

    def __init__(self, view: RunView, fleet: FleetConfig | str | None = None) -> None:
        self.view = view
        self.fleet = fleet

    def __rich__(self) -> RenderableType:
        parts: list[RenderableType] = [header(self.view)]
        if self.view.tasks:
            parts.append(Panel(tasks_table(self.view), title="plan", title_align="left"))
        endpoints = endpoints_table(self.view, self.fleet)
        if endpoints is not None:
            parts.append(Panel(endpoints, title="endpoint slots", title_align="left"))
        return Group(*parts)


# --------------------------------------------------------------------------- header


def header(view: RunView) -> Text:
    """Goal, phase and elapsed time, tasks done and task tokens."""
    phase = _PHASE_LABEL.get(view.phase, view.phase)
    if view.phase_endpoint and view.phase != "done":
        phase += f" on {view.phase_endpoint}"
    if view.interrupted:
        phase = "cancelled (Ctrl-C)"
    results = [task.result for task in view.tasks.values() if task.result is not None]
    tokens_in = sum(r.prompt_tokens for r in results)
    tokens_out = sum(r.completion_tokens for r in results)
    text = Text()
    text.append("goal ", style="bold")
    text.append(_shorten(view.goal, 90) + "\n")
    text.append(phase, style="bold cyan" if view.phase != "done" else "bold green")
    text.append(f" · {view.elapsed_s():.1f} s")
    if view.tasks:
        text.append(
            f" · tasks {len(results)}/{len(view.tasks)} · task tokens {tokens_in}→{tokens_out}"
        )
    return text


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- tasks


def tasks_table(view: RunView) -> Table:
    """The plan: each task's needs, state, endpoint slot, wait, run time and tokens."""
    table = Table(expand=True, show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("task", no_wrap=True)
    table.add_column("agent", no_wrap=True)
    table.add_column("needs", max_width=15)
    table.add_column("state", ratio=1, min_width=12)
    table.add_column("endpoint #slot", no_wrap=True)
    table.add_column("wait", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    now = view.now()
    for task in view.tasks.values():
        result = task.result
        tokens = (
            f"{result.prompt_tokens}→{result.completion_tokens}"
            if result is not None and (result.prompt_tokens or result.completion_tokens)
            else ""
        )
        table.add_row(
            task.id,
            task.agent,
            ", ".join(task.deps) or "-",
            _state_cell(view, task),
            _where_cell(task),
            _wait_cell(task, now),
            _time_cell(task, now),
            tokens,
        )
    return table


def _state_cell(view: RunView, task: TaskView) -> RenderableType:
    style = _STATE_STYLE.get(task.state, "")
    if task.result is not None:
        text = Text(_DONE_LABEL[task.result.status], style=style)
        if task.result.error and task.result.status != "completed":
            text.append(f": {task.result.error}", style="red")
        return text
    if task.state == "waiting":
        open_deps = [d for d in task.deps if d not in view.tasks or not view.tasks[d].done]
        return Text(f"waiting on {', '.join(open_deps) or 'dependencies'}", style=style)
    if task.state == "queued":
        label = "queued"
        if task.fell_back_from:
            label = f"fell back from {task.fell_back_from}, queued"
        return Text(label, style=style)
    if task.state == "running":
        return Spinner("dots", text=Text("running", style=style), style=style)
    if task.state == "tool":
        return Spinner("dots", text=Text(f"tool {task.tool}", style=style), style=style)
    if task.state == "cancelled":
        return Text("cancelled", style=style)
    return Text("dispatched" if task.dispatched_at else "pending", style=style)


def _where_cell(task: TaskView) -> Text:
    result = task.result
    endpoint = (result.endpoint if result else None) or task.endpoint
    if not endpoint:
        return Text("")
    slot = result.slot if result is not None and result.slot is not None else task.slot
    text = Text(endpoint)
    if slot is not None and task.state != "queued":
        text.append(f" #{slot}", style="bold")
    fallback = result.fallback_used if result is not None else task.fallback
    if fallback or (task.fell_back_from and task.state == "running"):
        text.append(" (fallback)", style="yellow")
    return text


def _wait_cell(task: TaskView, now: float) -> str:
    wait = task.result.queued_s if task.result is not None else 0.0
    if task.state in {"queued", "cancelled"} and task.queued_at:
        wait = (task.started_at or now) - task.queued_at
    return f"{wait:.1f} s" if wait >= 0.05 else ""


def _time_cell(task: TaskView, now: float) -> str:
    result = task.result
    started = task.started_at or (result.started_at if result is not None else None)
    if task.state == "running" and started:
        return f"{now - started:.1f} s"
    if result is None and task.state != "cancelled":
        return ""
    spent = result.latency_s if result is not None else 0.0
    if not spent and started:
        finished = result.finished_at if result is not None else None
        spent = (finished or now) - started
    return f"{spent:.1f} s" if started or spent else ""


# --------------------------------------------------------------------------- endpoints


def endpoints_table(view: RunView, fleet: FleetConfig | str | None) -> Table | None:
    """One row per endpoint: slot cells (■ in use, □ free), queue, peak and tasks served."""
    if fleet is None:
        return None
    from endpoints import get_runtime

    try:
        limiters = get_runtime(fleet).limiters()
    except FleetError:
        return None
    served: dict[str, int] = {}
    for task in view.tasks.values():
        if task.endpoint and task.started_at:
            served[task.endpoint] = served.get(task.endpoint, 0) + 1
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("endpoint", no_wrap=True)
    table.add_column("slots", no_wrap=True)
    for column in ("busy", "queued", "peak", "tasks"):
        table.add_column(column, justify="right", no_wrap=True)
    for name, limiter in limiters.items():
        stats = limiter.stats()
        bar = Text()
        bar.append("■" * stats.in_use, style="bold cyan")
        bar.append("□" * max(stats.capacity - stats.in_use, 0), style="dim")
        table.add_row(
            name,
            bar,
            f"{stats.in_use}/{stats.capacity}",
            str(stats.queued) if stats.queued else "",
            str(stats.peak_in_use),
            str(served.get(name, "")),
        )
    return table


# --------------------------------------------------------------------------- event lines


def event_line(view: RunView, event: object) -> str | None:
    """A one-line log of an event, for output that is not a terminal."""
    at = f"{getattr(event, 'at', time.time()) - view.started:6.1f}s  "
    if isinstance(event, PhaseStarted):
        where = f" on {event.endpoint}" if event.endpoint else ""
        return f"{at}{event.phase}{where}"
    if isinstance(event, PlanReady):
        return (
            f"{at}plan ready: {len(event.plan.tasks)} tasks ({event.plan.source}, "
            f"{event.planner_s:.1f} s)"
        )
    if isinstance(event, TaskQueued):
        return f"{at}{event.task_id:<8} queued for a slot on {event.endpoint}"
    if isinstance(event, TaskStarted):
        extra = " (fallback)" if event.fallback else ""
        return f"{at}{event.task_id:<8} running on {event.endpoint} #{event.slot}{extra}"
    if isinstance(event, TaskToolCall):
        if event.phase == "started":
            return f"{at}{event.task_id:<8} tool {event.tool} {_args_line(event.args)}"
        outcome = "ok" if event.ok else ("refused" if event.refused else "failed")
        why = f": {event.error}" if event.error else ""
        return f"{at}{event.task_id:<8} tool {event.tool} {outcome} in {event.seconds:.1f} s{why}"
    if isinstance(event, TaskFallback):
        return (
            f"{at}{event.task_id:<8} {event.failed_endpoint} failed: {event.error}; "
            f"falling back to {event.next_endpoint}"
        )
    if isinstance(event, TaskFinished):
        result = event.result
        detail = (
            f"in {result.latency_s:.1f} s, {result.prompt_tokens}→{result.completion_tokens} tokens"
            if result.status == "completed"
            else result.error or ""
        )
        return f"{at}{event.task_id:<8} {result.status} {detail}".rstrip()
    return None


def _args_line(args: dict[str, object], limit: int = 80) -> str:
    text = json.dumps(args, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
