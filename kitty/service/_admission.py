"""Admission: at most N runs in flight, one run per checkpoint thread; the rest are refused.

The endpoint slot limiters already queue tasks beyond the fleet's slots, but without a
bound on whole runs a burst of requests piles up there without end (each holding its
connection, its plan and its waiting tasks). Refusing early with ``Retry-After`` (429)
lets a client back off instead. A thread that is already running is refused with 409: two
runs continuing one thread would both write its checkpoints and run its tasks twice.

Where places are counted follows the fleet's slot store (``[coordination] slot_store`` or
``$KITTY_SLOT_STORE``): in this process (``local``), or as leases in the same Redis, so the
limit holds for every worker of the service together and a thread runs in one worker at
a time. A lease is a member of a sorted set with an expiry, renewed by a heartbeat: a
worker that dies gives its places back within the lease TTL. Redis unreachable: runs are
refused (503, fail closed) unless ``on_store_down = "degrade"``, which admits
``limit // expected_processes`` runs per process meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis import exceptions as redis_errors

from endpoints import (
    LOCAL_STORE,
    REDIS_COMMAND_TIMEOUT_S,
    REDIS_CONNECT_TIMEOUT_S,
    CoordinationConfig,
    hide_password,
)
from kitty.errors import SettingsError
from kitty.service._errors import RequestError

logger = logging.getLogger("kitty.service")

PREFIX = "kitty:admission"
_UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)

# KEYS[1]: the group's sorted set (lease id -> expiry, ms of Redis server time).
# ARGV: lease, limit, ttl_ms. Returns {1 if held now, holders}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if held or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl * 3)
  return {1, redis.call('ZCARD', KEYS[1])}
end
return {0, redis.call('ZCARD', KEYS[1])}
"""

