"""What every slot store counts per endpoint: the stats snapshot, counters and lane numbers.

:class:`LimiterStats` is what a limiter reports (``kitty-orch fleet status``, the service's
``/api/fleet``, benchmarks); :class:`SlotCounters` and :class:`SlotNumbers` are the
bookkeeping behind it that the local and the Redis store share.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from endpoints.slots._store_urls import LOCAL_STORE


@dataclass(frozen=True)
class LimiterStats:
    """A snapshot of a limiter's state.

    Attributes:
        name: Endpoint name.
        capacity: Slots in total.
        in_use: Slots held now (by this process).
        queued: Callers waiting now (in this process).
        peak_in_use: Most slots ever held at once.
        acquired: Slots handed out so far.
        waited: How many acquisitions had to queue.
        total_wait_s: Seconds spent queued, summed over acquisitions.
        max_wait_s: Longest single queue wait.
        store: The slot store: ``local`` or its ``redis://`` URL (password hidden).
        leases: Leases held by every process sharing the store, as last seen
            (``None`` for the local store).
        store_queued: Waiters of every process sharing the store, as last seen.
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
    store: str = LOCAL_STORE
    leases: int | None = None
    store_queued: int | None = None


@dataclass
class SlotCounters:
    """Counters every store keeps per endpoint and process (guarded by the owner's lock)."""

    peak: int = 0
    acquired: int = 0
    waited: int = 0
    total_wait: float = 0.0
    max_wait: float = 0.0

    def took(self, in_use: int) -> None:
        """One slot handed out; ``in_use`` slots are held now."""
        self.acquired += 1
        self.peak = max(self.peak, in_use)

    def queued_for(self, seconds: float) -> None:
        """One acquisition waited ``seconds``."""
        self.waited += 1
        self.total_wait += seconds
        self.max_wait = max(self.max_wait, seconds)

    def snapshot(
        self,
        *,
        name: str,
        capacity: int,
        in_use: int,
        queued: int,
        store: str = LOCAL_STORE,
        leases: int | None = None,
        store_queued: int | None = None,
    ) -> LimiterStats:
        """These counters with the store's live counts, as one :class:`LimiterStats`.

        Args:
            name: Endpoint name.
            capacity: Slots in total.
            in_use: Slots held now (by this process).
            queued: Callers waiting now (in this process).
            store: The slot store: ``local`` or its ``redis://`` URL (password hidden).
            leases: Leases held by every process sharing the store, as last seen.
            store_queued: Waiters of every process sharing the store, as last seen.
        """
        return LimiterStats(
            name=name,
            capacity=capacity,
            in_use=in_use,
            queued=queued,
            peak_in_use=self.peak,
            acquired=self.acquired,
            waited=self.waited,
            total_wait_s=self.total_wait,
            max_wait_s=self.max_wait,
            store=store,
            leases=leases,
            store_queued=store_queued,
        )


class SlotNumbers:
    """Lowest-free slot numbers for timelines (not guarded: the owner holds its lock)."""

    def __init__(self) -> None:
        self._free: list[int] = []
        self._next = 0
        self.held: set[int] = set()

    def take(self) -> int:
        """The lowest number not held."""
        if self._free:
            number = heapq.heappop(self._free)
        else:
            number, self._next = self._next, self._next + 1
        self.held.add(number)
        return number

    def give_back(self, number: int) -> bool:
        """Free ``number``; False when it was not held."""
        if number not in self.held:
            return False
        self.held.discard(number)
        heapq.heappush(self._free, number)
        return True
