"""The board of background runs: each run's request, state, progress and live events.

Where it lives follows the fleet's slot store, like admission: in this process
(``local``), or in the same Redis, so every worker and every host of the service sees
every run. A run's record is a JSON string under ``kitty:runs:{thread}``; the threads
not yet ended are the set ``kitty:runs:open``; live events go out on the pub/sub channel
``kitty:runs:events:{thread}`` (a stream reader gets them "from now on").

Only the worker that executes a run writes its record (it holds the thread's admission
lease, see :mod:`kitty.service._background`), so writes need no compare-and-set; the one
contended write, a submission, is a ``SET NX``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Literal, Protocol

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from endpoints import (
    LOCAL_STORE,
    REDIS_COMMAND_TIMEOUT_S,
    REDIS_CONNECT_TIMEOUT_S,
    CoordinationConfig,
)
from graph import TaskResult
from kitty.service._schemas import QueryRequest, QueryResponse

logger = logging.getLogger("kitty.service")

PREFIX = "kitty:runs"

RunState = Literal["queued", "running", "interrupted", "done", "failed"]
ENDED: frozenset[str] = frozenset({"interrupted", "done", "failed"})

# A finished or failed run's record is kept this long for GET /api/threads/{id}.
RECORD_KEEP_S = 7 * 24 * 3600


class ThreadState(BaseModel):
    """What ``GET /api/threads/{id}`` answers: a background run's state and progress."""

    thread_id: str = Field(description="The run's checkpoint thread.")
    state: RunState = Field(
        description=(
            "queued (waiting for a worker and a place under the run limit), running, "
            "interrupted (stopped at a plan waiting for approval), done or failed."
        )
    )
    submitted_at: float = Field(description="Epoch seconds when it was submitted.")
    started_at: float | None = Field(default=None, description="When a worker first ran it.")
    finished_at: float | None = Field(default=None, description="When it ended.")
    attempts: int = Field(
        default=0,
        description="Workers that started executing it (more than 1: it was taken over).",
    )
    worker: str | None = Field(default=None, description="The worker executing it last.")
    phase: str | None = Field(
        default=None, description="planning, tasks, synthesizing or summarizing."
    )
    tasks_total: int = Field(default=0, description="Tasks in the plan (0 until planned).")
    tasks_done: int = Field(default=0, description="Tasks that ended (any status).")
    tasks: list[TaskResult] = Field(
        default_factory=list, description="The tasks that ended so far, in the order they did."
    )
    error: str | None = Field(default=None, description="Why it failed.")
    result: QueryResponse | None = Field(
        default=None, description="The run's result once done (same body as the query route)."
    )


class StoredRun(BaseModel):
    """A background run on the board: the request as submitted and its state."""

    request: QueryRequest
    state: ThreadState


class RunBoard(Protocol):
    """Where background runs are recorded and their events broadcast."""

    description: str

    async def submit(self, run: StoredRun) -> bool:
        """Record a new run; ``False`` when its thread already has a run not ended."""

    async def load(self, thread_id: str) -> StoredRun | None:
        """The run of ``thread_id``, or ``None``."""

    async def save(self, run: StoredRun) -> None:
        """Write the run's record (and take it off the open set once it ended)."""

    async def open_threads(self) -> list[str]:
        """Threads whose runs have not ended (queued or running), oldest first."""

    async def publish(self, thread_id: str, event: str, data: str) -> None:
        """Send one live event of the run to its current stream readers."""

    def events(self, thread_id: str) -> contextlib.AbstractAsyncContextManager[_Events]:
        """Subscribe to the run's live events (from now on)."""

    async def close(self) -> None:
        """Let go of connections."""


class _Events(Protocol):
    async def next(self, timeout: float) -> tuple[str, str] | None:
        """The next ``(event, data)``, or ``None`` after ``timeout`` seconds of quiet."""


