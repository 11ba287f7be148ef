"""Slot leases in Redis: caps that hold across every process and host sharing a fleet.

A lease is a member of the server's sorted set with an expiry (see
:mod:`endpoints.slots._redis_scripts`); grant and release are Lua scripts, so no two processes
ever count the same free slot. Each process runs one store per URL on a thread of its own
with its own event loop: callers on any loop or thread submit to it, and the heartbeat
that renews held leases keeps going whatever the callers' loops do. A holder that dies
stops renewing; its slots return within the lease TTL.

Grants reach waiting processes through a pub/sub message; the heartbeat also checks
every waiter of this process, and when leases are held elsewhere it wakes when the first
of them would expire, so a missed message or a dead holder costs a delay, never a slot.

Redis restarting empty (leases need no persistence) loses every lease while their holders
still send requests. The scripts then grant nothing to waiters until one TTL after Redis
started, when every lease granted before the start has expired; meanwhile each holder's
heartbeat, woken when the store channel's connection drops, takes its leases back and
each waiter queues again. So no process is granted a slot its holder still uses, and the
first waiter is served at most one TTL (and a second) after the restart, or as soon as the
slot is free after that. A Redis just started costs the same wait once: to the scripts a
first use and a restart look alike. Every process should use the same ``lease_ttl_s``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis

from endpoints.slots import _redis_scripts as redis_scripts
from endpoints.slots._attained_service import RedisLedger, ServiceLedger
from endpoints.slots._redis_channel import CooldownListener, StoreChannel
from endpoints.slots._redis_endpoint import RedisSlots, StoreDown
from endpoints.slots._redis_faults import STORE_ERRORS, fatal_problem
from endpoints.slots._store import AGING_PER_S, EndpointSlots, hide_password
from kitty.errors import SettingsError

logger = logging.getLogger("kitty.endpoints")

PREFIX = "kitty:slots"
RETRY_S = 0.5
CONNECT_TIMEOUT_S = 1.0
COMMAND_TIMEOUT_S = 2.0


@dataclass(eq=False)
class _Pending:
    key: str
    priority: float
    future: asyncio.Future[None]
    # Renewed (and re-queued if missing) only once its ENQUEUE returned: a renewal sent
    # before would find it "missing" and queue it twice.
    queued: bool = False
    # Its aged key in the queue as ENQUEUE computed it from Redis's clock: kept when it
    # queues again (Redis restarted empty), so it keeps the age it had.
    score: str = ""


class RedisSlotStore:
    """Slot leases of every server in one Redis (one object per process and URL).

    Args:
        url: ``redis://[:password@]host:port/db``.
        ttl_s: A lease not renewed for this long is given back.
        on_store_down: ``fail_closed`` (wait, then a clear error) or ``degrade``.
        expected_processes: Processes sharing the fleet; ``degrade`` takes
            ``slots // expected_processes`` per process while Redis is unreachable.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = 10.0,
        on_store_down: Literal["fail_closed", "degrade"] = "fail_closed",
        expected_processes: int = 2,
    ) -> None:
        self.url = url
        self.ttl_ms = max(int(ttl_s * 1000), 100)
        self.on_store_down = on_store_down
        self.expected_processes = expected_processes
        self.channel = f"{PREFIX}:events"
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._ids = itertools.count()
        self._start_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._endpoints: dict[str, RedisSlots] = {}
        self._pending: dict[str, _Pending] = {}
        self._held: dict[str, str] = {}
        self._kick: asyncio.Event | None = None
        self._wake_at = float("inf")
        self._channel = StoreChannel(self.channel, self._granted, self._channel_down)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.down_reason: str | None = None
        self.fatal: SettingsError | None = None
        self.lost_leases = 0
        self._ledger = RedisLedger(self)

    @property
    def description(self) -> str:
        """The URL with any password hidden."""
        return hide_password(self.url)

    @property
    def ledger(self) -> ServiceLedger:
        """Attained service per run, shared by every process using this Redis."""
        return self._ledger

    @property
    def redis(self) -> aioredis.Redis:
        """The client (on the store's loop only; started on first use)."""
        self._ensure_started()
        assert self._client is not None
        return self._client

    @property
    def degrades(self) -> bool:
        """True when the policy is ``degrade`` and Redis is unreachable now."""
        return self.on_store_down == "degrade" and self.down_reason is not None

    def slots(self, name: str, key: str, capacity: int) -> EndpointSlots:
        """The leases of the server ``key`` (created on first use, shared afterwards)."""
        slots = self._endpoints.get(key)
        if slots is None:
            slots = self._endpoints.setdefault(key, RedisSlots(self, name, key, capacity))
        else:
            slots.resize(capacity)
        return slots

    # -- the store's own thread and loop ------------------------------------------------

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="kitty-slot-store", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
                asyncio.run_coroutine_threadsafe(self._boot(), loop).result(5)
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run ``coro`` on the store's loop."""
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_started())

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` on the store's loop (from any thread)."""
        self._ensure_started().call_soon_threadsafe(callback, *args)

    async def _boot(self) -> None:
        self._client = aioredis.Redis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=COMMAND_TIMEOUT_S,
        )
        for name in ("ENQUEUE", "RELEASE", "RENEW", "COUNTS"):
            self._scripts[name] = self._client.register_script(getattr(redis_scripts, name))
        self._kick = asyncio.Event()
        self._spawn(self._channel.listen(self._client))
        self._spawn(self._heartbeat())

    def close(self) -> None:
        """Stop the store's thread (tests; held leases then expire within the TTL)."""
        with self._start_lock:
            loop, self._loop = self._loop, None
            thread, self._thread = self._thread, None
        if loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(5)
        loop.close()

    async def _shutdown(self) -> None:
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        # The loop keeps only weak references to tasks: hold them until they end.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def keys(self, key: str) -> list[str]:
        """The Redis keys of one server."""
        return [f"{PREFIX}:{{{key}}}:{suffix}" for suffix in redis_scripts.KEY_SUFFIXES]

    async def _run(self, script: str, key: str, args: list[Any]) -> list[Any]:
        try:
            result: list[Any] = await self._scripts[script](keys=self.keys(key), args=args)
        except STORE_ERRORS as exc:
            self._went_down(exc)
            raise
        if self.down_reason is not None:
            logger.warning("slot store %s is reachable again", self.description)
            self.down_reason = None
        return result

    def _went_down(self, exc: BaseException) -> bool:
        """Note a Redis error; True when Redis refuses us for good (``fatal`` is set)."""
        problem = fatal_problem(exc)
        if problem is not None:
            self.fatal = SettingsError(f"slot store {self.description}: {problem}")
            for pending in self._pending.values():
                if not pending.future.done():
                    pending.future.set_exception(self.fatal)
            return True
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if self.down_reason is None:
            logger.warning(
                "slot store %s is unreachable (%s); %s",
                self.description,
                reason,
                "each process now takes slots // expected_processes"
                if self.on_store_down == "degrade"
                else "tasks wait for it (fail closed)",
            )
        self.down_reason = reason
        return self.fatal is not None

    def _channel_down(self, exc: BaseException) -> bool:
        """The channel's connection broke (Redis restarting?): renew now, then every RETRY_S.

        After a restart that lost the leases, holders must take theirs back before the
        restart's window ends (see :mod:`endpoints.slots._redis_scripts`); the channel sees
        the connection close at once, the heartbeat might sleep for a third of the TTL.
        """
        fatal = self._went_down(exc)
        if not fatal and self._kick is not None:
            self._kick.set()
        return fatal

    async def check(self) -> str | None:
        """Check the store at start (call from any loop).

        Returns:
            A warning when Redis is unreachable now (tasks will wait for it).

        Raises:
            SettingsError: Redis refuses the credentials or has no such database.
        """
        return await asyncio.wrap_future(self.submit(self._check()))

    async def _check(self) -> str | None:
        assert self._client is not None
        try:
            await self._client.ping()
        except STORE_ERRORS as exc:
            self._went_down(exc)
        if self.fatal is not None:
            raise self.fatal
        if self.down_reason is not None:
            return f"slot store {self.description} is unreachable ({self.down_reason})"
        return None

    # -- acquire / release (on the store's loop) ----------------------------------------

    def new_lease_id(self) -> str:
        """A lease id unique across every process sharing the store."""
        return f"{self.process_id}:{next(self._ids)}"

    async def acquire(self, slots: RedisSlots, lease: str, priority: float) -> bool:
        """Queue ``lease`` for a slot of ``slots`` and wait for the grant.

        Returns:
            True when it had to wait (the grant was not immediate).

        Raises:
            StoreDown: Redis is unreachable and the policy is ``degrade``.
            SettingsError: Redis refuses us (credentials, db).
        """
        loop = asyncio.get_running_loop()
        # Aged like the local store (AGING_PER_S a second), on Redis's clock: ENQUEUE takes
        # TIME, so hosts with skewed clocks still order waiters by their wait.
        pending = _Pending(slots.key, priority, loop.create_future())
        self._pending[lease] = pending
        waited = False
        try:
            while True:
                try:
                    await self._enqueue(lease, pending)
                    break
                except STORE_ERRORS:
                    if self.fatal is not None:
                        raise self.fatal from None
                    if self.on_store_down == "degrade":
                        raise StoreDown(self.down_reason or "unreachable") from None
                    waited = True
                    # Fail closed: wait for Redis; the caller's timeout ends this.
                    await asyncio.wait([pending.future], timeout=RETRY_S)
                    if pending.future.done():
                        break
            if not pending.future.done():
                waited = True
            await pending.future
        except BaseException:
            self._pending.pop(lease, None)
            self._spawn(self._give_back(slots.key, lease))
            raise
        self._pending.pop(lease, None)
        self._held[lease] = slots.key
        return waited

    async def _enqueue(self, lease: str, pending: _Pending) -> list[Any]:
        capacity = self._endpoints[pending.key].capacity
        args = [lease, pending.priority, capacity, self.ttl_ms, self.channel, AGING_PER_S]
        result = await self._run("ENQUEUE", pending.key, [*args, pending.score])
        pending.queued = True
        pending.score = str(result[4])
        self._absorb(pending.key, result)
        return result

    def abandon(self, lease: str) -> None:
        """The caller gave up (timeout, cancellation): leave the queue or give the lease back."""
        pending = self._pending.get(lease)
        if pending is not None and not pending.future.done():
            pending.future.cancel()
        elif lease in self._held:
            self.release(lease)

    def poke(self) -> None:
        """Run the heartbeat now (on the store's loop): a resize may have made room."""
        if self._kick is not None:
            self._kick.set()

    def release(self, lease: str) -> None:
        """Give a held lease back (on the store's loop)."""
        key = self._held.pop(lease, None)
        if key is not None:
            self._spawn(self._give_back(key, lease))

    async def _give_back(self, key: str, lease: str) -> None:
        capacity = self._endpoints[key].capacity
        try:
            result = await self._run("RELEASE", key, [lease, capacity, self.ttl_ms, self.channel])
        except STORE_ERRORS:
            return  # no longer renewed: the lease expires within the TTL
        self._absorb(key, result)

    def _absorb(self, key: str, result: list[Any]) -> None:
        wake_ms, leases, queued, granted = result[:4]
        self._endpoints[key].seen(int(leases), int(queued))
        self._granted(granted)
        if int(wake_ms) >= 0 and any(p.key == key for p in self._pending.values()):
            self._wake_at = min(self._wake_at, time.monotonic() + int(wake_ms) / 1000 + 0.02)
            if self._kick is not None:
                self._kick.set()

    def _granted(self, leases: list[str]) -> None:
        for lease in leases:
            pending = self._pending.get(lease)
            if pending is not None and not pending.future.done():
                pending.future.set_result(None)

    # -- heartbeat and grant messages ---------------------------------------------------

    async def _heartbeat(self) -> None:
        assert self._kick is not None
        while True:
            beat = self.ttl_ms / 3000
            delay = min(beat, max(self._wake_at - time.monotonic(), 0.0))
            if self.down_reason is not None:
                delay = min(delay, RETRY_S)
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._kick.wait()
            self._kick.clear()
            if self._wake_at <= time.monotonic() + 0.01:
                self._wake_at = float("inf")
            try:
                await self._renew_all()
            except STORE_ERRORS:
                continue
            except Exception:  # the heartbeat must outlive any surprise
                logger.exception("slot store heartbeat failed")

    async def _renew_all(self) -> None:
        keys = set(self._held.values()) | {p.key for p in self._pending.values()}
        if not keys and self.down_reason is not None and self._client is not None:
            await self._client.ping()
            self.down_reason = None
        for key in keys:
            held = [lease for lease, k in self._held.items() if k == key]
            waiting = [lease for lease, p in self._pending.items() if p.key == key and p.queued]
            capacity = self._endpoints[key].capacity
            args = [capacity, self.ttl_ms, self.channel, len(held), *held, *waiting]
            result = await self._run("RENEW", key, args)
            self._absorb(key, result)
            mine, lost, missing = result[4:7]
            self._granted(mine)
            for lease in lost:  # expired in a heartbeat gap and granted to another holder
                self.lost_leases += 1
                self._held.pop(lease, None)
                self._endpoints[key].lease_lost(lease)  # its request stops and requeues
            for lease in missing:
                pending = self._pending.get(lease)
                if pending is not None and not pending.future.done():  # Redis restarted?
                    await self._enqueue(lease, pending)

    # -- shared endpoint health ---------------------------------------------------------

    def watch_cooldowns(self, listener: CooldownListener) -> None:
        """Call ``listener(key, seconds)`` when any process benches (or clears) a server."""
        self._channel.watch(listener)
        self._ensure_started()

    def share_cooldown(self, key: str, seconds: float) -> None:
        """Tell every process that the server ``key`` is benched for ``seconds`` (0: clear)."""
        publish = self._channel.publish_cooldown
        self.call_soon(lambda: self._spawn(publish(self.redis, key, seconds)))

    # -- fleet-wide counts --------------------------------------------------------------

    async def counts(self, key: str) -> tuple[int, int] | None:
        """(leases, waiters) of every process for one server; ``None`` if unreachable."""
        return await asyncio.wrap_future(self.submit(self._counts(key)))

    async def _counts(self, key: str) -> tuple[int, int] | None:
        try:
            leases, queued = await self._run("COUNTS", key, [])
        except STORE_ERRORS:
            return None
        return int(leases), int(queued)
