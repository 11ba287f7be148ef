"""``memory.store`` / ``memory.recall`` on LangGraph's ``BaseStore``, kept across runs.

Where memories live is ``[memory] store`` in the fleet file: a SQLite file (a path, or
``sqlite:PATH``; the default is a file beside the checkpoints, chosen by the caller) or a
Postgres URL (``postgresql://...``, for several processes or hosts). Each store is opened
once per process and event loop and its tables are created on first open.

Memories are namespaced ``("memory", user_id, agent)``: an agent recalls only what it (for
that user) stored. Recall ranks an agent's memories by the words they share with the query
(case-insensitive), best first.

Both ends are capped by ``[memory]`` settings: a note longer than ``max_note_chars`` is
refused (the model is told to store a shorter one), and a namespace keeps at most
``max_notes`` notes: storing one more forgets the oldest (by last update), so a
long-running deployment keeps working and a caller cannot grow the store without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from langchain_core.tools import BaseTool, StructuredTool
from langgraph.store.base import BaseStore, Item
from pydantic import BaseModel, Field

from endpoints.config import MAX_NOTES_LIMIT, MemorySettings
from endpoints.runtime import RuntimeSlot, process_runtime
from kitty.errors import ToolError, ToolSourceError
from kitty.store_location import hide_password, is_postgres, postgres_setup_lock, sqlite_file

__all__ = [
    "MEMORY_RECALL",
    "MEMORY_STORE",
    "aclose_memory_stores",
    "memory_namespace",
    "memory_store",
    "memory_tools",
    "rank_by_keywords",
]

MEMORY_STORE = "memory.store"
MEMORY_RECALL = "memory.recall"
# Recall reads an agent's memories in pages of this size, up to _RECALL_SCAN items: the
# most a namespace holds ([memory] max_notes is at most MAX_NOTES_LIMIT) and a page more,
# so a store just over the cap is seen over it and trimmed.
_PAGE = 200
_RECALL_SCAN = MAX_NOTES_LIMIT + _PAGE
_WORD = re.compile(r"\w+")
# Words that would make every memory "match" a question; ignored unless nothing else is left.
_STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how i in is it its me my "  # noqa: SIM905
    "of on or our so that the their them there they this to was we were what when where "
    "which who why will with you your".split()
)


@dataclass
class _OpenStore:
    store: BaseStore
    close: Callable[[], Awaitable[None]]


_STORES: RuntimeSlot[dict[str, asyncio.Task[_OpenStore]]] = RuntimeSlot(
    "memory stores of an event loop, by location", dict
)


def _loop_stores(loop: asyncio.AbstractEventLoop) -> dict[str, asyncio.Task[_OpenStore]]:
    return process_runtime().for_loop(_STORES, loop)


async def memory_store(settings: MemorySettings, default_path: Path) -> BaseStore:
    """The memory store for these settings, opened once per process and event loop.

    Args:
        settings: The fleet file's ``[memory]`` table; ``store`` is a SQLite path,
            ``sqlite:PATH`` or a ``postgresql://`` URL.
        default_path: The SQLite file used when ``settings.store`` is not set.

    Returns:
        A set-up ``AsyncSqliteStore`` or ``AsyncPostgresStore`` (concurrent first calls
        share one open).

    Raises:
        ToolSourceError: The store cannot be opened or set up; names the location (a
            Postgres password hidden) and the fix. Not remembered: a later call retries.
    """
    location = settings.store or str(default_path)
    loop = asyncio.get_running_loop()
    stores = _loop_stores(loop)
    opening = stores.get(location)
    if opening is None or (opening.done() and (opening.cancelled() or opening.exception())):
        opening = loop.create_task(_open(location))
        stores[location] = opening
    try:
        return (await asyncio.shield(opening)).store
    except ToolSourceError:
        if stores.get(location) is opening:
            del stores[location]
        raise


async def aclose_memory_stores() -> None:
    """Close every memory store opened on the running event loop."""
    stores = _loop_stores(asyncio.get_running_loop())
    opened = list(stores.values())
    stores.clear()
    for task in opened:
        if not task.done():
            task.cancel()
            continue
        if task.exception() is None:
            await task.result().close()


async def _open(location: str) -> _OpenStore:
    if is_postgres(location):
        opened = await _open_postgres(location)
    else:
        opened = await _open_sqlite(_sqlite_path(location))
    # aiosqlite's connection thread keeps the interpreter alive until closed: close the
    # store when its loop shuts down (asyncio.run cancels every task left at its end).
    keeper = asyncio.get_running_loop().create_task(_close_at_loop_end(opened.close))
    return _OpenStore(store=opened.store, close=lambda: _cancel_and_wait(keeper))


async def _close_at_loop_end(close: Callable[[], Awaitable[None]]) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await close()


async def _cancel_and_wait(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _sqlite_path(location: str) -> Path:
    return sqlite_file(
        location,
        store="memory store",
        fix="set [memory] store in the fleet file to",
        default_name="memory.sqlite",
        error=ToolSourceError,
    )


async def _open_sqlite(path: Path) -> _OpenStore:
    import aiosqlite
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    try:
        # Wait for another process's write instead of failing at once.
        connection = await aiosqlite.connect(path, isolation_level=None, timeout=30.0)
    except (sqlite3.Error, OSError) as exc:
        raise ToolSourceError(
            f"cannot open memory store {path} ({exc}); set [memory] store in the fleet file "
            "to a writable SQLite file"
        ) from None
    try:
        store = AsyncSqliteStore(connection)
        await store.setup()
    except (sqlite3.Error, OSError) as exc:
        await connection.close()
        raise ToolSourceError(
            f"memory store {path} is not a usable SQLite file ({exc}); move it away or set "
            "[memory] store in the fleet file to another file"
        ) from None
    return _OpenStore(store=store, close=connection.close)


# Postgres advisory lock key around the store's table setup ("kitty_me").
_SETUP_LOCK = 0x6B697474795F6D65


async def _open_postgres(url: str) -> _OpenStore:
    from langgraph.store.postgres.aio import AsyncPostgresStore
    from psycopg import AsyncConnection, Error
    from psycopg.rows import dict_row

    where = hide_password(url)
    try:
        connection = await AsyncConnection.connect(
            url, autocommit=True, prepare_threshold=0, row_factory=dict_row
        )
    except Error as exc:
        reason = str(exc).replace(url, where).strip().splitlines()[0]
        raise ToolSourceError(
            f"cannot connect to memory store {where} ({reason}); check [memory] store in "
            "the fleet file and that Postgres runs there"
        ) from None
    try:
        store = AsyncPostgresStore(conn=connection)
        # Processes opening a new database together would race through the migrations.
        async with postgres_setup_lock(connection, _SETUP_LOCK):
            await store.setup()
    except Error as exc:
        await connection.close()
        raise ToolSourceError(
            f"cannot set up memory store {where} ({exc}); the user needs rights to create "
            "tables there"
        ) from None
    return _OpenStore(store=store, close=connection.close)


class StoreArgs(BaseModel):
    """Arguments of ``memory.store``."""

    text: str = Field(min_length=1, description="The fact or note to remember")
    key: str | None = Field(
        default=None,
        max_length=200,
        description="A short name for it; storing under the same key replaces the note",
    )


class RecallArgs(BaseModel):
    """Arguments of ``memory.recall``."""

    query: str = Field(min_length=1, description="Words to look for in stored notes")
    limit: int = Field(default=5, ge=1, le=50, description="Most notes returned")


def _label(value: str) -> str:
    """A namespace label: LangGraph refuses dots and empty labels."""
    return value.replace("%", "%25").replace(".", "%2E") or "_"


def memory_namespace(agent: str, user_id: str) -> tuple[str, str, str]:
    """Where ``agent``'s memories for ``user_id`` are kept: ``("memory", user, agent)``."""
    return ("memory", _label(user_id), _label(agent))


