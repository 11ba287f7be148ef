"""``kitty-orch resume THREAD_ID``: continue an interrupted run from its checkpoints.

A run started by ``kitty-orch run`` saves its state in a checkpoint store (SQLite by
default: ``$KITTY_CHECKPOINTS`` or ``~/.kitty/checkpoints.sqlite``) under a thread id the
run prints. If the run was killed, crashed, was cancelled with Ctrl-C or stopped for
plan approval, ``resume`` continues it: tasks that finished are not run again, only the
unfinished ones run, with the settings the run started with. The helpers here are also
what ``kitty-orch run`` uses to open its checkpoint store and ask for plan approval.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from cli.app import FLEET_HELP, app
from cli.approval import paused, plan_prompt
from cli.fleet import fail
from graph.checkpoint import (
    CHECKPOINTS_ENV_VAR,
    CheckpointError,
    describe_location,
    make_checkpointer,
)
from graph.schemas import Plan, RunResult, TaskResult

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
CHECKPOINT_HELP = (
    "Checkpoint store: SQLite file path, sqlite:///path, postgres://... URL, or memory "
    f"(no persistence). Default: ${CHECKPOINTS_ENV_VAR} or ~/.kitty/checkpoints.sqlite."
)

err_console = Console(stderr=True, soft_wrap=True, highlight=False)
console = Console(highlight=False)


@dataclass
class ThreadInfo:
    """What a thread's checkpoint says about an interrupted run.

    Attributes:
        thread_id: The thread.
        goal: The run's goal.
        plan: Its plan (``None`` when it stopped before planning finished).
        finished: Results of tasks that finished before the interruption.
        fleet: Fleet the run started with.
        waiting_for_approval: The plan waits for an approve/edit/reject decision.
    """

    thread_id: str
    goal: str = ""
    plan: Plan | None = None
    finished: dict[str, TaskResult] = field(default_factory=dict)
    fleet: str | None = None
    waiting_for_approval: bool = False


def _as_result(value: Any) -> TaskResult | None:
    if isinstance(value, TaskResult):
        return value
    try:
        return TaskResult.model_validate(value)
    except ValueError:
        return None


async def thread_info(thread_id: str, checkpointer: Any) -> ThreadInfo:
    """Read an interrupted thread's goal, plan, finished tasks and settings.

    Raises:
        NothingToResume: The thread has no unfinished work in this store.
    """
    from graph.api import CONTEXT_METADATA_KEY, NothingToResume, graph_for

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
    for task in snapshot.tasks:
        writes = task.result if isinstance(task.result, dict) else {}
        for raw in (writes.get("results") or {}).values():
            if (result := _as_result(raw)) is not None:
                finished[result.task_id] = result
    plan = values.get("plan")
    fleet = None
    raw_context = (snapshot.metadata or {}).get(CONTEXT_METADATA_KEY)
    if isinstance(raw_context, str):
        import json

        fleet = json.loads(raw_context).get("fleet")
    return ThreadInfo(
        thread_id=thread_id,
        goal=str(values.get("goal") or ""),
        plan=plan if isinstance(plan, Plan) else (Plan.model_validate(plan) if plan else None),
        finished=finished,
        fleet=fleet,
        waiting_for_approval=bool(snapshot.interrupts),
    )


def _replace_plan(view: Any, plan: Plan) -> None:
    view.tasks = {}
    view.set_plan(plan)


@asynccontextmanager
async def durable_run(
    run_kwargs: dict[str, Any], *, view: Any = None, live: Any = None
) -> AsyncIterator[dict[str, Any]]:
    """Run arguments with the checkpoint store opened and a plan-approval prompt added.

    ``run_kwargs["checkpoint"]`` (a location, ``None`` for the default) is replaced by an
    open ``checkpointer``; without that key the arguments pass through unchanged. The
    prompt is only used when a plan waits for approval.
    """
    kwargs = dict(run_kwargs)
    if "on_plan" not in kwargs:
        kwargs["on_plan"] = plan_prompt(
            err_console,
            pause=lambda: paused(live),
            on_edit=(lambda plan: _replace_plan(view, plan)) if view is not None else None,
        )
    if "checkpoint" not in kwargs:
        yield kwargs
        return
    location = kwargs.pop("checkpoint")
    async with make_checkpointer(location) as saver:
        kwargs["checkpointer"] = saver
        yield kwargs


def resume_hint(thread_id: str | None, checkpoint: str | None) -> str:
    """The command that continues a thread."""
    where = ""
    if checkpoint and checkpoint != os.environ.get(CHECKPOINTS_ENV_VAR):
        where = f" --checkpoint {describe_location(checkpoint)}"
    return f"kitty-orch resume {thread_id}{where}"


def _seed_view(view: Any, info: ThreadInfo) -> None:
    view.goal = info.goal or view.goal
    if info.plan is not None:
        view.set_plan(info.plan)
    for task_id, result in info.finished.items():
        task_view = view.tasks.get(task_id)
        if task_view is None:
            continue
        task_view.state = result.status
        task_view.endpoint, task_view.slot = result.endpoint, result.slot
        task_view.latency_s, task_view.queued_s = result.latency_s, result.queued_s
        task_view.prompt_tokens = result.prompt_tokens
        task_view.completion_tokens = result.completion_tokens
        task_view.started_at, task_view.finished_at = result.started_at, result.finished_at
        task_view.error = result.error


@app.command("resume")
def resume_command(
    thread_id: Annotated[str, typer.Argument(help="Thread id printed by kitty-orch run.")],
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", metavar="PATH|URL", help=CHECKPOINT_HELP)
    ] = None,
    fleet: Annotated[
        str | None,
        typer.Option("--fleet", "-f", help=FLEET_HELP + " Default: the run's own fleet."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the RunResult as JSON (no live view).")
    ] = False,
) -> None:
    """Continue an interrupted run: finished tasks are kept, unfinished ones run."""
    from rich.live import Live

    from cli.run import RunView, _drive, _start_embedded, print_result
    from endpoints.config import FleetError, load_fleet
    from graph.api import NothingToResume
    from ops.embedded import EmbeddedFleetError

    view = RunView(goal=f"(thread {thread_id})")
    embedded: list[Any] = []

    async def main(live: Any, log: Console | None) -> RunResult | None:
        async with make_checkpointer(checkpoint) as saver:
            info = await thread_info(thread_id, saver)
            config = load_fleet(fleet or info.fleet)
            view.fleet = config
            _seed_view(view, info)
            if config.embedded:
                embedded.append(await asyncio.to_thread(_start_embedded, config, as_json))
            if log is not None:
                done = ", ".join(sorted(info.finished)) or "none"
                log.print(f"resuming thread {escape(thread_id)}; finished before: {done}")
            run_kwargs: dict[str, Any] = {"thread_id": thread_id, "checkpointer": saver}
            if fleet:
                run_kwargs["fleet"] = fleet
            return await _drive(None, run_kwargs, view, live=live, log=log)  # type: ignore[arg-type]

    result: RunResult | None = None
    try:
        if as_json:
            result = asyncio.run(main(None, None))
        elif console.is_terminal:
            with Live(view, console=console, auto_refresh=False, transient=False) as live:
                result = asyncio.run(main(live, None))
        else:
            result = asyncio.run(main(None, console))
    except KeyboardInterrupt:
        view.interrupted = True
    except (NothingToResume, CheckpointError, FleetError, EmbeddedFleetError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    finally:
        for fleet_servers in embedded:
            fleet_servers.stop()

    if result is None or view.interrupted:
        hint = resume_hint(thread_id, checkpoint)
        err_console.print(f"[bold red]cancelled[/]; continue later with: {escape(hint)}")
        raise typer.Exit(EXIT_INTERRUPTED)
    if as_json:
        typer.echo(result.model_dump_json())
        return
    if not console.is_terminal:
        console.print(view)
    print_result(console, result)
    console.print(f"[dim]thread {escape(thread_id)}[/]")
