"""Per-endpoint admission control: a fair slot limiter in front of a slot store.

llama.cpp queues requests beyond its slots without bound and Ollama rejects them once
its queue is full, so the orchestrator decides who may talk to a server. Each endpoint
gets one :class:`SlotLimiter` per process. Its bookkeeping sits in a slot store
(:mod:`endpoints.slots._store`): ``local`` keeps caps within this process (the default),
``redis`` (:mod:`endpoints.slots._redis_store`) across every process and host sharing the fleet.

Grant order (``order="priority"``, the default): the waiter's priority (a task's remaining
critical path in tokens) minus its run's attained service
(:mod:`endpoints.slots._attained_service`),
aged while it waits, first come first served on ties. ``order="fifo"`` queues every waiter
with the same priority and no attained-service penalty: strictly first come first served
(for benchmarks, and users who want arrival order).
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from endpoints.slots._attained_service import las_penalty
from endpoints.slots._store import LOCAL, EndpointSlots, LimiterStats, LocalSlots, SlotStore
from kitty.errors import SlotTimeoutError

SlotOrder = Literal["priority", "fifo"]


class SlotLimiter:
    """Numbered slots of one endpoint, granted by priority, first come first served within one.

    Slot numbers (0..capacity-1) give timelines one lane per slot. With the local store
    they are this process's alone and, when the capacity equals the server's
    ``total_slots``, name the server's own slots (llama.cpp ``id_slot``, see
    :mod:`endpoints.fleet._affinity`); with a shared store they are lanes only.

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
        self._lock = threading.Lock()
        self._holders: dict[int, tuple[str, float]] = {}  # slot -> (run, granted at)

    @property
    def numbers_are_server_slots(self) -> bool:
        """True when slot numbers are 0..capacity-1 held by this process alone.

        Only then can a number name one of the server's own slots (llama.cpp ``id_slot``):
        with a shared store every process numbers its own leases from 0.
        """
        return isinstance(self._slots, LocalSlots)

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

    async def acquire(
        self,
        timeout: float | None = None,
        *,
        priority: float = 0.0,
        run: str | None = None,
        prefer: str | None = None,
        order: SlotOrder = "priority",
    ) -> int:
        """Wait for a free slot: higher ``priority`` first, first come first served within one.

        Args:
            timeout: Seconds to wait at most; ``None`` waits forever.
            priority: Waiters with a higher priority are granted first (e.g. a task
                coming back from its tools, or one on the critical path).
            run: The run asking (its id): its attained service lowers its priority
                (least attained service across runs) and the slot-seconds it holds now
                are added to it on release.
            prefer: A prompt-prefix key: a free slot that last served it is preferred
                (in-process numbering only; ignored by a shared store).
            order: ``priority`` (the above) or ``fifo``: priority and attained service
                are ignored, waiters are granted strictly in arrival order.

        Returns:
            The slot number now held; pass it to :meth:`release`.

        Raises:
            SlotTimeoutError: No slot was free within ``timeout``.
        """
        fair = run if order == "priority" else None
        effective = priority if order == "priority" else 0.0
        if isinstance(self._slots, LocalSlots):  # attained service counts at each grant
            number = await self._slots.acquire(timeout, priority=effective, prefer=prefer, run=fair)
        else:  # a shared store: the run's service when it queues
            if fair is not None:
                effective -= las_penalty(await self.store.ledger.attained(fair))
            number = await self._slots.acquire(timeout, priority=effective)
        if run is not None:
            with self._lock:
                self._holders[number] = (run, time.monotonic())
        return number

    def release(self, slot: int) -> None:
        """Give a slot back; the next waiter (on any event loop, any process) gets it.

        The seconds the slot was held count towards its run's attained service.
        """
        with self._lock:
            holder = self._holders.pop(slot, None)
        if holder is not None:  # first: this very grant already weighs the new service
            run, granted_at = holder
            self.store.ledger.add(run, time.monotonic() - granted_at)
        self._slots.release(slot)

    def was_lost(self, slot: int) -> bool:
        """True when the held ``slot``'s shared lease expired and went to another holder.

        The holder was cancelled with ``endpoints.slots._redis_endpoint.LEASE_LOST``; it should
        release the slot and ask again (its request left the server, so the cap holds).
        """
        return self._slots.was_lost(slot)

    @asynccontextmanager
    async def slot(
        self,
        timeout: float | None = None,
        *,
        priority: float = 0.0,
        run: str | None = None,
        order: SlotOrder = "priority",
    ) -> AsyncIterator[int]:
        """Hold a slot for the duration of the block; cancellation releases it."""
        number = await self.acquire(timeout, priority=priority, run=run, order=order)
        try:
            yield number
        finally:
            self.release(number)


__all__ = ["LimiterStats", "SlotLimiter", "SlotOrder", "SlotTimeoutError"]
