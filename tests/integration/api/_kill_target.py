"""A run the resume test kills and resumes: one process per attempt, real embedded fleet.

Usage::

    python tests/integration/api/_kill_target.py run|resume DB THREAD_ID CALL_LOG

``run`` starts the pinned plan below on thread ``THREAD_ID`` with a SQLite checkpointer in
``DB``; ``resume`` continues the thread. Every model call of an agent task is logged to
``CALL_LOG`` (``call <task>`` before, ``done <task> <status>`` after; each line fsynced, so
the log survives SIGKILL). The final :class:`~graph.schemas.RunResult` is printed as JSON.

Task ``B`` is slow in the first process (``SLOW_TOKENS`` tokens, ignore_eos) so the test
can kill it mid-flight; when resumed it generates ``FAST_TOKENS`` to keep the test short.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import graph.execution._agent_node  # noqa: E402
from graph.api import aresume, arun_goal  # noqa: E402
from graph.persistence import make_checkpointer  # noqa: E402
from graph.schemas import Plan, Task  # noqa: E402

SLOW_TOKENS = 1200
FAST_TOKENS = 8
GOAL = "Check that a resumed run never repeats finished work"


def _task(task_id: str, agent: str, deps: list[str], tokens: int = FAST_TOKENS) -> Task:
    return Task(
        id=task_id,
        agent=agent,
        description=f"Write one short sentence for step {task_id}.",
        dependencies=deps,
        max_tokens=tokens,
        extra={"ignore_eos": True},
    )


# A and C finish fast; B is slow; D waits on B; E waits on A (done) and B (running).
PLAN = Plan(
    tasks=[
        _task("A", "researcher", []),
        _task("B", "reasoner", [], SLOW_TOKENS),
        _task("C", "analyst", ["A"]),
        _task("D", "analyst", ["B"]),
        _task("E", "researcher", ["A", "B"]),
    ]
)
SETTINGS: dict[str, Any] = {
    "voice": False,
    "synthesis_max_tokens": 16,
    "fleet": "embedded",
}


def _log(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{time.time():.3f} {line}\n")
        handle.flush()
        os.fsync(handle.fileno())


def _instrument(call_log: Path, *, resumed: bool) -> None:
    """Wrap ``graph.execution._agent_node.run_task`` (the agent's model call) to log every call."""
    original = graph.execution._agent_node.run_task

    async def logged(task: Task, *args: Any, **kwargs: Any) -> Any:
        if resumed and task.max_tokens and task.max_tokens > FAST_TOKENS:
            task = task.model_copy(update={"max_tokens": FAST_TOKENS})
        _log(call_log, f"call {task.id}")
        result = await original(task, *args, **kwargs)
        _log(call_log, f"done {task.id} {result.status}")
        return result

    graph.execution._agent_node.run_task = logged


async def main(mode: str, db: str, thread_id: str, call_log: str) -> None:
    _instrument(Path(call_log), resumed=mode == "resume")
    async with make_checkpointer(db) as saver:
        if mode == "run":
            result = await arun_goal(
                GOAL, plan=PLAN, checkpointer=saver, thread_id=thread_id, **SETTINGS
            )
        else:
            result = await aresume(thread_id, checkpointer=saver)
    print(result.model_dump_json())


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
