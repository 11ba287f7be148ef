"""``kitty-orch resume THREAD_ID``: continue an interrupted run from its checkpoints.

A run started by ``kitty-orch run`` saves its state in a checkpoint store (SQLite by
default: ``$KITTY_CHECKPOINTS`` or ``~/.kitty/checkpoints.sqlite``) under a thread id the
run prints. If the run was killed, crashed, was cancelled with Ctrl-C or stopped for
plan approval, ``resume`` continues it: tasks that finished are not run again, only the
unfinished ones run, with the settings the run started with.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from cli.app import CHECKPOINT_HELP, FLEET_HELP, app
from cli.driver import RunOutput, drive
from cli.errors import shows_errors
from cli.report import resume_hint
from cli.view import RunView
from endpoints.config import load_fleet
from graph.checkpoint import make_checkpointer
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
    except ValidationError:  # not a saved result
        return None


async def thread_info(thread_id: str, checkpointer: Any) -> ThreadInfo:
    """Read an interrupted thread's goal, plan, finished tasks and settings.

    Raises:
        NothingToResume: The thread has no unfinished work in this store.
    """
    from graph.api import CONTEXT_METADATA_KEY, graph_for

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
        fleet = json.loads(raw_context).get("fleet")
    return ThreadInfo(
        thread_id=thread_id,
        goal=str(values.get("goal") or ""),
        plan=plan if isinstance(plan, Plan) else (Plan.model_validate(plan) if plan else None),
        finished=finished,
        fleet=fleet,
        waiting_for_approval=bool(snapshot.interrupts),
    )


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
