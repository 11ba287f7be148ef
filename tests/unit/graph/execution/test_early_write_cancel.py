"""Cancelling a run mid early-write leaves no write transaction open on the SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint

from graph.persistence import make_checkpointer
from tests.helpers import start_early_write


async def test_cancel_during_an_early_write_leaves_the_file_writable(tmp_path: Path) -> None:
    db = tmp_path / "cp.sqlite"
    async with make_checkpointer(db) as saver:
        base: RunnableConfig = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        saved = await saver.aput(base, empty_checkpoint(), {}, {})
        connection: Any = saver.conn  # type: ignore[attr-defined]
        real_commit = connection.commit
        in_write = asyncio.Event()
        go_on = asyncio.Event()

        async def slow_commit() -> None:  # the INSERT ran; the commit is still to come
            in_write.set()
            await go_on.wait()
            await real_commit()

        connection.commit = slow_commit
        write = start_early_write(saver, saved["configurable"]["checkpoint_id"])
        await asyncio.wait_for(in_write.wait(), 5)
        write.cancel()  # the run is cancelled (Ctrl-C, client gone) right here
        await asyncio.gather(write, return_exceptions=True)
        go_on.set()
        for _ in range(100):
            if not connection.in_transaction:
                break
            await asyncio.sleep(0.01)
        # Another connection (a resume) can write at once: nothing holds the write lock.
        other = sqlite3.connect(db, timeout=0.2)
        try:
            other.execute("CREATE TABLE probe (x)")
            other.commit()
        finally:
            other.close()
        rows = await (await connection.execute("SELECT task_id FROM writes")).fetchall()
        assert [r[0] for r in rows] == ["task-1~result"]  # the result was not lost either
