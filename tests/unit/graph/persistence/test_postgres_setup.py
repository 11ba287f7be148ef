"""Several processes opening a new PostgreSQL database at once (real PostgreSQL).

Service workers and hosts start together; each sets up LangGraph's tables. Without a lock
they raced through the migrations (duplicate key on checkpoint_migrations, 4 of 24 opens
failed in a measured run), and a plain advisory lock deadlocked the migrations' CREATE
INDEX CONCURRENTLY.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from graph.persistence import make_checkpointer
from kitty.tools._memory import _open_postgres
from tests.postgres_server import PostgresServer

OPENERS = 4


async def test_checkpointers_opened_together_on_a_new_database_all_set_up(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.new_database()
    async with AsyncExitStack() as stack:
        savers = await asyncio.gather(
            *(stack.enter_async_context(make_checkpointer(url)) for _ in range(OPENERS))
        )
        for saver in savers:
            assert await saver.aget_tuple({"configurable": {"thread_id": "none"}}) is None


async def test_memory_stores_opened_together_on_a_new_database_all_set_up(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.new_database()
    opened = await asyncio.gather(*(_open_postgres(url) for _ in range(OPENERS)))
    try:
        await opened[0].store.aput(("memory", "u", "a"), "k", {"text": "kept"})
        for each in opened:
            assert (await each.store.aget(("memory", "u", "a"), "k")) is not None
    finally:
        for each in opened:
            await each.close()
