"""Closing a SQLite checkpointer while an early write is still in flight.

A cancelled run closes its checkpointer while the shielded early write of a finished
task (graph.execution._completion_registry.persist_result) is still going. The close
must let that write
finish: interleaved with it, the write's INSERT could run after the close's rollback
and before the close itself, and SQLite then keeps the connection (and its write lock)
alive until the writer's cursor is garbage collected, so a resume found the file locked.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import empty_checkpoint

from graph.persistence import make_checkpointer
from tests.helpers import start_early_write

# Loop turns given to the close before the worker thread is let go: enough for it to
# queue its rollback (or to start waiting for the saver's lock); no wall-clock wait.
CLOSE_TURNS = 20


def _locked(db: Path) -> bool:
    """Whether another connection (a resume) would wait for the file's write lock."""
    other = sqlite3.connect(db, timeout=0.2)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.rollback()
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        other.close()


def _saved_write_tasks(db: Path) -> list[str]:
    reader = sqlite3.connect(db)
    try:
        return [row[0] for row in reader.execute("SELECT task_id FROM writes ORDER BY task_id")]
    finally:
        reader.close()


async def test_close_waits_for_an_early_write_in_flight(tmp_path: Path) -> None:
    db = tmp_path / "cp.sqlite"
    worker_free = threading.Event()
    context = make_checkpointer(db)
    saver: Any = await context.__aenter__()
    base = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    saved = await saver.aput(base, empty_checkpoint(), {}, {})
    connection = saver.conn
    # A write cancelled after its INSERT ran and before its commit was queued leaves
    # its transaction open (the close then takes its rollback path).
    await connection.execute(
        "INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel) "
        "VALUES ('t', '', ?, 'cancelled-task', 0, 'results')",
        (saved["configurable"]["checkpoint_id"],),
    )
    # Keep the connection's worker thread busy (a loaded machine) so the early write
    # below is still queued when the close starts.
    await connection.create_function("hold_worker", 0, lambda: worker_free.wait(5))
    busy = asyncio.ensure_future(connection.execute_fetchall("SELECT hold_worker()"))
    write = start_early_write(saver, saved["configurable"]["checkpoint_id"])
    for _ in range(CLOSE_TURNS):
        if saver.lock.locked():  # the write has started: its first step is queued
            break
        await asyncio.sleep(0)
    assert saver.lock.locked()

    closing = asyncio.create_task(context.__aexit__(None, None, None))
    for _ in range(CLOSE_TURNS):
        await asyncio.sleep(0)
    worker_free.set()
    await asyncio.wait_for(closing, 10)
    await busy

    assert not _locked(db), "the closed checkpointer still holds the file's write lock"
    assert await write is True
    assert "task-1~result" in _saved_write_tasks(db)  # the early write was not lost
