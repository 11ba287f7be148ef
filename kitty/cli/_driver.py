"""Run a goal, or continue a thread, on the fleet with a live view; print how it ended.

:func:`drive` is what ``kitty-orch run`` and ``kitty-orch resume`` both call. It serves an
embedded fleet for the run (:mod:`kitty.cli._servers`), follows :func:`graph.astream_goal`
into a :class:`~kitty.cli._view.RunView`, redraws the live view on a terminal (or logs one
line per event when stdout is not one), asks for plan approval when the run wants it,
and prints the result (:mod:`kitty.cli._report`).

Ctrl-C cancels the run: in-flight model requests are cancelled (their slots are freed
by the limiter), what finished so far is printed, and the exit code is 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import Mapping
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from endpoints import FleetConfig
from graph import RunResult, astream_goal, make_checkpointer
from kitty.cli._approval import paused, plan_prompt
from kitty.cli._console import console, err_console
from kitty.cli._errors import EXIT_INTERRUPTED
from kitty.cli._render import RunScreen, event_line
from kitty.cli._report import report_cancelled, report_result
from kitty.cli._servers import embedded_servers
from kitty.cli._view import RunView
from kitty.errors import InternalError

# How often the live view redraws between events (elapsed times, slot bars).
REFRESH_S = 0.25
# How long a cancelled run may take to let its in-flight requests go.
CANCEL_GRACE_S = 15.0


@dataclass(frozen=True)
class RunOutput:
    """How a run is shown.

    Attributes:
        as_json: Print only the :class:`RunResult` as JSON (no live view, no notices).
        timeline: Save a Gantt timeline PNG of the run here.
        notice: One dim line for stderr once the fleet is up (e.g. the thread id).
        resume_hint: The command that continues the run, printed after a Ctrl-C.
    """

    as_json: bool = False
    timeline: Path | None = None
    notice: str | None = None
    resume_hint: str | None = None


def drive(
    goal: str | None,
    view: RunView,
    *,
    fleet: FleetConfig,
    checkpoint: str | None,
    output: RunOutput,
    stream_options: Mapping[str, Any] | None = None,
) -> RunResult:
    """Run ``goal`` (``None``: continue ``stream_options["thread_id"]``) and print the end.

    Args:
        goal: What to do; ``None`` continues the thread given in ``stream_options``.
        view: The run's state; may already show a plan and finished tasks.
        fleet: The fleet the run uses; an embedded one is served for the run.
        checkpoint: Checkpoint store location (``None``: the default store).
        output: How to show the run.
        stream_options: Further :func:`graph.astream_goal` keywords (``plan``,
            ``context``, ``thread_id``, ``fleet``...).

    Returns:
        The run's result, after it was printed.

    Raises:
        typer.Exit: Code 130 when the run was cancelled with Ctrl-C (after printing
            what finished).
        UserError: The fleet cannot start, the store cannot open, the thread has
            nothing to resume...: the message says what to do.
        InternalError: The run ended without a result.
    """
    screen = RunScreen(view, fleet)
    result: RunResult | None = None
    try:
        with embedded_servers(fleet, announce=not output.as_json):
            _preload_model_clients(fleet)
            if output.notice and not output.as_json:
                err_console.print(f"[dim]{escape(output.notice)}[/]")
            follow = _Follow(screen, goal, checkpoint, dict(stream_options or {}))
            result = follow.run(as_json=output.as_json)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the event loop took over
        view.interrupted = True
    if view.interrupted:
        report_cancelled(
            screen, as_json=output.as_json, timeline=output.timeline, hint=output.resume_hint
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    if result is None:
        raise InternalError("the run ended without a result (no run_finished event)")
    report_result(screen, result, as_json=output.as_json, timeline=output.timeline)
    return result


def _preload_model_clients(config: FleetConfig) -> None:
    """Import the chat clients the fleet needs before the run starts.

    ``make_chat_model`` imports them on first use, which takes a second or two of CPU
    on the event loop and would delay every task dispatched meanwhile.
    """
    kinds = {endpoint.kind for endpoint in config.all_endpoints()}
    for kind, module in (("llamacpp", "langchain_openai"), ("ollama", "langchain_ollama")):
        if kind in kinds:
            with contextlib.suppress(ImportError):
                importlib.import_module(module)


class _Follow:
    """One run's event stream, fed into the view, with Ctrl-C handling."""

    def __init__(
        self, screen: RunScreen, goal: str | None, checkpoint: str | None, options: dict[str, Any]
    ) -> None:
        self.screen = screen
        self.view = screen.view
        self.goal = goal
        self.checkpoint = checkpoint
        self.options = options

    def run(self, *, as_json: bool) -> RunResult | None:
        """Follow the run to its end; ``None`` when it was cancelled."""
        if as_json:
            return asyncio.run(self._follow(live=None, log=None))
        if console.is_terminal:
            with Live(self.screen, console=console, auto_refresh=False, transient=False) as live:
                return asyncio.run(self._follow(live=live, log=None))
        return asyncio.run(self._follow(live=None, log=console))

    async def _consume(self, live: Live | None, log: Console | None) -> RunResult | None:
        on_plan = plan_prompt(
            err_console, pause=lambda: paused(live), on_edit=self.view.replace_plan
        )
        async with make_checkpointer(self.checkpoint) as saver:
            stream = astream_goal(self.goal, checkpointer=saver, on_plan=on_plan, **self.options)
            async with aclosing(stream) as events:
                async for event in events:
                    self.view.apply(event)
                    if log is not None and (line := event_line(self.view, event)):
                        log.print(escape(line))
                    if live is not None:
                        live.update(self.screen, refresh=True)
        return self.view.result

    async def _tick(self, live: Live) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            live.update(self.screen, refresh=True)

    async def _follow(self, *, live: Live | None, log: Console | None) -> RunResult | None:
        loop = asyncio.get_running_loop()
        runner = asyncio.create_task(self._consume(live, log))
        ticker = asyncio.create_task(self._tick(live)) if live is not None else None

        def on_sigint() -> None:
            self.view.interrupted = True
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
            self.view.interrupted = True
            if not runner.done():
                runner.cancel()
            await asyncio.wait({runner}, timeout=CANCEL_GRACE_S)
            self.view.mark_cancelled()
            if live is not None:
                live.update(self.screen, refresh=True)
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return None
        finally:
            if ticker is not None:
                ticker.cancel()
            if handler_set:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signal.SIGINT)
