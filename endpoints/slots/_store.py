"""Where an endpoint's slots are counted: the slot store protocol and the in-process store.

A :class:`~endpoints.slots._limiter.SlotLimiter` is the face every caller uses; its bookkeeping
sits behind an :class:`EndpointSlots` made by a :class:`SlotStore`. The ``local`` store
(this module) is a fair in-process semaphore: caps hold across the runs, event loops and
threads of one process. The ``redis`` store (:mod:`endpoints.slots._redis_store`) holds leases
in Redis so caps hold across processes and hosts.

Waiters are granted in priority order (higher first), first come first served among equal
priorities. In-process, a waiter's priority grows by :data:`AGING_PER_S` per second it
waits, so a stream of higher-priority arrivals can pass a waiter only for a bounded time,
and a waiter of a run loses its run's attained service at each grant
(:mod:`endpoints.slots._attained_service`: least attained service across runs).

The cap is the number of slots in use: after a shrink, slots above the new capacity stay
in use until released, and nobody else is admitted until fewer than ``capacity`` are held
(then always with a number below it).

Slot numbers (lowest free first) give timelines one lane per slot. In-process they are
0..capacity-1 of this limiter alone, so on llama.cpp they can name the server's own slots:
a waiter may ask for a *preferred* slot (one that last served the same prompt prefix, see
:mod:`endpoints.fleet._affinity`) and then gets it if it is free, else the least recently
used free slot.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from endpoints.slots._attained_service import LocalLedger, ServiceLedger, las_penalty
from endpoints.slots._stats import LimiterStats, SlotCounters, SlotNumbers
from endpoints.slots._store_urls import (
    LOCAL_STORE,
    STORE_URL_FORM,
    check_store_url,
    endpoint_key,
    hide_password,
)
from kitty.errors import SlotTimeoutError


class EndpointSlots(Protocol):
    """One endpoint's slot bookkeeping, as a :class:`SlotStore` keeps it."""

    @property
    def capacity(self) -> int:
        """Number of slots."""
        ...

    def resize(self, capacity: int) -> None:
        """Change the number of slots."""
        ...

    def stats(self) -> LimiterStats:
        """A consistent snapshot of the counters."""
        ...

    @property
    def load(self) -> float:
        """(held + queued) / capacity."""
        ...

    async def acquire(self, timeout: float | None = None, *, priority: float = 0.0) -> int:
        """Wait for a slot; returns its number."""
        ...

    def release(self, slot: int) -> None:
        """Give a slot back."""
        ...

    def was_lost(self, slot: int) -> bool:
        """True when the held ``slot`` was taken from its holder (a shared lease expired)."""
        ...


class SlotStore(Protocol):
    """Makes the slot bookkeeping of each endpoint (one store per process and URL)."""

    @property
    def description(self) -> str:
        """``local`` or the store's URL with any password hidden."""
        ...

    def slots(self, name: str, key: str, capacity: int) -> EndpointSlots:
        """The bookkeeping of the server ``key`` (a normalised base URL), named ``name``."""
        ...

    async def check(self) -> str | None:
        """Check the store at start: a warning, or raise ``SettingsError`` when unusable."""
        ...

    def share_cooldown(self, key: str, seconds: float) -> None:
        """Tell every process sharing the store that server ``key`` is benched (0: clear)."""
        ...

    def watch_cooldowns(self, listener: Callable[[str, float], None]) -> None:
        """Call ``listener(key, seconds)`` when any process benches or clears a server."""
        ...

    async def counts(self, key: str) -> tuple[int, int] | None:
        """(leases, waiters) of every process for the server ``key``; ``None`` if unknown."""
        ...

    @property
    def ledger(self) -> ServiceLedger:
        """Slot-seconds per run, shared as widely as the store (least attained service)."""
        ...


_tickets = itertools.count()

AGING_PER_S = 50.0
"""Priority a waiter gains per second of waiting (priorities are tokens of work ahead).

A waiter is passed by a newcomer only while the newcomer's priority exceeds its own by
more than ``waited_s * AGING_PER_S``: a 20 000-token gap (a 20-task chain of 1024-token
tasks against a leaf) is closed after 400 s, inside the default 600 s slot timeout.
Aging is the same for everyone, so it is a fixed key per waiter: ``priority -
enqueued_at * AGING_PER_S``, and the wait order never needs re-sorting.
"""


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[int]
    order: tuple[float, int]
    prefer: str | None = None
    run: str | None = None
    slot: int | None = field(default=None)