def memory_tools(
    store: BaseStore, agent: str, user_id: str, *, settings: MemorySettings | None = None
) -> list[BaseTool]:
    """``memory.store`` and ``memory.recall`` for one agent and user.

    Args:
        store: The open store (:func:`memory_store`).
        agent: The agent whose memories these are.
        user_id: The user they belong to.
        settings: The fleet file's ``[memory]`` table, for its caps (``max_note_chars``,
            ``max_notes``); default: the defaults.

    Returns:
        ``[memory.store, memory.recall]``; a store that fails mid-call, or a note over
        ``max_note_chars``, raises :class:`~kitty.errors.ToolError` (what the model is
        told).
    """
    namespace = memory_namespace(agent, user_id)
    caps = settings or MemorySettings()

    async def store_note(text: str, key: str | None = None) -> str:
        if len(text) > caps.max_note_chars:
            raise ToolError(
                f"memory.store refused: the note is {len(text):,} characters and notes are "
                f"at most {caps.max_note_chars:,} ([memory] max_note_chars in the fleet "
                "file); store a shorter note: the fact itself, not the whole text"
            )
        # The same text stored twice without a key is one memory, not two.
        name = key.strip() if key and key.strip() else _text_key(text)
        # Microseconds: SQLite's updated_at has whole seconds, and eviction needs an order.
        value = {"text": text, "stored_at": datetime.now(UTC).isoformat()}
        try:
            await store.aput(namespace, name, value, index=False)
            forgotten = await _forget_oldest(store, namespace, caps.max_notes, keep=name)
        except Exception as exc:
            raise ToolError(f"memory.store failed: {type(exc).__name__}: {exc}") from None
        if not forgotten:
            return f"stored under key {name!r}"
        shown = ", ".join(repr(key) for key in forgotten[:5])
        more = f" and {len(forgotten) - 5} more" if len(forgotten) > 5 else ""
        oldest = "the oldest note" if len(forgotten) == 1 else f"the {len(forgotten)} oldest notes"
        return (
            f"stored under key {name!r}; forgot {oldest} ({shown}{more}): at most "
            f"{caps.max_notes:,} notes are kept ([memory] max_notes)"
        )

    async def recall(query: str, limit: int = 5) -> str:
        try:
            items = await _all_items(store, namespace)
        except Exception as exc:
            raise ToolError(f"memory.recall failed: {type(exc).__name__}: {exc}") from None
        ranked = rank_by_keywords(query, items)[:limit]
        if not ranked:
            if not items:
                return f"no stored note matches {query!r} (nothing stored yet)"
            # A small model's query rarely repeats the note's words: show the latest.
            latest = sorted(items, key=lambda i: i.updated_at, reverse=True)[:limit]
            lines = [f"- [{item.key}] {item.value.get('text', '')}" for item in latest]
            return "\n".join([f"no stored note matches {query!r}; the most recent notes:", *lines])
        lines = [
            f"{n}. [{item.key}] {item.value.get('text', '')}" for n, item in enumerate(ranked, 1)
        ]
        return "\n".join(["Notes sharing words with the query, best first:", *lines])

    return [
        StructuredTool.from_function(
            coroutine=store_note,
            name=MEMORY_STORE,
            args_schema=StoreArgs,
            description="Remember a note for later runs (kept across runs and processes).",
        ),
        StructuredTool.from_function(
            coroutine=recall,
            name=MEMORY_RECALL,
            args_schema=RecallArgs,
            description="Recall stored notes that share words with the query, best first.",
        ),
    ]


