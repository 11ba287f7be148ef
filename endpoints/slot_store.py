"""Where an endpoint's slots are counted: the slot store protocol and the in-process store.

A :class:`~endpoints.limiter.SlotLimiter` is the face every caller uses; its bookkeeping
sits behind an :class:`EndpointSlots` made by a :class:`SlotStore`. The ``local`` store
(this module) is a fair in-process semaphore: caps hold across the runs, event loops and
threads of one process. The ``redis`` store (:mod:`endpoints.redis_slots`) holds leases
in Redis so caps hold across processes and hosts.

Waiters are granted in priority order (higher first), first come first served among equal
priorities. In-process, a waiter's priority grows by :data:`AGING_PER_S` per second it
waits, so a stream of higher-priority arrivals can pass a waiter only for a bounded time.
Slot numbers (lowest free first) give timelines one lane per slot; they are
ours, not the server's slot ids.
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
from urllib.parse import urlsplit, urlunsplit

from kitty.errors import SettingsError, SlotTimeoutError

LOCAL_STORE = "local"
STORE_URL_FORM = "local or redis://[:password@]host:port/db (e.g. redis://127.0.0.1:6379/0)"
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "ip6-localhost"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


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


def endpoint_key(base_url: str) -> str:
    """One name per server: ``localhost``, ``127.0.0.1`` and a trailing slash are the same.

    Scheme and host are lower-cased, loopback names become ``127.0.0.1``, a default port
    is written out, and trailing slashes go.
    """
    parts = urlsplit(base_url.strip())
    scheme = (parts.scheme or "http").lower()
    host = (parts.hostname or "").lower()
    if host in _LOOPBACK_HOSTS or host.startswith("127."):
        host = "127.0.0.1"
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def check_store_url(url: str, *, source: str = "slot_store") -> str:
    """Validate a slot store setting; returns it stripped.

    Raises:
        SettingsError: Neither ``local`` nor a ``redis://`` / ``rediss://`` URL with a host
            and, if given, a numeric db; one line naming it and the expected form.
    """
    text = url.strip()
    if text == LOCAL_STORE:
        return text
    problem = _url_problem(text)
    if problem:
        raise SettingsError(
            f"{source} = {url!r} is not valid ({problem}); expected {STORE_URL_FORM}"
        )
    return text


def _url_problem(text: str) -> str | None:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("redis", "rediss"):
        return "unknown scheme" if parts.scheme else "no scheme"
    if not parts.hostname:
        return "no host"
    if port is not None and not 0 < port < 65536:
        return "bad port"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return f"db {db!r} is not a number"
    return None


def hide_password(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs and errors)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


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
    """

    def __init__(
        self, name: str, capacity: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        _check_capacity(name, capacity)
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._capacity = capacity
        self._free: list[int] = list(range(capacity))
        self._in_use: set[int] = set()
        self._waiters: list[_Waiter] = []  # sorted by (-aged priority, ticket)
        self._counters = SlotCounters()

    @property
    def capacity(self) -> int:
        """Number of slots."""
        return self._capacity

    def resize(self, capacity: int) -> None:
        """Change the number of slots; in-use slots above it retire when released."""
        _check_capacity(self.name, capacity)
        grants: list[_Waiter] = []
        with self._lock:
            self._capacity = capacity
            self._free = [s for s in self._free if s < capacity]
            taken = self._in_use | set(self._free)
            self._free.extend(s for s in range(capacity) if s not in taken)
            heapq.heapify(self._free)
            while self._free and self._waiters:
                grants.append(self._hand_over(heapq.heappop(self._free)))
        for waiter in grants:
            self._notify(waiter)

    def stats(self) -> LimiterStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            c = self._counters
            return LimiterStats(
                name=self.name,
                capacity=self._capacity,
                in_use=len(self._in_use),
                queued=len(self._waiters),
                peak_in_use=c.peak,
                acquired=c.acquired,
                waited=c.waited,
                total_wait_s=c.total_wait,
                max_wait_s=c.max_wait,
            )

    @property
    def load(self) -> float:
        """(held + queued) / capacity: how busy this endpoint is, for routing."""
        with self._lock:
            return (len(self._in_use) + len(self._waiters)) / self._capacity

    def _take(self, slot: int) -> int:
        self._in_use.add(slot)
        self._counters.took(len(self._in_use))
        return slot

    def _hand_over(self, slot: int) -> _Waiter:
        waiter = self._waiters.pop(0)
        waiter.slot = self._take(slot)
        return waiter

    def _notify(self, waiter: _Waiter) -> None:
        try:
            waiter.loop.call_soon_threadsafe(_grant, waiter)
        except RuntimeError:
            # The waiter's event loop is closed: nobody will take this slot, pass it on.
            if waiter.slot is not None:
                self.release(waiter.slot)

    async def acquire(self, timeout: float | None = None, *, priority: float = 0.0) -> int:
        """Wait for a free slot: higher ``priority`` first, first come first served within one.

        The priority ages while the waiter waits (:data:`AGING_PER_S`).

        Raises:
            SlotTimeoutError: No slot was free within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free and not self._waiters:
                return self._take(heapq.heappop(self._free))
            aged = priority - self._clock() * AGING_PER_S
            waiter = _Waiter(loop, loop.create_future(), (-aged, next(_tickets)))
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
            if slot >= self._capacity:
                return
            if self._waiters:
                waiter = self._hand_over(slot)
            else:
                heapq.heappush(self._free, slot)
        if waiter is not None:
            self._notify(waiter)


def _check_capacity(name: str, capacity: int) -> None:
    if capacity < 1:
        raise ValueError(f"limiter {name!r}: capacity must be >= 1, got {capacity}")


class LocalSlotStore:
    """The in-process store: every endpoint gets a :class:`LocalSlots`."""

    @property
    def description(self) -> str:
        """Always ``local``."""
        return LOCAL_STORE

    def slots(self, name: str, key: str, capacity: int) -> EndpointSlots:
        """A fresh in-process semaphore for one server."""
        return LocalSlots(name, capacity)

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


LOCAL = LocalSlotStore()