# KEYS[1]: the group's sorted set. ARGV: limit, ttl_ms, lease ids...
# Renews held leases; one that expired (a heartbeat gap) is taken again while there is
# room, else returned as lost.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lost = {}
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) or redis.call('ZCARD', KEYS[1]) < limit then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
redis.call('PEXPIRE', KEYS[1], ttl * 3)
return lost
"""


class StoreUnreachable(Exception):
    """The shared store did not answer (handled by :class:`RunAdmission`)."""


class RunLeases(Protocol):
    """Places of named groups (runs of a service, one thread), each with a limit."""

    description: str

    async def take(self, group: str, lease: str, limit: int) -> tuple[bool, int]:
        """Take a place in ``group`` if fewer than ``limit`` are held: (taken, holders)."""
        ...

    async def give_back(self, group: str, lease: str) -> None:
        """Give a place back (unknown leases are ignored)."""
        ...

    async def check(self) -> None:
        """Raise ``SettingsError`` when the store refuses us; warn when it is down."""
        ...

    def close(self) -> None:
        """Stop any background work."""
        ...


class LocalRunLeases:
    """Places counted in this process (the ``local`` store)."""

    description = LOCAL_STORE

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[str, set[str]] = {}

    async def take(self, group: str, lease: str, limit: int) -> tuple[bool, int]:
        """Take a place in ``group`` if fewer than ``limit`` are held."""
        with self._lock:
            holders = self._groups.setdefault(group, set())
            if lease in holders or len(holders) < limit:
                holders.add(lease)
                return True, len(holders)
            return False, len(holders)

    async def give_back(self, group: str, lease: str) -> None:
        """Give a place back."""
        with self._lock:
            holders = self._groups.get(group)
            if holders is not None:
                holders.discard(lease)
                if not holders:
                    del self._groups[group]

    async def check(self) -> None:
        """Nothing to check in-process."""

    def close(self) -> None:
        """Nothing runs in the background."""


def _refusal(exc: BaseException) -> str | None:
    """What is wrong when Redis answers but refuses us (retrying will not help)."""
    text = str(exc)
    if isinstance(exc, redis_errors.AuthenticationError) or "NOAUTH" in text:
        return "Redis refused the credentials; put the right password in the URL"
    if isinstance(exc, redis_errors.ResponseError) and "DB index" in text:
        return f"Redis has no such database ({text}); use a db the server has (0-15 by default)"
    return None


@dataclass(frozen=True)
class _Held:
    group: str
    limit: int


class RedisRunLeases:
    """Places as leases in Redis, renewed by a heartbeat thread while held.

    Calls go through a thread-safe sync client in worker threads, so any event loop
    (uvicorn's, a test's) may use one object.

    Args:
        url: The slot store URL (``redis://[:password@]host:port/db``).
        ttl_s: A lease not renewed for this long is given back.
    """

    def __init__(self, url: str, *, ttl_s: float = 10.0) -> None:
        self.description = hide_password(url)
        self.ttl_ms = max(int(ttl_s * 1000), 100)
        self._client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            socket_timeout=REDIS_COMMAND_TIMEOUT_S,
        )
        self._take = self._client.register_script(_TAKE)
        self._renew = self._client.register_script(_RENEW)
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.lost = 0

    def key(self, group: str) -> str:
        """The Redis key of a group."""
        return f"{PREFIX}:{group}"

    def _call(self, script: Any, group: str, args: list[Any]) -> Any:
        try:
            return script(keys=[self.key(group)], args=args)
        except (*_UNREACHABLE, redis_errors.ResponseError) as exc:
            problem = _refusal(exc)
            if problem is not None:
                raise SettingsError(f"slot store {self.description}: {problem}") from None
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreUnreachable(first) from None

    async def take(self, group: str, lease: str, limit: int) -> tuple[bool, int]:
        """Take a place in ``group`` if fewer than ``limit`` leases are live.

        Raises:
            StoreUnreachable: Redis did not answer.
            SettingsError: Redis refuses the credentials or has no such db.
        """
        taken, holders = await asyncio.to_thread(
            self._call, self._take, group, [lease, limit, self.ttl_ms]
        )
        if taken:
            with self._lock:
                self._held[lease] = _Held(group, limit)
            self._start_heartbeat()
        return bool(taken), int(holders)

    async def give_back(self, group: str, lease: str) -> None:
        """Give a lease back; when Redis is unreachable it expires within the TTL."""
        with self._lock:
            self._held.pop(lease, None)
        try:
            await asyncio.to_thread(self._client.zrem, self.key(group), lease)
        except (*_UNREACHABLE, redis_errors.ResponseError):
            logger.info("admission lease %s not returned now; it expires within the TTL", lease)

    async def check(self) -> None:
        """Check the store at start.

        Raises:
            SettingsError: Redis refuses the credentials or has no such db.
        """
        try:
            await asyncio.to_thread(self._client.ping)
        except (*_UNREACHABLE, redis_errors.ResponseError) as exc:
            problem = _refusal(exc)
            if problem is not None:
                raise SettingsError(f"slot store {self.description}: {problem}") from None
            logger.warning(
                "slot store %s is unreachable (%s); runs are refused until it answers",
                self.description,
                exc,
            )

    def _start_heartbeat(self) -> None:
        with self._lock:
            if self._beat is None:
                self._beat = threading.Thread(
                    target=self._heartbeat, name="kitty-admission-heartbeat", daemon=True
                )
                self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            with self._lock:
                groups: dict[_Held, list[str]] = {}
                for lease, held in self._held.items():
                    groups.setdefault(held, []).append(lease)
            for held, leases in groups.items():
                try:
                    lost = self._call(self._renew, held.group, [held.limit, self.ttl_ms, *leases])
                except (StoreUnreachable, SettingsError):
                    continue  # renewed at the next beat, or lost then
                if lost:
                    self.lost += len(lost)
                    logger.warning(
                        "%d admission lease(s) of %s expired during a heartbeat gap and were "
                        "taken meanwhile; those runs go on beyond the limit until they end",
                        len(lost),
                        held.group,
                    )

    def close(self) -> None:
        """Stop the heartbeat (held leases then expire within the TTL)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(5)
        self._client.close()


def run_leases_for(coordination: CoordinationConfig) -> RunLeases:
    """The leases of the fleet's slot store: in-process, or in its Redis.

    Raises:
        SettingsError: The store URL is malformed.
    """
    url = coordination.store_url()
    if url == LOCAL_STORE:
        return LocalRunLeases()
    return RedisRunLeases(url, ttl_s=coordination.lease_ttl_s)


_lease_ids = itertools.count()
_PROCESS = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _new_lease() -> str:
    return f"{_PROCESS}:{next(_lease_ids)}"


class RunAdmission:
    """Runs in flight against a cap, and one run per thread.

    Args:
        limit: Most runs in flight at once (all workers sharing ``leases``); ``0``: none.
        retry_after_s: Seconds a refused client is told to wait.
        leases: Where places are counted (default: this process).
        service: Names the service's group of runs in a shared store (its address).
        on_store_down: ``fail_closed`` (refuse runs, 503) or ``degrade`` (admit
            ``limit // expected_processes`` in this process while the store is down).
        expected_processes: Processes sharing the limit, for ``degrade``.
        on_reject: Told why each refused run was refused: ``run_limit`` (429),
            ``thread_running`` (409) or ``store_unreachable`` (503); the service's
            metrics count them.
    """

    def __init__(
        self,
        limit: int,
        retry_after_s: int,
        *,
        leases: RunLeases | None = None,
        service: str = "service",
        on_store_down: str = "fail_closed",
        expected_processes: int = 2,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.leases = leases or LocalRunLeases()
        self.group = f"runs:{service}"
        self.on_store_down = on_store_down
        self.expected_processes = expected_processes
        self.in_flight = 0
        self.on_reject = on_reject
        self._fallback = LocalRunLeases()

    @property
    def shared(self) -> bool:
        """True when places are counted in a store shared with other processes."""
        return self.leases.description != LOCAL_STORE

    async def check(self) -> None:
        """Check the store at start (``SettingsError`` when it refuses us)."""
        await self.leases.check()

    async def admit(self, thread_id: str | None = None, *, quiet: bool = False) -> AdmissionTicket:
        """Take a place for one run (and its thread); give it back with ``release``.

        ``quiet``: a refusal is not reported to ``on_reject`` (the background runner tries
        every open run twice a second; its refusals are not clients turned away).

        Raises:
            RequestError: 409 when ``thread_id`` is already running; 429 with
                ``Retry-After`` when ``limit`` runs are in flight; 503 when the shared
                store is unreachable (fail closed).
        """
        ticket = AdmissionTicket(self, quiet=quiet)
        try:
            if thread_id is not None:
                await self._take_thread(ticket, thread_id)
            if self.limit:
                await self._take_run(ticket)
        except BaseException:
            await ticket.release()
            raise
        self.in_flight += 1
        ticket.counted = True
        return ticket

    async def _take(
        self, ticket: AdmissionTicket, group: str, lease: str, limit: int
    ) -> tuple[RunLeases, bool, int]:
        try:
            taken, holders = await self.leases.take(group, lease, limit)
            return self.leases, taken, holders
        except StoreUnreachable as exc:
            if self.on_store_down != "degrade":
                self._rejected("store_unreachable", ticket)
                raise RequestError(
                    503,
                    f"the slot store {self.leases.description} is unreachable ({exc}), so "
                    "runs are not admitted (fail closed); start Redis there or fix "
                    '[coordination] slot_store / KITTY_SLOT_STORE, or set on_store_down = "'
                    'degrade" to admit a share of the runs without it',
                    headers={"Retry-After": str(self.retry_after_s)},
                ) from None
            logger.warning(
                "slot store %s unreachable (%s); admitting runs in this process only",
                self.leases.description,
                exc,
            )
            share = limit if limit == 1 else max(1, limit // self.expected_processes)
            taken, holders = await self._fallback.take(group, lease, share)
            return self._fallback, taken, holders

    async def _take_thread(self, ticket: AdmissionTicket, thread_id: str) -> None:
        lease, group = _new_lease(), f"thread:{thread_id}"
        store, taken, _holders = await self._take(ticket, group, lease, 1)
        if not taken:
            self._rejected("thread_running", ticket)
            where = "another worker of the service, or this one" if self.shared else "this service"
            raise RequestError(
                409,
                f"thread {thread_id!r} is already running (in {where}); wait for that run "
                "to finish, then send the request again to continue the thread if it did "
                "not finish",
                "thread_id",
            )
        ticket.places.append((store, group, lease))

    async def _take_run(self, ticket: AdmissionTicket) -> None:
        lease = _new_lease()
        store, taken, holders = await self._take(ticket, self.group, lease, self.limit)
        if not taken:
            self._rejected("run_limit", ticket)
            workers = " (all its workers together)" if store is self.leases and self.shared else ""
            raise RequestError(
                429,
                f"the service is running {holders} runs{workers}, its limit; retry in "
                f"{self.retry_after_s} s (the operator can raise --max-concurrent-runs)",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        ticket.places.append((store, self.group, lease))

    def _rejected(self, reason: str, ticket: AdmissionTicket | None = None) -> None:
        if self.on_reject is not None and not (ticket is not None and ticket.quiet):
            self.on_reject(reason)

    def close(self) -> None:
        """Stop the store's background work."""
        self.leases.close()


class AdmissionTicket:
    """One admitted run's places; :meth:`release` is idempotent."""

    def __init__(self, admission: RunAdmission, *, quiet: bool = False) -> None:
        self._admission: RunAdmission | None = admission
        self.quiet = quiet
        self.places: list[tuple[RunLeases, str, str]] = []
        self.counted = False

    async def release(self) -> None:
        """Give the places back (later calls do nothing)."""
        admission, self._admission = self._admission, None
        if admission is None:
            return
        if self.counted:
            admission.in_flight -= 1
        places, self.places = self.places, []
        # Shielded: a cancelled request (client gone) must still free its thread at once,
        # not after the lease TTL.
        await asyncio.shield(_give_back_all(places))


async def _give_back_all(places: list[tuple[RunLeases, str, str]]) -> None:
    for store, group, lease in places:
        await store.give_back(group, lease)