async def _forget_oldest(
    store: BaseStore, namespace: tuple[str, ...], max_notes: int, *, keep: str
) -> list[str]:
    """Delete the oldest notes of ``namespace`` beyond ``max_notes``; their keys, oldest first.

    ``keep`` (the note just stored) is never deleted. Concurrent stores may each delete the
    same oldest notes: deleting twice is harmless.
    """
    items = await _all_items(store, namespace)
    if len(items) <= max_notes:
        return []
    oldest = sorted((item for item in items if item.key != keep), key=_age)
    oldest = oldest[: len(items) - max_notes]
    for item in oldest:
        await store.adelete(namespace, item.key)
    return [item.key for item in oldest]


def _age(item: Item) -> tuple[datetime, datetime]:
    """When a note was last stored: the store's time, then ours (finer than SQLite's seconds)."""
    try:
        ours = datetime.fromisoformat(str(item.value.get("stored_at", "")))
    except ValueError:
        ours = item.updated_at
    if ours.tzinfo is None:
        ours = ours.replace(tzinfo=UTC)
    theirs = item.updated_at if item.updated_at.tzinfo else item.updated_at.replace(tzinfo=UTC)
    return theirs, ours


def _text_key(text: str) -> str:
    return hashlib.sha256(text.strip().encode()).hexdigest()[:16]


async def _all_items(store: BaseStore, namespace: tuple[str, ...]) -> list[Item]:
    """Every item in exactly ``namespace`` (search matches a prefix; others are dropped)."""
    found: list[Item] = []
    offset = 0
    while offset < _RECALL_SCAN:
        page = await store.asearch(namespace, limit=_PAGE, offset=offset)
        found.extend(item for item in page if tuple(item.namespace) == namespace)
        if len(page) < _PAGE:
            break
        offset += _PAGE
    return found


def _words(text: str) -> set[str]:
    return {word.lower() for word in _WORD.findall(text)}


def rank_by_keywords(query: str, items: list[Item]) -> list[Item]:
    """Items sharing at least one query word, most shared words first, then newest.

    Common words (``the``, ``what``...) count only when the query has nothing else.
    """
    wanted = _words(query)
    wanted = (wanted - _STOPWORDS) or wanted
    scored: list[tuple[int, datetime, Item]] = []
    for item in items:
        shared = len(wanted & _words(str(item.value.get("text", ""))))
        if shared:
            scored.append((shared, item.updated_at, item))
    scored.sort(key=lambda entry: (entry[0], entry[1]), reverse=True)
    return [item for _, _, item in scored]
