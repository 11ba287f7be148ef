"""``kitty-orch resume THREAD_ID``: continue an interrupted run from its checkpoints.

A run started by ``kitty-orch run`` saves its state in a checkpoint store (SQLite by
default: ``$KITTY_CHECKPOINTS`` or ``~/.kitty/checkpoints.sqlite``) under a thread id the
run prints. If the run was killed, crashed, was cancelled with Ctrl-C or stopped for
plan approval, ``resume`` continues it: tasks that finished are not run again, only the
unfinished ones run, with the settings the run started with.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from endpoints import load_fleet
from graph import ThreadInfo, make_checkpointer, thread_info
from kitty.cli._app import CHECKPOINT_HELP, FLEET_HELP, app
from kitty.cli._driver import RunOutput, drive
from kitty.cli._errors import shows_errors
from kitty.cli._report import resume_hint
from kitty.cli._view import RunView


async def read_thread(thread_id: str, checkpoint: str | None) -> ThreadInfo:
    """Open the checkpoint store at ``checkpoint`` and read the thread (see :func:`thread_info`).

    Raises:
        CheckpointError: The store cannot be opened.
        NothingToResume: The thread has no unfinished work in it.
    """
    async with make_checkpointer(checkpoint) as saver:
        return await thread_info(thread_id, saver)


@app.command("resume")
@shows_errors
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
    info = asyncio.run(read_thread(thread_id, checkpoint))
    config = load_fleet(fleet or info.fleet)
    view = RunView(goal=info.goal or f"(thread {thread_id})")
    if info.plan is not None:
        view.set_plan(info.plan)
    view.seed_finished(info.finished.values())
    done = ", ".join(sorted(info.finished)) or "none"
    drive(
        None,
        view,
        fleet=config,
        checkpoint=checkpoint,
        output=RunOutput(
            as_json=as_json,
            notice=f"resuming thread {thread_id}; finished before: {done}",
            resume_hint=resume_hint(thread_id, checkpoint),
        ),
        stream_options={"thread_id": thread_id, "fleet": fleet},
    )