def _grant(waiter: _Waiter) -> None:
    if not waiter.future.done():
        waiter.future.set_result(waiter.slot if waiter.slot is not None else -1)


class LocalSlots:
    """Fair in-process semaphore that hands out numbered slots, by priority then FIFO.

    Safe across event loops and threads: waiters are futures of their own loop and a
    release hands the slot to the next waiter through ``call_soon_threadsafe``, so a
    notebook, repeated ``asyncio.run`` calls and the thread used by sync entry points all
    share one cap.

    Args:
        name: Endpoint name, used in errors and stats.
        capacity: Number of slots.
        clock: Seconds for aging (monotonic; a test passes its own).
        ledger: Attained service per run: a waiter of a run loses
            :func:`~endpoints.slots._attained_service.las_penalty` of its run's service *at grant
            time*, so a run that keeps getting slots falls behind the others while it waits.
    """

    def __init__(
        self,
        name: str,
        capacity: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        ledger: LocalLedger | None = None,
    ) -> None:
        _check_capacity(name, capacity)
        self.name = name
        self._clock = clock
        self._ledger = ledger
        self._lock = threading.Lock()
        self._capacity = capacity
        # Invariant: _free is range(capacity) minus _in_use (a heap), so while fewer than
        # capacity slots are in use (the gate, _has_room) a number below capacity is free.
        self._free: list[int] = list(range(capacity))
        self._in_use: set[int] = set()
        self._waiters: list[_Waiter] = []  # sorted by (-aged priority, ticket)
        self._counters = SlotCounters()
        # Slot -> (use tick, prefix key) of its last grant: what its KV cache holds.
        self._history: dict[int, tuple[int, str | None]] = {}
        self._ticks = itertools.count(1)

    @property
    def capacity(self) -> int:
        """Number of slots."""
        return self._capacity

    def resize(self, capacity: int) -> None:
        """Change the number of slots; in-use slots above it retire when released.

        After a shrink nobody is admitted until fewer than ``capacity`` slots are in use,
        whichever numbers they have.
        """
        _check_capacity(self.name, capacity)
        grants: list[_Waiter] = []
        with self._lock:
            self._capacity = capacity
            self._free = [s for s in self._free if s < capacity]
            taken = self._in_use | set(self._free)
            self._free.extend(s for s in range(capacity) if s not in taken)
            heapq.heapify(self._free)
            while self._waiters and self._has_room():
                grants.append(self._hand_over(heapq.heappop(self._free)))
        for waiter in grants:
            self._notify(waiter)

    def stats(self) -> LimiterStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return self._counters.snapshot(
                name=self.name,
                capacity=self._capacity,
                in_use=len(self._in_use),
                queued=len(self._waiters),
            )

    @property
    def load(self) -> float:
        """(held + queued) / capacity: how busy this endpoint is, for routing."""
        with self._lock:
            return (len(self._in_use) + len(self._waiters)) / self._capacity

    def _has_room(self) -> bool:
        """True when fewer than ``capacity`` slots are in use (the cap, whatever the numbers)."""
        return len(self._in_use) < self._capacity and bool(self._free)

    def _take(self, slot: int, prefer: str | None = None) -> int:
        self._in_use.add(slot)
        self._history[slot] = (next(self._ticks), prefer)
        self._counters.took(len(self._in_use))
        return slot

    def _pick_free(self, prefer: str | None) -> int:
        """A free slot: lowest first, or for ``prefer`` the one that last served it.

        Without a free slot that last served ``prefer``, the least recently used free
        slot (one never used first): it holds the prefix least likely to be wanted next.
        """
        if prefer is None:
            return heapq.heappop(self._free)
        matching = [s for s in self._free if self._history.get(s, (0, None))[1] == prefer]
        chosen = min(matching or self._free, key=lambda s: (self._history.get(s, (0, None))[0], s))
        self._free.remove(chosen)
        heapq.heapify(self._free)
        return chosen

    def last_served(self, slot: int) -> str | None:
        """The prefix key of the last grant of ``slot`` (``None``: unknown or none)."""
        with self._lock:
            return self._history.get(slot, (0, None))[1]

    def _next_waiter(self) -> int:
        """Index of the waiter to grant: the head, unless attained service reorders runs."""
        if self._ledger is None or not any(w.run for w in self._waiters):
            return 0
        penalties: dict[str, float] = {}
        for waiter in self._waiters:
            if waiter.run is not None and waiter.run not in penalties:
                penalties[waiter.run] = las_penalty(self._ledger.seconds(waiter.run))

        def key(index: int) -> tuple[float, int]:
            waiter = self._waiters[index]
            penalty = penalties.get(waiter.run, 0.0) if waiter.run else 0.0
            return (waiter.order[0] + penalty, waiter.order[1])

        return min(range(len(self._waiters)), key=key)

    def _hand_over(self, slot: int) -> _Waiter:
        waiter = self._waiters.pop(self._next_waiter())
        waiter.slot = self._take(slot, waiter.prefer)
        return waiter

    def _notify(self, waiter: _Waiter) -> None:
        try:
            waiter.loop.call_soon_threadsafe(_grant, waiter)
        except RuntimeError:
            # The waiter's event loop is closed: nobody will take this slot, pass it on.
            if waiter.slot is not None:
                self.release(waiter.slot)

    async def acquire(
        self,
        timeout: float | None = None,
        *,
        priority: float = 0.0,
        prefer: str | None = None,
        run: str | None = None,
    ) -> int:
        """Wait for a free slot: higher ``priority`` first, first come first served within one.

        The priority ages while the waiter waits (:data:`AGING_PER_S`) and, for a waiter
        of ``run``, loses that run's attained service at each grant (least attained
        service across runs). With ``prefer`` (a prompt-prefix key) a free slot that last
        served that key is taken if there is one, else the least recently used free slot;
        a waiter gets the slot released.

        Raises:
            SlotTimeoutError: No slot was free within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._has_room() and not self._waiters:
                return self._take(self._pick_free(prefer), prefer)
            aged = priority - self._clock() * AGING_PER_S
            waiter = _Waiter(loop, loop.create_future(), (-aged, next(_tickets)), prefer, run)
            bisect.insort(self._waiters, waiter, key=lambda w: w.order)
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
        with self._lock:
            self._counters.queued_for(time.perf_counter() - started)
        return slot

    def release(self, slot: int) -> None:
        """Give a slot back; the first waiter (on any event loop) gets it."""
        waiter = None
        with self._lock:
            if slot not in self._in_use:
                return
            self._in_use.discard(slot)
            if self._waiters and len(self._in_use) < self._capacity:
                # The slot released, or for a retired one (above a shrunk capacity) the
                # lowest free number: with room there is one (see _free).
                kept = slot < self._capacity
                waiter = self._hand_over(slot if kept else heapq.heappop(self._free))
            elif slot < self._capacity:
                heapq.heappush(self._free, slot)
        if waiter is not None:
            self._notify(waiter)

    def was_lost(self, slot: int) -> bool:
        """Never: nothing takes an in-process slot from its holder."""
        return False


def _check_capacity(name: str, capacity: int) -> None:
    if capacity < 1:
        raise ValueError(f"limiter {name!r}: capacity must be >= 1, got {capacity}")


class LocalSlotStore:
    """The in-process store: every endpoint gets a :class:`LocalSlots`."""

    def __init__(self) -> None:
        self._ledger = LocalLedger()

    @property
    def description(self) -> str:
        """Always ``local``."""
        return LOCAL_STORE

    def slots(self, name: str, key: str, capacity: int) -> EndpointSlots:
        """A fresh in-process semaphore for one server (sharing this store's ledger)."""
        return LocalSlots(name, capacity, ledger=self._ledger)

    async def check(self) -> str | None:
        """Nothing to check in-process."""
        return None

    def share_cooldown(self, key: str, seconds: float) -> None:
        """Nobody else to tell: this process's health records are the only ones."""

    def watch_cooldowns(self, listener: Callable[[str, float], None]) -> None:
        """No other process can bench a server here."""

    async def counts(self, key: str) -> tuple[int, int] | None:
        """Other processes' leases are not visible in-process."""
        return None

    @property
    def ledger(self) -> ServiceLedger:
        """This process's attained service per run."""
        return self._ledger


LOCAL = LocalSlotStore()


__all__ = [
    "AGING_PER_S",
    "LOCAL",
    "LOCAL_STORE",
    "STORE_URL_FORM",
    "EndpointSlots",
    "LimiterStats",
    "LocalSlotStore",
    "LocalSlots",
    "SlotCounters",
    "SlotNumbers",
    "SlotStore",
    "check_store_url",
    "endpoint_key",
    "hide_password",
]
