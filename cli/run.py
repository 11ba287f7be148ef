"""``kitty-orch run "GOAL"``: run a goal on the fleet with a live view of the schedule.

The live view follows the run's progress events (:func:`graph.api.astream_goal`): the
plan, each task's state (waiting on its dependencies, queued for a slot, running on an
endpoint slot, done, failed, fell back), time and tokens per task, and one bar per
endpoint showing its slots in use. At the end it prints the answer, the voice summary
and the run's metrics. ``--json`` prints only the :class:`~graph.schemas.RunResult`.

Ctrl-C cancels the run: in-flight model requests are cancelled (their slots are freed
by the limiter), what finished so far is printed, and the exit code is 130. Problems a
user can fix (fleet file, plan file, settings) print one red line and exit with code 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import typing
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from cli.app import FLEET_HELP, app
from cli.fleet import fail
from cli.resume import CHECKPOINT_HELP, resume_hint
from graph.checkpoint import MEMORY
from graph.context import Context
from graph.events import (
    PhaseStarted,
    PlanReady,
    ProgressEvent,
    RunFinished,
    TaskFallback,
    TaskFinished,
    TaskQueued,
    TaskStarted,
    TaskWaiting,
)
from graph.schemas import Plan, RunResult, TaskResult

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
THINKING_LEVELS = ("low", "medium", "high")
# Context fields with their own option.
_NOT_SETTABLE = {"fleet", "max_tasks", "voice", "thinking", "approve_plan"}

console = Console(highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


class PlanFileError(ValueError):
    """A ``--plan`` file cannot be used; the message names the file and the problem."""


# --------------------------------------------------------------------------- inputs


def _error_location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def load_plan_file(path: Path) -> tuple[Plan, str | None]:
    """Read and check a plan file: ``{"tasks": [...]}`` (an optional ``"goal"`` too).

    Returns:
        The plan (strictly validated, as the graph will) and the file's goal, if any.

    Raises:
        PlanFileError: Missing or unreadable file, bad JSON, wrong shape, invalid task,
            unknown agent or dependency, or a cycle; one line naming the file.
    """
    from agents.registry import DEFAULT_AGENTS
    from graph.plan_validation import PlanError, check_given_plan

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanFileError(f"plan file {path} does not exist; check the path") from None
    except OSError as exc:
        raise PlanFileError(f"cannot read plan file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(
            f"plan file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        found = (
            "an object without a 'tasks' list" if isinstance(data, dict) else type(data).__name__
        )
        raise PlanFileError(
            f'plan file {path} must hold a JSON object {{"tasks": [...]}}; found {found}'
        )
    goal = data.pop("goal", None)
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise PlanFileError(
            f"plan file {path}: {_error_location(first['loc'])}: {first['msg']}{more}"
        ) from None
    try:
        plan = check_given_plan(plan, agents=list(DEFAULT_AGENTS))
    except PlanError as exc:
        raise PlanFileError(f"plan file {path}: {exc}") from None
    return plan, goal if isinstance(goal, str) else None


def parse_settings(items: list[str]) -> dict[str, Any]:
    """Turn ``--set NAME=VALUE`` items into :class:`~graph.context.Context` fields.

    Raises:
        ValueError: Not ``NAME=VALUE``, an unknown name, or a value of the wrong type.
    """
    hints = typing.get_type_hints(Context)
    allowed = [f.name for f in fields(Context) if f.name not in _NOT_SETTABLE]
    settings: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ValueError(f"--set {item!r}: write NAME=VALUE, e.g. --set task_timeout_s=60")
        if name not in allowed:
            raise ValueError(f"--set {name}: unknown setting; known: {', '.join(allowed)}")
        value: Any = raw.strip()
        if value.lower() in {"none", "null"}:
            value = None
        try:
            settings[name] = TypeAdapter(hints[name]).validate_python(value)
        except ValidationError as exc:
            raise ValueError(f"--set {name}={raw}: {exc.errors()[0]['msg'].lower()}") from None
    return settings


# --------------------------------------------------------------------------- live state


@dataclass
class TaskView:
    """What the events told us about one task so far."""

    id: str
    agent: str
    deps: list[str]
    state: str = "pending"  # pending waiting queued running completed failed skipped
    endpoint: str | None = None
    slot: int | None = None
    fallback: bool = False
    fell_back_from: str | None = None
    dispatched_at: float | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    latency_s: float = 0.0
    queued_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None

    @property
    def done(self) -> bool:
        """The task ended (completed, failed or skipped)."""
        return self.state in {"completed", "failed", "skipped"}


_STATE_STYLE = {
    "pending": "dim",
    "waiting": "dim",
    "queued": "yellow",
    "running": "cyan",
    "completed": "green",
    "failed": "bold red",
    "skipped": "magenta",
    "cancelled": "red",
}


@dataclass
class RunView:
    """Run state rebuilt from progress events; renders the live view.

    Args:
        goal: The goal shown in the header.
        fleet: Fleet (name, path or config) whose limiters feed the slot bars.
    """

    goal: str
    fleet: Any = None
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

    # ---- events

    def apply(self, event: ProgressEvent) -> None:
        """Update the state with one progress event."""
        self.run_id = self.run_id or getattr(event, "run_id", "")
        if isinstance(event, PhaseStarted):
            self.phase, self.phase_endpoint = event.phase, event.endpoint
        elif isinstance(event, PlanReady):
            self.set_plan(event.plan, event.at)
            self.planner_s = event.planner_s
            self.phase, self.phase_endpoint = "tasks", None
        elif isinstance(event, TaskWaiting):
            view = self._task(event.task_id, event.agent)
            view.state = "waiting"
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
            view = self._task(event.task_id, "")
            view.fell_back_from = event.failed_endpoint
            self.warnings.append(
                f"{event.task_id}: {event.failed_endpoint} failed ({event.error}); "
                f"trying {event.next_endpoint}"
            )
        elif isinstance(event, TaskFinished):
            view = self._task(event.task_id, event.agent)
            view.state = event.status
            view.endpoint = event.endpoint or view.endpoint
            view.slot = event.slot if event.slot is not None else view.slot
            view.fallback = event.fallback
            view.finished_at = event.at
            view.latency_s, view.queued_s = event.latency_s, event.queued_s
            view.prompt_tokens = event.prompt_tokens
            view.completion_tokens = event.completion_tokens
            view.error = event.error
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

    def _task(self, task_id: str, agent: str) -> TaskView:
        view = self.tasks.get(task_id)
        if view is None:
            view = self.tasks[task_id] = TaskView(task_id, agent, [])
        return view

    # ---- rendering

    def _now(self) -> float:
        return self.ended_at or time.time()

    def _state_cell(self, view: TaskView) -> RenderableType:
        style = _STATE_STYLE.get(view.state, "")
        if view.state == "waiting":
            open_deps = [d for d in view.deps if not self.tasks.get(d, TaskView(d, "", [])).done]
            return Text(f"waiting on {', '.join(open_deps) or 'dependencies'}", style=style)
        if view.state == "queued":
            label = "queued"
            if view.fell_back_from:
                label = f"fell back from {view.fell_back_from}, queued"
            return Text(label, style=style)
        if view.state == "running":
            return Spinner("dots", text=Text("running", style=style), style=style)
        if view.state == "cancelled":
            return Text("cancelled", style=style)
        if view.done:
            label = {"completed": "done", "failed": "failed", "skipped": "skipped"}[view.state]
            text = Text(label, style=style)
            if view.error and view.state != "completed":
                text.append(f": {view.error}", style="red")
            return text
        return Text("dispatched" if view.dispatched_at else "pending", style=style)

    @staticmethod
    def _where_cell(view: TaskView) -> Text:
        if not view.endpoint:
            return Text("")
        text = Text(view.endpoint)
        if view.slot is not None and view.state != "queued":
            text.append(f" #{view.slot}", style="bold")
        if view.fallback or (view.fell_back_from and view.state == "running"):
            text.append(" (fallback)", style="yellow")
        return text

    def _wait_cell(self, view: TaskView) -> str:
        wait = view.queued_s
        if view.state in {"queued", "cancelled"} and view.queued_at and not wait:
            wait = (view.started_at or self._now()) - view.queued_at
        return f"{wait:.1f} s" if wait >= 0.05 else ""

    def _time_cell(self, view: TaskView) -> str:
        now = self._now()
        if view.state == "running" and view.started_at:
            return f"{now - view.started_at:.1f} s"
        if view.done or view.state == "cancelled":
            spent = view.latency_s or (
                (view.finished_at or now) - view.started_at if view.started_at else 0.0
            )
            return f"{spent:.1f} s" if view.started_at or spent else ""
        return ""

    def tasks_table(self) -> Table:
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
        for view in self.tasks.values():
            tokens = (
                f"{view.prompt_tokens}→{view.completion_tokens}"
                if view.prompt_tokens or view.completion_tokens
                else ""
            )
            table.add_row(
                view.id,
                view.agent,
                ", ".join(view.deps) or "-",
                self._state_cell(view),
                self._where_cell(view),
                self._wait_cell(view),
                self._time_cell(view),
                tokens,
            )
        return table

    def endpoints_table(self) -> Table | None:
        """One row per endpoint: slot cells (■ in use, □ free), queue and peak."""
        if self.fleet is None:
            return None
        from endpoints.pool import get_runtime

        try:
            limiters = get_runtime(self.fleet).limiters()
        except ValueError:
            return None
        served: dict[str, int] = {}
        for view in self.tasks.values():
            if view.endpoint and view.started_at:
                served[view.endpoint] = served.get(view.endpoint, 0) + 1
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        table.add_column("endpoint", no_wrap=True)
        table.add_column("slots", no_wrap=True)
        table.add_column("busy", justify="right", no_wrap=True)
        table.add_column("queued", justify="right", no_wrap=True)
        table.add_column("peak", justify="right", no_wrap=True)
        table.add_column("tasks", justify="right", no_wrap=True)
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

    def header(self) -> Text:
        """Goal, phase and elapsed time."""
        elapsed = self._now() - self.started
        phase = {
            "starting": "starting",
            "planning": "planning",
            "tasks": "running tasks",
            "synthesizing": "synthesizing the answer",
            "summarizing": "writing the voice summary",
            "done": "done",
        }.get(self.phase, self.phase)
        if self.phase_endpoint and self.phase != "done":
            phase += f" on {self.phase_endpoint}"
        if self.interrupted:
            phase = "cancelled (Ctrl-C)"
        done = sum(v.done for v in self.tasks.values())
        tokens_in = sum(v.prompt_tokens for v in self.tasks.values())
        tokens_out = sum(v.completion_tokens for v in self.tasks.values())
        text = Text()
        text.append("goal ", style="bold")
        text.append(_shorten(self.goal, 90) + "\n")
        text.append(f"{phase}", style="bold cyan" if self.phase != "done" else "bold green")
        text.append(f" · {elapsed:.1f} s")
        if self.tasks:
            text.append(f" · tasks {done}/{len(self.tasks)} · task tokens {tokens_in}→{tokens_out}")
        return text

    def __rich__(self) -> RenderableType:
        parts: list[RenderableType] = [self.header()]
        if self.tasks:
            parts.append(Panel(self.tasks_table(), title="plan", title_align="left"))
        endpoints = self.endpoints_table()
        if endpoints is not None:
            parts.append(Panel(endpoints, title="endpoint slots", title_align="left"))
        return Group(*parts)

    # ---- event lines (when stdout is not a terminal)

    def line_for(self, event: ProgressEvent) -> str | None:
        """A one-line log of an event, for non-interactive output."""
        at = f"{getattr(event, 'at', time.time()) - self.started:6.1f}s  "
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
        if isinstance(event, TaskFallback):
            return (
                f"{at}{event.task_id:<8} {event.failed_endpoint} failed: {event.error}; "
                f"falling back to {event.next_endpoint}"
            )
        if isinstance(event, TaskFinished):
            detail = (
                f"in {event.latency_s:.1f} s, "
                f"{event.prompt_tokens}→{event.completion_tokens} tokens"
                if event.status == "completed"
                else f"{event.error or ''}"
            )
            return f"{at}{event.task_id:<8} {event.status} {detail}".rstrip()
        return None

    # ---- partial result (after Ctrl-C)

    def partial_result(self) -> RunResult | None:
        """A :class:`RunResult` from the events seen so far (``None`` before a plan)."""
        from graph.metrics import compute_metrics

        if self.plan is None:
            return None
        now = self._now()
        results: dict[str, TaskResult] = {}
        for task in self.plan.tasks:
            view = self.tasks[task.id]
            finished = view.done
            results[task.id] = TaskResult(
                task_id=task.id,
                status=view.state if finished else "failed",  # type: ignore[arg-type]
                error=view.error if finished else "cancelled by the user before it finished",
                agent=view.agent,
                endpoint=view.endpoint,
                slot=view.slot,
                fallback_used=view.fallback,
                queued_s=view.queued_s,
                latency_s=view.latency_s
                or ((view.finished_at or now) - view.started_at if view.started_at else 0.0),
                ready_at=view.queued_at or view.finished_at,
                started_at=view.started_at,
                finished_at=view.finished_at or now,
                prompt_tokens=view.prompt_tokens,
                completion_tokens=view.completion_tokens,
            )
        metrics = compute_metrics(
            self.plan,
            results,
            {"planner_s": self.planner_s},
            {},
            now - self.started,
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

    def mark_cancelled(self) -> None:
        """Tasks still open when the run was cancelled."""
        self.interrupted = True
        self.ended_at = self.ended_at or time.time()
        for view in self.tasks.values():
            if not view.done:
                view.state = "cancelled"


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- results


def metrics_table(result: RunResult) -> Table:
    """The run's figures as a two-column table."""
    m = result.metrics
    table = Table(title="metrics", title_justify="left", show_header=False, box=None)
    table.add_column("metric", style="bold")
    table.add_column("value")
    ratio = (
        f" ({m.execution_s / m.critical_path_s:.2f}x the critical path)"
        if m.critical_path_s
        else ""
    )
    rows = [
        ("wall time", f"{m.wall_s:.1f} s"),
        ("planner", f"{m.planner_s:.1f} s ({result.plan.source} plan)"),
        ("tasks makespan", f"{m.execution_s:.1f} s{ratio}"),
        ("critical path", f"{m.critical_path_s:.1f} s (longest dependency chain of task times)"),
        ("synthesis / summary", f"{m.synthesis_s:.1f} s / {m.summary_s:.1f} s"),
        ("peak concurrency", f"{m.peak_concurrency} tasks at once"),
        ("tokens in / out", f"{m.prompt_tokens} / {m.completion_tokens}"),
        (
            "tasks",
            f"{m.tasks_completed} completed, {m.tasks_failed} failed, {m.tasks_skipped} skipped"
            f" of {m.tasks_total}",
        ),
        ("fallbacks", str(m.fallbacks)),
        ("warnings", str(len(result.warnings))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def print_result(out: Console, result: RunResult) -> None:
    """Answer (Markdown), voice summary, metrics and warnings."""
    out.print(Panel(Markdown(result.answer or "_(no answer)_"), title="answer", title_align="left"))
    if result.voice_summary:
        out.print(Panel(Text(result.voice_summary), title="voice summary", title_align="left"))
    out.print(metrics_table(result))
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}")


# --------------------------------------------------------------------------- running


async def _drive(
    goal: str,
    run_kwargs: dict[str, Any],
    view: RunView,
    *,
    live: Live | None,
    log: Console | None,
) -> RunResult | None:
    """Run the goal, feeding events to ``view``; ``None`` when cancelled by Ctrl-C."""
    from cli.resume import durable_run
    from graph.api import astream_goal

    async def consume() -> RunResult | None:
        async with durable_run(run_kwargs, view=view, live=live) as kwargs:
            async for event in astream_goal(goal, **kwargs):
                view.apply(event)
                if log is not None and (line := view.line_for(event)):
                    log.print(escape(line))
                if live is not None:
                    live.update(view, refresh=True)
        return view.result

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.25)
            if live is not None:
                live.update(view, refresh=True)

    loop = asyncio.get_running_loop()
    runner = asyncio.create_task(consume())
    ticker = asyncio.create_task(tick())

    def on_sigint() -> None:
        view.interrupted = True
        runner.cancel()
        # A second Ctrl-C stops at once (Python's default handler).
        loop.remove_signal_handler(signal.SIGINT)

    handler_set = False
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        handler_set = True
    try:
        return await runner
    except asyncio.CancelledError:
        # Ours (SIGINT handler) or the event loop's own Ctrl-C handling: either way stop
        # the run, let cancellation reach the in-flight requests, and report what we have.
        view.interrupted = True
        if not runner.done():
            runner.cancel()
        await asyncio.wait({runner}, timeout=15)
        view.mark_cancelled()
        if live is not None:
            live.update(view, refresh=True)
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        return None
    finally:
        ticker.cancel()
        if handler_set:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signal.SIGINT)


