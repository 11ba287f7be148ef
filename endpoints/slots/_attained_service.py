"""Attained service: the slot-seconds each run has held so far, for fair grants across runs.

When several runs (goals) wait on one endpoint, the run that has used the fewest
slot-seconds goes first (least attained service, as in Autellix), so a small goal does
not wait behind a big one. The limiter turns a run's attained service into a penalty on
the priority its waiter queues with (:func:`las_penalty`); within a run the critical
path still orders the tasks, aging still bounds every wait, and ties stay first come
first served.

Units: a task's priority is the tokens on its remaining critical path, so attained
service is converted to tokens at :data:`LAS_TOKENS_PER_SLOT_S`. The penalty is capped at
:data:`LAS_MAX_TOKENS`: a waiter can then be passed for at most
``(critical-path gap + LAS_MAX_TOKENS) / AGING_PER_S`` seconds, (20 000 + 5 000) / 50 =
500 s for a 20-task chain of 1024-token tasks, inside the default 600 s slot timeout.

The ledger is per slot store: in-process (:class:`LocalLedger`) for the ``local`` store,
in Redis (:class:`RedisLedger`, one counter per run with an expiry, incremented
atomically on release) when the slot store is shared, so every process sees the same
figure. The service a run's waiter pays for is read when it queues.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

logger = logging.getLogger("kitty.endpoints")

LAS_TOKENS_PER_SLOT_S = 1000.0
"""Priority (tokens of critical path) one slot-second of attained service costs a run.

About what one slot decodes in a few seconds on the embedded fleet: after a big goal's
first round of tasks, the tasks of a goal that has not run yet go ahead of its chain.
"""

LAS_MAX_TOKENS = 5000.0
"""Most priority attained service can take off a waiter (keeps every wait bounded)."""

ATTAINED_TTL_S = 3600.0
"""A run's attained service is forgotten this long after it last released a slot."""

REDIS_PREFIX = "kitty:las"


def las_penalty(slot_seconds: float) -> float:
    """The priority a run's waiters lose for ``slot_seconds`` of attained service."""
    return min(max(slot_seconds, 0.0) * LAS_TOKENS_PER_SLOT_S, LAS_MAX_TOKENS)


class ServiceLedger(Protocol):
    """Slot-seconds per run, as one slot store keeps them."""

    async def attained(self, run: str) -> float:
        """Slot-seconds ``run`` has held so far (0 for a run never seen)."""
        ...

    def add(self, run: str, seconds: float) -> None:
        """``run`` held a slot for ``seconds`` more (called on release, never blocks)."""
        ...


class LocalLedger:
    """Attained service of the runs of this process (thread-safe).

    Args:
        ttl_s: Seconds after its last release a run is forgotten.
        clock: Monotonic seconds (a test passes its own).
    """

    def __init__(
        self, ttl_s: float = ATTAINED_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[float, float]] = {}  # run -> (slot-seconds, last add)

    def seconds(self, run: str) -> float:
        """Slot-seconds ``run`` has held so far."""
        with self._lock:
            seconds, last = self._runs.get(run, (0.0, 0.0))
            if seconds and self._clock() - last > self._ttl_s:
                del self._runs[run]
                return 0.0
            return seconds

    async def attained(self, run: str) -> float:
        """Slot-seconds ``run`` has held so far."""
        return self.seconds(run)

    def add(self, run: str, seconds: float) -> None:
        """Count ``seconds`` more for ``run``; forget runs idle past the TTL."""
        now = self._clock()
        with self._lock:
            held, _ = self._runs.get(run, (0.0, now))
            self._runs[run] = (held + max(seconds, 0.0), now)
            stale = [r for r, (_, last) in self._runs.items() if now - last > self._ttl_s]
            for old in stale:
                del self._runs[old]


class LedgerHost(Protocol):
    """The side of a Redis slot store the ledger needs (its loop and client)."""

    down_reason: str | None

    @property
    def redis(self) -> Any:
        """The store's ``redis.asyncio`` client (used on the store's loop only)."""
        ...

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run a coroutine on the store's loop."""
        ...


class RedisLedger:
    """Attained service in Redis: ``kitty:las:<run>`` holds the run's slot-seconds.

    Every process sharing the slot store adds to the same counter (``INCRBYFLOAT`` and
    ``PEXPIRE`` in one transaction), so a run's service counts wherever its tasks ran.
    While Redis is unreachable a run reads as 0 (priorities alone order the waiters)
    and additions are dropped.

    Args:
        host: The slot store whose loop and client to use.
        ttl_s: Seconds after its last release a run's counter expires.
    """

    def __init__(self, host: LedgerHost, ttl_s: float = ATTAINED_TTL_S) -> None:
        self._host = host
        self._ttl_ms = max(int(ttl_s * 1000), 1)

    @staticmethod
    def key(run: str) -> str:
        """The Redis key of one run's counter."""
        return f"{REDIS_PREFIX}:{run}"

    async def attained(self, run: str) -> float:
        """Slot-seconds ``run`` has held so far, in every process (0 if unknown)."""
        if self._host.down_reason is not None:
            return 0.0
        try:
            return float(await asyncio.wrap_future(self._host.submit(self._read(run))))
        except Exception as exc:  # a fairness figure must never fail an acquisition
            logger.debug("attained service of run %s unavailable: %s", run, exc)
            return 0.0

    def add(self, run: str, seconds: float) -> None:
        """Add ``seconds`` to ``run``'s counter (fire and forget, on the store's loop)."""
        if seconds > 0:
            self._host.submit(self._add(run, seconds))

    async def _read(self, run: str) -> float:
        value = await self._host.redis.get(self.key(run))
        return float(value) if value else 0.0

    async def _add(self, run: str, seconds: float) -> None:
        try:
            async with self._host.redis.pipeline(transaction=True) as pipe:
                pipe.incrbyfloat(self.key(run), seconds)
                pipe.pexpire(self.key(run), self._ttl_ms)
                await pipe.execute()
        except Exception as exc:  # unreachable: this service goes uncounted
            logger.debug("attained service of run %s not recorded: %s", run, exc)
