"""Per-endpoint admission control: a fair FIFO slot limiter.

llama.cpp queues requests beyond its slots without bound and Ollama rejects them once
its queue is full, so the orchestrator decides who may talk to a server. Each endpoint
gets one :class:`SlotLimiter` per process. It is safe across event loops and threads:
waiters are futures of their own loop and a release hands the slot to the oldest waiter
through ``call_soon_threadsafe``, so a notebook, repeated ``asyncio.run`` calls and the
thread used by sync entry points all share one cap.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from kitty.errors import SlotTimeoutError


@dataclass(frozen=True)
class LimiterStats:
    """A snapshot of a limiter's state.

    Attributes:
        name: Endpoint name.
        capacity: Slots in total.
        in_use: Slots held now.
        queued: Callers waiting now.
        peak_in_use: Most slots ever held at once.
        acquired: Slots handed out so far.
        waited: How many acquisitions had to queue.
        total_wait_s: Seconds spent queued, summed over acquisitions.
        max_wait_s: Longest single queue wait.
    """

    name: str
    capacity: int
    in_use: int
    queued: int
    peak_in_use: int
    acquired: int
    waited: int
    total_wait_s: float
    max_wait_s: float


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[int]
    slot: int | None = field(default=None)


def _grant(waiter: _Waiter) -> None:
    if not waiter.future.done():
        waiter.future.set_result(waiter.slot if waiter.slot is not None else -1)


def _notify(limiter: SlotLimiter, waiter: _Waiter) -> None:
    try:
        waiter.loop.call_soon_threadsafe(_grant, waiter)
    except RuntimeError:
        # The waiter's event loop is closed: nobody will take this slot, pass it on.
        if waiter.slot is not None:
            limiter.release(waiter.slot)


class SlotLimiter:
    """Fair FIFO semaphore that hands out numbered slots.

    Slot numbers (0..capacity-1, lowest free first) give timelines one lane per slot;
    they are ours, not the server's slot ids.

    Args:
        name: Endpoint name, used in errors and stats.
        capacity: Number of slots.
    """

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"limiter {name!r}: capacity must be >= 1, got {capacity}")
        self.name = name
        self._lock = threading.Lock()
        self._capacity = capacity
        self._free: list[int] = list(range(capacity))
        self._in_use: set[int] = set()
        self._waiters: deque[_Waiter] = deque()
        self._peak = 0
        self._acquired = 0
        self._waited = 0
        self._total_wait = 0.0
        self._max_wait = 0.0

    @property
    def capacity(self) -> int:
        """Number of slots."""
        return self._capacity

    def resize(self, capacity: int) -> None:
        """Change the number of slots (e.g. to the server's discovered ``total_slots``).

        Slots above the new capacity that are in use are retired when released.
        """
        if capacity < 1:
            raise ValueError(f"limiter {self.name!r}: capacity must be >= 1, got {capacity}")
        grants: list[_Waiter] = []
        with self._lock:
            self._capacity = capacity
            self._free = [s for s in self._free if s < capacity]
            taken = self._in_use | set(self._free)
            for slot in range(capacity):
                if slot not in taken:
                    self._free.append(slot)
            heapq.heapify(self._free)
            while self._free and self._waiters:
                grants.append(self._hand_over(heapq.heappop(self._free)))
        for waiter in grants:
            _notify(self, waiter)

    def stats(self) -> LimiterStats:
        """Return a consistent snapshot of the limiter's counters."""
        with self._lock:
            return LimiterStats(
                name=self.name,
                capacity=self._capacity,
                in_use=len(self._in_use),
                queued=len(self._waiters),
                peak_in_use=self._peak,
                acquired=self._acquired,
                waited=self._waited,
                total_wait_s=self._total_wait,
                max_wait_s=self._max_wait,
            )

    @property
    def load(self) -> float:
        """(held + queued) / capacity: how busy this endpoint is, for routing."""
        with self._lock:
            return (len(self._in_use) + len(self._waiters)) / self._capacity

    def _take(self, slot: int) -> int:
        self._in_use.add(slot)
        self._acquired += 1
        self._peak = max(self._peak, len(self._in_use))
        return slot

    def _hand_over(self, slot: int) -> _Waiter:
        waiter = self._waiters.popleft()
        waiter.slot = self._take(slot)
        return waiter

    async def acquire(self, timeout: float | None = None) -> int:
        """Wait for a free slot, first come first served.

        Args:
            timeout: Seconds to wait at most; ``None`` waits forever.

        Returns:
            The slot number now held; pass it to :meth:`release`.

        Raises:
            SlotTimeoutError: No slot was free within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free and not self._waiters:
                return self._take(heapq.heappop(self._free))
            waiter = _Waiter(loop, loop.create_future())
            self._waiters.append(waiter)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                slot = await waiter.future
        except BaseException as exc:
            with self._lock:
                granted = waiter not in self._waiters
                if not granted:
                    self._waiters.remove(waiter)
            if granted and waiter.slot is not None:
                self.release(waiter.slot)
            if isinstance(exc, TimeoutError):
                raise SlotTimeoutError(
                    f"no free slot on endpoint {self.name!r} within {timeout:g}s "
                    f"({self._capacity} slots busy); raise the acquire timeout or add slots"
                ) from None
            raise
        waited = time.perf_counter() - started
        with self._lock:
            self._waited += 1
            self._total_wait += waited
            self._max_wait = max(self._max_wait, waited)
        return slot

    def release(self, slot: int) -> None:
        """Give a slot back; the oldest waiter (on any event loop) gets it."""
        waiter = None
        with self._lock:
            if slot not in self._in_use:
                return
            self._in_use.discard(slot)
            if slot >= self._capacity:
                return
            if self._waiters:
                waiter = self._hand_over(slot)
            else:
                heapq.heappush(self._free, slot)
        if waiter is not None:
            _notify(self, waiter)

    @asynccontextmanager
    async def slot(self, timeout: float | None = None) -> AsyncIterator[int]:
        """Hold a slot for the duration of the block; cancellation releases it."""
        number = await self.acquire(timeout)
        try:
            yield number
        finally:
            self.release(number)
