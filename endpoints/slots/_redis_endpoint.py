"""One server's slots as seen by this process when leases live in Redis.

:class:`RedisSlots` is what a :class:`~endpoints.slots._limiter.SlotLimiter` talks to on any
event loop or thread; every Redis round trip goes through the store's own loop (a
:class:`LeaseBroker`, see :mod:`endpoints.slots._redis_store`). Slot numbers stay local (lanes
of this process's timelines); the cap is the leases' count in Redis.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from endpoints.slots._store import LimiterStats, LocalSlots, SlotCounters, SlotNumbers
from kitty.errors import SettingsError, SlotTimeoutError

logger = logging.getLogger("kitty.endpoints")

# The cancellation message a holder gets when its lease expired in a heartbeat gap and was
# granted to someone else: its request is stopped and the slot asked for again.
LEASE_LOST = "kitty: slot lease lost (expired in a heartbeat gap and taken by another holder)"


class StoreDown(Exception):
    """Redis is unreachable and the policy is ``degrade`` (handled inside this package)."""


class LeaseBroker(Protocol):
    """The store side of :class:`RedisSlots` (implemented by ``RedisSlotStore``)."""

    expected_processes: int
    down_reason: str | None
    fatal: SettingsError | None

    @property
    def description(self) -> str:
        """The store URL, password hidden."""
        ...

    @property
    def degrades(self) -> bool:
        """True while Redis is unreachable under the ``degrade`` policy."""
        ...

    def new_lease_id(self) -> str:
        """A lease id unique across processes."""
        ...

    def acquire(self, slots: RedisSlots, lease: str, priority: float) -> Coroutine[Any, Any, bool]:
        """Queue a lease and wait for its grant (runs on the store's loop)."""
        ...

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run a coroutine on the store's loop."""
        ...

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """Run a callback on the store's loop."""
        ...

    def abandon(self, lease: str) -> None:
        """Leave the queue or give the lease back (on the store's loop)."""
        ...

    def release(self, lease: str) -> None:
        """Give a held lease back (on the store's loop)."""
        ...

    def poke(self) -> None:
        """Run the heartbeat now (on the store's loop)."""
        ...


class RedisSlots:
    """Numbered slots of one server whose cap is held by leases in Redis.

    Args:
        broker: The process's store for the Redis URL.
        name: Endpoint name (errors, stats).
        key: The server's normalised base URL (its Redis keys).
        capacity: Slots across every process sharing the store.
    """

    def __init__(self, broker: LeaseBroker, name: str, key: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"limiter {name!r}: capacity must be >= 1, got {capacity}")
        self.broker = broker
        self.name = name
        self.key = key
        self._lock = threading.Lock()
        self._capacity = capacity
        self._numbers = SlotNumbers()
        self._leases: dict[int, str] = {}
        self._degraded: dict[int, int] = {}
        self._holders: dict[int, tuple[asyncio.Task[Any], asyncio.AbstractEventLoop]] = {}
        self._lost: set[int] = set()
        self._fallback: LocalSlots | None = None
        self._queued = 0
        self._counters = SlotCounters()
        self._seen: tuple[int, int] | None = None

    @property
    def capacity(self) -> int:
        """Slots across every process sharing the store."""
        return self._capacity

    def resize(self, capacity: int) -> None:
        """Change the cap; more room is granted at the next heartbeat, which runs now."""
        if capacity < 1:
            raise ValueError(f"limiter {self.name!r}: capacity must be >= 1, got {capacity}")
        if capacity == self._capacity:
            return
        grew = capacity > self._capacity
        self._capacity = capacity
        if self._fallback is not None:
            self._fallback.resize(self._degraded_capacity())
        if grew:
            self.broker.call_soon(self.broker.poke)

    def seen(self, leases: int, queued: int) -> None:
        """Fleet-wide leases and waiters as the last script saw them."""
        with self._lock:
            self._seen = (leases, queued)

    def stats(self) -> LimiterStats:
        """This process's counters, plus the fleet-wide counts last seen."""
        with self._lock:
            return self._counters.snapshot(
                name=self.name,
                capacity=self._capacity,
                in_use=len(self._numbers.held),
                queued=self._queued,
                store=self.broker.description,
                leases=None if self._seen is None else self._seen[0],
                store_queued=None if self._seen is None else self._seen[1],
            )

    @property
    def load(self) -> float:
        """(held + queued) / capacity, counting other processes' as last seen."""
        with self._lock:
            mine = len(self._numbers.held) + self._queued
            shared = sum(self._seen) if self._seen is not None else 0
            return max(mine, shared) / self._capacity

    def _degraded_capacity(self) -> int:
        return max(1, self._capacity // self.broker.expected_processes)

    def _hold(self, started: float, waited: bool) -> int:
        number = self._numbers.take()
        self._counters.took(len(self._numbers.held))
        if waited:
            self._counters.queued_for(time.perf_counter() - started)
        return number

    async def acquire(self, timeout: float | None = None, *, priority: float = 0.0) -> int:
        """Wait for a lease: higher ``priority`` first, first come first served within one.

        Raises:
            SlotTimeoutError: No lease within ``timeout`` (the message names the store and,
                when it is unreachable, the fix).
            SettingsError: Redis refuses the credentials or has no such database.
        """
        if self.broker.fatal is not None:
            raise self.broker.fatal
        started = time.perf_counter()
        if self.broker.degrades:
            return await self._acquire_degraded(timeout, priority, started)
        lease = self.broker.new_lease_id()
        with self._lock:
            self._queued += 1
        store_down = False
        try:
            future = self.broker.submit(self.broker.acquire(self, lease, priority))
            async with asyncio.timeout(timeout):
                waited = await asyncio.wrap_future(future)
        except StoreDown:
            store_down = True
        except BaseException as exc:
            self.broker.call_soon(self.broker.abandon, lease)
            if isinstance(exc, TimeoutError):
                raise SlotTimeoutError(self._timeout_message(timeout)) from None
            raise
        finally:
            with self._lock:
                self._queued -= 1
        if store_down:
            left = None if timeout is None else max(timeout - (time.perf_counter() - started), 0)
            return await self._acquire_degraded(left, priority, started)
        with self._lock:
            number = self._hold(started, waited)
            self._leases[number] = lease
            holder = asyncio.current_task()
            if holder is not None:
                self._holders[number] = (holder, asyncio.get_running_loop())
        return number

    def lease_lost(self, lease: str) -> None:
        """A held lease expired and its slot went to another holder: stop this holder.

        Called on the store's loop by the heartbeat. The holding task is cancelled with
        :data:`LEASE_LOST` so its request leaves the server (the cap holds again); the
        caller sees :meth:`was_lost` and asks for a slot again.
        """
        with self._lock:
            number = next((n for n, held in self._leases.items() if held == lease), None)
            if number is None:
                return
            self._lost.add(number)
            holder = self._holders.get(number)
        logger.warning(
            "endpoint %s: slot lease %s expired in a heartbeat gap and was taken; stopping "
            "its request and queueing it again",
            self.name,
            lease,
        )
        if holder is not None:
            task, loop = holder
            loop.call_soon_threadsafe(self._stop_holder, number, lease, task)

    def _stop_holder(self, number: int, lease: str, task: asyncio.Task[Any]) -> None:
        # On the holder's own loop: if it has not released the slot meanwhile, nothing of
        # its code runs between this check and the cancellation.
        with self._lock:
            still_held = self._leases.get(number) == lease
        if still_held:
            task.cancel(LEASE_LOST)

    def was_lost(self, slot: int) -> bool:
        """True when ``slot``'s lease was lost while held (see :meth:`lease_lost`)."""
        with self._lock:
            return slot in self._lost

    async def _acquire_degraded(
        self, timeout: float | None, priority: float, started: float
    ) -> int:
        with self._lock:
            if self._fallback is None:
                share = self._degraded_capacity()
                logger.warning(
                    "endpoint %s: slot store %s unreachable; degrading to %d of %d slots in "
                    "this process (on_store_down = degrade, expected_processes = %d)",
                    self.name,
                    self.broker.description,
                    share,
                    self._capacity,
                    self.broker.expected_processes,
                )
                self._fallback = LocalSlots(f"{self.name} (store down, degraded)", share)
            fallback = self._fallback
        local = await fallback.acquire(timeout, priority=priority)
        with self._lock:
            number = self._hold(started, waited=True)
            self._degraded[number] = local
        return number

    def release(self, slot: int) -> None:
        """Give a slot back (a lease to Redis, or a degraded local slot)."""
        with self._lock:
            lease = self._leases.pop(slot, None)
            local = self._degraded.pop(slot, None)
            self._holders.pop(slot, None)
            self._lost.discard(slot)
            if not self._numbers.give_back(slot):
                return
        if local is not None and self._fallback is not None:
            self._fallback.release(local)
        if lease is not None:
            self.broker.call_soon(self.broker.release, lease)

    def _timeout_message(self, timeout: float | None) -> str:
        store = self.broker.description
        if self.broker.down_reason is not None:
            return (
                f"no slot on endpoint {self.name!r} within {timeout:g}s: the slot store {store} "
                f"is unreachable ({self.broker.down_reason}); start Redis there (or fix "
                "[coordination] slot_store / KITTY_SLOT_STORE), or set [coordination] "
                'on_store_down = "degrade" to run on a share of the slots without it'
            )
        return (
            f"no free slot on endpoint {self.name!r} within {timeout:g}s ({self._capacity} "
            f"slots busy across the processes sharing {store}); raise the acquire timeout "
            "or add slots"
        )
