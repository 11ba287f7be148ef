"""Per-endpoint admission control: a fair slot limiter in front of a slot store.

llama.cpp queues requests beyond its slots without bound and Ollama rejects them once
its queue is full, so the orchestrator decides who may talk to a server. Each endpoint
gets one :class:`SlotLimiter` per process. Its bookkeeping sits in a slot store
(:mod:`endpoints.slot_store`): ``local`` keeps caps within this process (the default),
``redis`` (:mod:`endpoints.redis_slots`) across every process and host sharing the fleet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from endpoints.slot_store import LOCAL, EndpointSlots, LimiterStats, SlotStore
from kitty.errors import SlotTimeoutError


class SlotLimiter:
    """Numbered slots of one endpoint, granted by priority, first come first served within one.

    Slot numbers (0..capacity-1, lowest free first) give timelines one lane per slot;
    they are ours, not the server's slot ids.

    Args:
        name: Endpoint name, used in errors and stats.
        capacity: Number of slots.
        store: Where the slots are counted (default: this process only).
        key: The server's normalised base URL, naming it in a shared store
            (default: ``name``).
    """

    def __init__(
        self, name: str, capacity: int, *, store: SlotStore | None = None, key: str | None = None
    ) -> None:
        self.name = name
        self.store = store or LOCAL
        self._slots: EndpointSlots = self.store.slots(name, key or name, capacity)

    @property
    def capacity(self) -> int:
        """Number of slots."""
        return self._slots.capacity

    def resize(self, capacity: int) -> None:
        """Change the number of slots (e.g. to the server's discovered ``total_slots``).

        Slots above the new capacity that are in use are retired when released.
        """
        self._slots.resize(capacity)

    def stats(self) -> LimiterStats:
        """Return a consistent snapshot of the limiter's counters."""
        return self._slots.stats()

    @property
    def load(self) -> float:
        """(held + queued) / capacity: how busy this endpoint is, for routing."""
        return self._slots.load

    async def acquire(self, timeout: float | None = None, *, priority: float = 0.0) -> int:
        """Wait for a free slot: higher ``priority`` first, first come first served within one.

        Args:
            timeout: Seconds to wait at most; ``None`` waits forever.
            priority: Waiters with a higher priority are granted first (e.g. a task
                coming back from its tools, or one on the critical path).

        Returns:
            The slot number now held; pass it to :meth:`release`.

        Raises:
            SlotTimeoutError: No slot was free within ``timeout``.
        """
        return await self._slots.acquire(timeout, priority=priority)

    def release(self, slot: int) -> None:
        """Give a slot back; the next waiter (on any event loop, any process) gets it."""
        self._slots.release(slot)

    @asynccontextmanager
    async def slot(
        self, timeout: float | None = None, *, priority: float = 0.0
    ) -> AsyncIterator[int]:
        """Hold a slot for the duration of the block; cancellation releases it."""
        number = await self.acquire(timeout, priority=priority)
        try:
            yield number
        finally:
            self.release(number)


__all__ = ["LimiterStats", "SlotLimiter", "SlotTimeoutError"]
