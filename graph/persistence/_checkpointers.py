"""Checkpointers for durable runs: SQLite by default, in-memory for tests, Postgres by URL.

A checkpointer stores a run's state after every step and each finished task's result
as soon as it returns, so an interrupted run (crash, kill, Ctrl-C, a plan waiting for
approval) continues where it stopped. Where the checkpoints go is one string:

* a file path (or ``sqlite:///path``): SQLite (the default,
  ``$KITTY_CHECKPOINTS`` or ``~/.kitty/checkpoints.sqlite``);
* ``memory``: in-process only (tests, notebooks);
* ``postgres://...`` / ``postgresql://...``: Postgres, for several orchestrator processes
  sharing threads (needs ``langgraph-checkpoint-postgres``).

LangGraph Studio keeps using its server's own checkpointer.

Checkpoints hold every goal, plan and answer of a run; :func:`delete_threads_older_than`
removes threads idle for longer than a retention period (the service's ``--keep-days``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from endpoints.runtime import RuntimeSlot, process_runtime
from kitty.errors import CheckpointError
from kitty.store_location import hide_password, is_postgres, postgres_setup_lock, sqlite_file

logger = logging.getLogger("kitty.graph")

CHECKPOINTS_ENV_VAR = "KITTY_CHECKPOINTS"
DEFAULT_CHECKPOINT_PATH = Path("~/.kitty/checkpoints.sqlite")
MEMORY = "memory"
SQLITE_SCHEME = "sqlite:///"
# How long closing a SQLite checkpointer waits for an operation in flight to finish.
CLOSE_WAIT_S = 30.0

# The graph's own types stored in checkpoints; LangGraph's (Send, Interrupt...) are
# allowed by the serializer itself. Anything else in a checkpoint is not unpacked.
SERDE_ALLOWLIST: list[tuple[str, ...]] = [
    ("graph.schemas", "Plan"),
    ("graph.schemas", "Task"),
    ("graph.schemas", "TaskResult"),
    ("graph.images._loading", "ImageRecord"),
]


def checkpoint_serde() -> JsonPlusSerializer:
    """The serializer every checkpointer made here uses (explicit type allowlist)."""
    return JsonPlusSerializer(allowed_msgpack_modules=SERDE_ALLOWLIST)


def default_checkpoint_location() -> str:
    """``$KITTY_CHECKPOINTS`` or ``~/.kitty/checkpoints.sqlite``."""
    return os.environ.get(CHECKPOINTS_ENV_VAR) or str(DEFAULT_CHECKPOINT_PATH.expanduser())


def describe_location(url_or_path: str | os.PathLike[str] | None = None) -> str:
    """Where checkpoints go, for messages (a Postgres URL loses its password)."""
    return hide_password(str(url_or_path) if url_or_path else default_checkpoint_location())


def _new_memory_saver() -> InMemorySaver:
    return InMemorySaver(serde=checkpoint_serde())


_SHARED_MEMORY = RuntimeSlot("the in-memory checkpointer of runs given none", _new_memory_saver)


def shared_memory_checkpointer() -> InMemorySaver:
    """One process-wide in-memory checkpointer (plan approval without a store given)."""
    return process_runtime().get(_SHARED_MEMORY)


def _sqlite_path(spec: str) -> Path:
    return sqlite_file(
        spec,
        store="checkpoint file",
        fix=f"point --checkpoint (or {CHECKPOINTS_ENV_VAR}) at",
        default_name="checkpoints.sqlite",
        error=CheckpointError,
    )


async def _close_sqlite(connection: Any, saver_lock: asyncio.Lock) -> None:
    """Let a write in flight finish, roll back what a cancelled run left, close the file.

    Every AsyncSqliteSaver operation holds ``saver_lock``, so once it is ours no write
    is half-queued on the connection's worker thread. Without it a write still in
    flight (the shielded early write of graph.execution._completion_registry, or
    LangGraph's last put) could
    queue its INSERT after the rollback and before the close: sqlite3 then keeps the
    closed connection alive as a "zombie" while the writer's cursor lives, holding the
    write lock until that cursor is garbage collected, and the resume finds it locked.
    """
    try:
        await asyncio.wait_for(saver_lock.acquire(), CLOSE_WAIT_S)
        held = True
    except TimeoutError:
        # Something keeps the lock for good (an abandoned alist): close all the same.
        logger.warning("checkpoint file closed while an operation still held it")
        held = False
    try:
        if connection.in_transaction:
            logger.warning("checkpoint file closed with a write in progress; rolled it back")
            await connection.rollback()
    finally:
        try:
            await connection.close()
        finally:
            if held:
                saver_lock.release()


@asynccontextmanager
async def _sqlite(spec: str) -> AsyncIterator[BaseCheckpointSaver]:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = _sqlite_path(spec)
    try:
        # Wait for a lock instead of failing at once: a cancelled run may still be closing
        # its connection, or another process may be writing (WAL lets readers proceed).
        connection = await aiosqlite.connect(path, timeout=30.0)
    except (sqlite3.Error, OSError) as exc:
        raise CheckpointError(
            f"cannot open checkpoint file {path} ({exc}); pass --checkpoint with a "
            f"writable path or set {CHECKPOINTS_ENV_VAR}"
        ) from None
    saver: AsyncSqliteSaver | None = None
    try:
        saver = AsyncSqliteSaver(connection, serde=checkpoint_serde())
        try:
            await connection.execute("PRAGMA journal_mode=WAL")
            await saver.setup()
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(
                f"{path} is not a usable SQLite checkpoint file ({exc}); "
                "point --checkpoint at another file"
            ) from None
        yield saver
    finally:
        # Shielded: a run cancelled while this closes must not leave the file open with
        # a write transaction (the next opener, e.g. a resume, would find it locked).
        lock = saver.lock if saver else asyncio.Lock()
        closing = asyncio.ensure_future(_close_sqlite(connection, lock))
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            await closing
            raise


# Postgres advisory lock key around table setup (any 64-bit number unique to this purpose).
SETUP_LOCK = 0x6B697474795F6370  # "kitty_cp"


@asynccontextmanager
async def _postgres(url: str) -> AsyncIterator[BaseCheckpointSaver]:
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError:
        raise CheckpointError(
            "Postgres checkpoints need langgraph-checkpoint-postgres; run: "
            "pip install 'kitty-orchestrator[postgres]' (or pip install "
            "langgraph-checkpoint-postgres 'psycopg[binary]')"
        ) from None
    import psycopg

    opened = False
    try:
        async with AsyncPostgresSaver.from_conn_string(url, serde=checkpoint_serde()) as saver:
            # Workers and hosts starting together on a new database would race through
            # LangGraph's migrations (duplicate key on checkpoint_migrations): one at a time.
            async with postgres_setup_lock(cast(Any, saver.conn), SETUP_LOCK):
                await saver.setup()
            opened = True
            yield saver
    except psycopg.Error as exc:
        if opened:
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot connect to Postgres at {describe_location(url)} ({first_line}); "
            "check the URL, that the server runs and that the user may log in"
        ) from None


def check_location(url_or_path: str | os.PathLike[str] | None = None) -> str:
    """Check a checkpoint location before a long-lived process opens it.

    Returns:
        The location, resolved (default applied).

    Raises:
        CheckpointError: Unknown scheme, a directory, or a folder that cannot be created.
    """
    spec = str(url_or_path) if url_or_path else default_checkpoint_location()
    if spec == MEMORY or is_postgres(spec):
        return spec
    if "://" in spec and not spec.startswith(SQLITE_SCHEME):
        raise CheckpointError(
            f"unknown checkpoint store {describe_location(spec)!r}; use a file path, "
            "sqlite:///path, memory, or a postgres:// URL"
        )
    return str(_sqlite_path(spec))


@asynccontextmanager
async def make_checkpointer(
    url_or_path: str | os.PathLike[str] | None = None,
) -> AsyncIterator[BaseCheckpointSaver]:
    """Open a checkpointer for durable runs; closes it on exit.

    Args:
        url_or_path: ``memory``, a SQLite file path (or ``sqlite:///path``), or a
            ``postgres://`` / ``postgresql://`` URL. ``None`` uses ``$KITTY_CHECKPOINTS``
            or ``~/.kitty/checkpoints.sqlite``.

    Yields:
        A LangGraph checkpointer; pass it to :func:`graph.arun_goal` (``checkpointer=``).

    Raises:
        CheckpointError: The store cannot be opened (unwritable path, not an SQLite file,
            Postgres unreachable or its package missing); the message says what to do.

    Example:
        >>> async with make_checkpointer("runs.sqlite") as saver:  # doctest: +SKIP
        ...     result = await arun_goal("...", checkpointer=saver)
        ...     print(result.thread_id)
    """
    spec = str(url_or_path) if url_or_path else default_checkpoint_location()
    if spec == MEMORY:
        yield InMemorySaver(serde=checkpoint_serde())
    elif is_postgres(spec):
        async with _postgres(spec) as saver:
            yield saver
    else:
        async with _sqlite(check_location(spec)) as saver:
            yield saver


async def _thread_ids(saver: BaseCheckpointSaver) -> list[str]:
    """Every thread id in the store."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    if isinstance(saver, AsyncSqliteSaver):
        # One small query instead of reading (and unpacking) every checkpoint.
        async with (
            saver.lock,
            saver.conn.execute("SELECT DISTINCT thread_id FROM checkpoints") as cursor,
        ):
            return [str(row[0]) async for row in cursor]
    seen: dict[str, None] = {}
    async for item in saver.alist(None):
        seen.setdefault(str(item.config["configurable"]["thread_id"]), None)
    return list(seen)


def _as_utc(timestamp: str) -> datetime:
    moment = datetime.fromisoformat(timestamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def delete_threads_older_than(
    saver: BaseCheckpointSaver, *, keep_days: float, now: datetime | None = None
) -> list[str]:
    """Delete every thread whose last checkpoint is older than ``keep_days`` days.

    A thread's age is the ``ts`` of its newest checkpoint, so a run that was resumed
    recently stays however old its first checkpoint is.

    Args:
        saver: The checkpointer (SQLite, Postgres or in-memory).
        keep_days: Retention period in days.
        now: The current time (tests); default: now, UTC.

    Returns:
        The ids of the threads deleted, sorted.
    """
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    expired: list[str] = []
    for thread_id in await _thread_ids(saver):
        latest = await saver.aget_tuple({"configurable": {"thread_id": thread_id}})
        if latest is None:
            continue
        stamp = latest.checkpoint.get("ts")
        if stamp and _as_utc(stamp) < cutoff:
            expired.append(thread_id)
    for thread_id in expired:
        await saver.adelete_thread(thread_id)
    return sorted(expired)


__all__ = [
    "CHECKPOINTS_ENV_VAR",
    "CheckpointError",
    "check_location",
    "checkpoint_serde",
    "default_checkpoint_location",
    "delete_threads_older_than",
    "describe_location",
    "make_checkpointer",
    "shared_memory_checkpointer",
]
