"""Where a durable store lives: a SQLite file or a Postgres URL, spelled as users write it.

The checkpoints (``--checkpoint``, ``$KITTY_CHECKPOINTS``) and the memory store
(``[memory] store``) take the same spellings, read here once:

* a file path, ``sqlite:PATH`` or ``sqlite:///PATH`` (``$VARS`` and ``~`` expanded);
* ``postgres://...`` / ``postgresql://...``, shown in messages without its password.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from kitty.errors import UserError

__all__ = [
    "POSTGRES_SCHEMES",
    "SQLITE_PREFIX",
    "hide_password",
    "is_postgres",
    "postgres_setup_lock",
    "sqlite_file",
]

POSTGRES_SCHEMES = ("postgres://", "postgresql://")
SQLITE_PREFIX = "sqlite:"


def is_postgres(location: str) -> bool:
    """True when ``location`` is a Postgres URL."""
    return location.startswith(POSTGRES_SCHEMES)


def hide_password(location: str) -> str:
    """The location for messages: a Postgres URL loses its user and password."""
    if is_postgres(location) and "@" in location:
        scheme, _, rest = location.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return location


def sqlite_file(
    location: str, *, store: str, fix: str, default_name: str, error: type[UserError]
) -> Path:
    """The file a SQLite location names, with its folder created.

    Args:
        location: A path, ``sqlite:PATH`` or ``sqlite:///PATH``.
        store: What the file holds, for messages (``"memory store"``).
        fix: How the user points the store elsewhere, read before "a file such as ..." or
            "a writable file" (``"set [memory] store in the fleet file to"``).
        default_name: The file name suggested when ``location`` is a directory.
        error: The error raised; its message says what was wrong and ``fix``.

    Raises:
        UserError: Of type ``error``: the location is a directory, or its folder cannot
            be created.
    """
    raw = location.removeprefix(SQLITE_PREFIX)
    if location.startswith(SQLITE_PREFIX) and raw.startswith("///"):
        raw = raw[3:]  # sqlite:///path, as SQLAlchemy-style URLs spell it
    path = Path(os.path.expandvars(raw)).expanduser()
    if path.is_dir():
        raise error(f"{store} {path} is a directory; {fix} a file such as {path / default_name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(
            f"cannot create the folder of {store} {path} ({exc.strerror}); {fix} a writable file"
        ) from None
    return path


@asynccontextmanager
async def postgres_setup_lock(
    connection: Any, key: int, *, poll_s: float = 0.1
) -> AsyncIterator[None]:
    """Hold the Postgres advisory lock ``key`` on ``connection`` (a psycopg async one).

    Processes opening a new database together (service workers, hosts) would otherwise run
    LangGraph's table migrations at once and fail on duplicate keys. The lock is polled
    with ``pg_try_advisory_lock`` rather than awaited in ``pg_advisory_lock``: the
    migrations create indexes ``CONCURRENTLY``, which wait for every running statement, so
    a statement blocked on the lock would deadlock the holder's migration.
    """
    while True:
        cursor = await connection.execute("SELECT pg_try_advisory_lock(%s) AS taken", (key,))
        row = await cursor.fetchone()
        if (row["taken"] if isinstance(row, dict) else row[0]) is True:
            break
        await asyncio.sleep(poll_s)
    try:
        yield
    finally:
        await connection.execute("SELECT pg_advisory_unlock(%s)", (key,))