def _preload_model_clients(config: Any) -> None:
    """Import the chat clients the fleet needs before the run starts.

    ``make_chat_model`` imports them on first use, which takes a second or two of CPU
    on the event loop and would delay every task dispatched meanwhile.
    """
    import importlib

    kinds = {endpoint.kind for endpoint in config.all_endpoints()}
    for kind, module in (("llamacpp", "langchain_openai"), ("ollama", "langchain_ollama")):
        if kind in kinds:
            with contextlib.suppress(ImportError):
                importlib.import_module(module)


def _start_embedded(config: Any, quiet: bool) -> Any:
    """Start an embedded fleet's servers that are not up yet (reusing the ones that are)."""
    from ops.embedded import EmbeddedFleet

    embedded = EmbeddedFleet(config)
    began = time.perf_counter()
    embedded.start()
    if not quiet and embedded.servers:
        err_console.print(
            f"[dim]started {len(embedded.servers)} embedded llama.cpp server(s) for fleet "
            f"{escape(config.name)} in {time.perf_counter() - began:.1f} s; "
            "they stop when the run ends[/]"
        )
    return embedded


@app.command("run")
def run_command(
    goal: Annotated[
        str | None,
        typer.Argument(
            help="What to do, in plain words (optional with --plan when the file has a goal)."
        ),
    ] = None,
    fleet: Annotated[str | None, typer.Option("--fleet", "-f", help=FLEET_HELP)] = None,
    max_tasks: Annotated[
        int, typer.Option("--max-tasks", help="Most tasks the planner may create (1-50).")
    ] = 6,
    voice: Annotated[
        bool, typer.Option("--voice/--no-voice", help="Write a 2-3 sentence voice summary.")
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the RunResult as JSON (no live view).")
    ] = False,
    timeline: Annotated[
        Path | None,
        typer.Option(
            "--timeline", metavar="PATH.png", help="Save a Gantt timeline of the run to this PNG."
        ),
    ] = None,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            metavar="PLAN.json",
            help='Run this plan (JSON {"tasks": [{"id", "agent", "description", '
            '"dependencies", "max_tokens", "extra"}]}) instead of asking the planner.',
        ),
    ] = None,
    thinking: Annotated[
        str | None,
        typer.Option(
            "--thinking",
            metavar="LEVEL",
            help="Reasoning effort of the synthesizer: low, medium, high.",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="NAME=VALUE",
            help="Further run setting NAME=VALUE (repeatable): task_timeout_s, "
            "synthesis_max_tokens, summary_max_tokens, run_deadline_s, ...",
        ),
    ] = None,
    thread_id: Annotated[
        str | None,
        typer.Option(
            "--thread-id",
            help="Checkpoint thread (default: a new one, printed). A thread with unfinished "
            "work is continued instead of starting GOAL.",
        ),
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", metavar="PATH|URL", help=CHECKPOINT_HELP)
    ] = None,
    approve_plan: Annotated[
        bool,
        typer.Option(
            "--approve-plan", help="Show the plan and ask to run, edit or reject it first."
        ),
    ] = False,
) -> None:
    """Run a goal on the fleet: plan, run the tasks in parallel, synthesize an answer."""
    from endpoints.config import DEFAULT_FLEET, FLEET_ENV_VAR, FleetError, load_fleet
    from graph.api import make_context
    from ops.embedded import EmbeddedFleetError

    fleet_name = fleet or os.environ.get(FLEET_ENV_VAR) or DEFAULT_FLEET
    try:
        plan, file_goal = load_plan_file(plan_file) if plan_file is not None else (None, None)
        goal = goal if goal is not None else file_goal
        if goal is None:
            raise ValueError('give a goal: kitty-orch run "GOAL" (or a --plan file with a goal)')
        if thinking is not None and thinking not in THINKING_LEVELS:
            raise ValueError(f"--thinking {thinking!r}: use one of {', '.join(THINKING_LEVELS)}")
        extra = parse_settings(settings or [])
        context = make_context(
            fleet=fleet_name,
            max_tasks=max_tasks,
            voice=voice,
            thinking=thinking,
            approve_plan=approve_plan,
            **extra,
        )
        config = load_fleet(fleet_name)
    except (FleetError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)

    view = RunView(goal=goal, fleet=config)
    if plan is not None:
        view.set_plan(plan)
    embedded = None
    result: RunResult | None = None
    try:
        if config.embedded:
            embedded = _start_embedded(config, quiet=as_json)
        _preload_model_clients(config)
        thread_id = thread_id or uuid.uuid4().hex
        run_kwargs: dict[str, Any] = {
            "plan": plan,
            "context": context,
            "thread_id": thread_id,
            "checkpoint": checkpoint,
        }
        if not as_json:
            err_console.print(f"[dim]thread {escape(thread_id)}[/]")
        if as_json:
            result = asyncio.run(_drive(goal, run_kwargs, view, live=None, log=None))
        elif console.is_terminal:
            with Live(view, console=console, auto_refresh=False, transient=False) as live:
                result = asyncio.run(_drive(goal, run_kwargs, view, live=live, log=None))
        else:
            result = asyncio.run(_drive(goal, run_kwargs, view, live=None, log=console))
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the loop took over
        view.interrupted = True
    except (FleetError, EmbeddedFleetError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    finally:
        if embedded is not None:
            embedded.stop()

    if view.interrupted:
        _report_cancelled(view, as_json=as_json, timeline=timeline)
        if checkpoint != MEMORY:
            err_console.print(f"continue it with: {escape(resume_hint(thread_id, checkpoint))}")
        raise typer.Exit(EXIT_INTERRUPTED)
    if result is None:
        fail("the run ended without a result (no run_finished event); please report this", 1)

    if timeline is not None:
        _save_timeline(result, timeline)
    if as_json:
        typer.echo(result.model_dump_json())
        return
    if not console.is_terminal:
        console.print(view)
    print_result(console, result)
    if timeline is not None:
        console.print(f"[green]timeline saved:[/] {escape(str(timeline))}")


def _save_timeline(result: RunResult, path: Path) -> None:
    from graph.timeline import plot_timeline

    try:
        plot_timeline(result, path)
    except OSError as exc:
        err_console.print(
            f"[bold red]error:[/] cannot write timeline {escape(str(path))}: "
            f"{escape(exc.strerror or str(exc))}; choose a writable path"
        )


def _report_cancelled(view: RunView, *, as_json: bool, timeline: Path | None) -> None:
    view.mark_cancelled()
    partial = view.partial_result()
    if partial is not None and timeline is not None:
        _save_timeline(partial, timeline)
    if as_json:
        if partial is not None:
            typer.echo(partial.model_dump_json())
        err_console.print("[red]cancelled (Ctrl-C)[/]")
        return
    if not console.is_terminal:
        console.print(view)
    done = [v for v in view.tasks.values() if v.state == "completed"]
    console.print(
        f"[bold red]cancelled[/] after {view._now() - view.started:.1f} s: "
        f"{len(done)} of {len(view.tasks)} tasks completed; in-flight requests were cancelled"
    )
    if partial is not None:
        console.print(metrics_table(partial))