class LocalRunBoard:
    """The board in this process (one worker: nothing to share)."""

    description = LOCAL_STORE

    def __init__(self) -> None:
        self._runs: dict[str, str] = {}
        self._listeners: dict[str, list[asyncio.Queue[tuple[str, str]]]] = {}

    async def submit(self, run: StoredRun) -> bool:
        old = self._runs.get(run.state.thread_id)
        if old is not None and StoredRun.model_validate_json(old).state.state not in ENDED:
            return False
        self._runs[run.state.thread_id] = run.model_dump_json()
        return True

    async def load(self, thread_id: str) -> StoredRun | None:
        raw = self._runs.get(thread_id)
        return None if raw is None else StoredRun.model_validate_json(raw)

    async def save(self, run: StoredRun) -> None:
        self._runs[run.state.thread_id] = run.model_dump_json()

    async def open_threads(self) -> list[str]:
        runs = [StoredRun.model_validate_json(raw).state for raw in self._runs.values()]
        return [
            s.thread_id for s in sorted(runs, key=lambda s: s.submitted_at) if s.state not in ENDED
        ]

    async def publish(self, thread_id: str, event: str, data: str) -> None:
        for queue in self._listeners.get(thread_id, []):
            queue.put_nowait((event, data))

    @contextlib.asynccontextmanager
    async def events(self, thread_id: str) -> AsyncIterator[_Events]:
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._listeners.setdefault(thread_id, []).append(queue)
        try:
            yield _QueueEvents(queue)
        finally:
            listeners = self._listeners.get(thread_id, [])
            listeners.remove(queue)
            if not listeners:
                self._listeners.pop(thread_id, None)

    async def close(self) -> None:
        self._listeners.clear()


class _QueueEvents:
    def __init__(self, queue: asyncio.Queue[tuple[str, str]]) -> None:
        self._queue = queue

    async def next(self, timeout: float) -> tuple[str, str] | None:
        try:
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return None


class RedisRunBoard:
    """The board in Redis: every worker and host sharing the slot store sees every run."""

    def __init__(self, url: str) -> None:
        self.description = url
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            socket_timeout=REDIS_COMMAND_TIMEOUT_S,
        )

    @staticmethod
    def _key(thread_id: str) -> str:
        return f"{PREFIX}:run:{thread_id}"

    async def submit(self, run: StoredRun) -> bool:
        thread = run.state.thread_id
        if not await self._client.set(self._key(thread), run.model_dump_json(), nx=True):
            old = await self.load(thread)
            if old is not None and old.state.state not in ENDED:
                return False
            await self._client.set(self._key(thread), run.model_dump_json())
        await self._client.zadd(f"{PREFIX}:open", {thread: run.state.submitted_at})
        return True

    async def load(self, thread_id: str) -> StoredRun | None:
        raw = await self._client.get(self._key(thread_id))
        return None if raw is None else StoredRun.model_validate_json(raw)

    async def save(self, run: StoredRun) -> None:
        thread = run.state.thread_id
        if run.state.state in ENDED:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._key(thread), run.model_dump_json(), ex=RECORD_KEEP_S)
                pipe.zrem(f"{PREFIX}:open", thread)
                await pipe.execute()
        else:
            await self._client.set(self._key(thread), run.model_dump_json())

    async def open_threads(self) -> list[str]:
        return [str(t) for t in await self._client.zrange(f"{PREFIX}:open", 0, -1)]

    async def publish(self, thread_id: str, event: str, data: str) -> None:
        await self._client.publish(f"{PREFIX}:events:{thread_id}", f"{event}\n{data}")

    @contextlib.asynccontextmanager
    async def events(self, thread_id: str) -> AsyncIterator[_Events]:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(f"{PREFIX}:events:{thread_id}")
        try:
            yield _PubSubEvents(pubsub)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe()
            await pubsub.aclose()

    async def close(self) -> None:
        await self._client.aclose()


class _PubSubEvents:
    def __init__(self, pubsub: aioredis.client.PubSub) -> None:
        self._pubsub = pubsub

    async def next(self, timeout: float) -> tuple[str, str] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = await self._pubsub.get_message(timeout=min(left, 1.0))
            if message is not None and message.get("type") == "message":
                event, _, data = str(message["data"]).partition("\n")
                return event, data
        return None


def run_board_for(coordination: CoordinationConfig) -> RunBoard:
    """The board of the fleet's slot store: in this process, or in its Redis."""
    url = coordination.store_url()
    if url == LOCAL_STORE:
        return LocalRunBoard()
    return RedisRunBoard(url)
