"""Slot leases in a real Redis: order, priority, expiry of a dead holder, failures, health."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from endpoints.slots import SlotLimiter, endpoint_key
from endpoints.slots._redis_store import PREFIX, RedisSlotStore
from kitty.errors import SettingsError, SlotTimeoutError
from tests.helpers import until
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[4]
StoreFactory = Callable[..., RedisSlotStore]
TTL_S = 2.0

HOLDER = """
import asyncio, sys
from endpoints.slots._limiter import SlotLimiter
from endpoints.slots._redis_store import RedisSlotStore

async def main() -> None:
    store = RedisSlotStore(sys.argv[1], ttl_s=float(sys.argv[3]))
    limiter = SlotLimiter("ep", 2, store=store, key=sys.argv[2])
    await limiter.acquire(timeout=10)
    await limiter.acquire(timeout=10)
    print("held", flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


@pytest.fixture
def new_store(redis_server: RedisServer) -> Iterator[StoreFactory]:
    """Makes stores (each one stands for a process); all closed after the test."""
    made: list[RedisSlotStore] = []

    def make(url: str | None = None, **settings: object) -> RedisSlotStore:
        # A short TTL: a Redis just started grants nothing to waiters for one TTL (it may
        # have restarted empty while leases were held), and this module's Redis is new.
        settings.setdefault("ttl_s", TTL_S)
        store = RedisSlotStore(url or redis_server.url(), **settings)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def server_key() -> str:
    """A server key of its own per test (no leftovers from other tests)."""
    return endpoint_key(f"http://127.0.0.1:{uuid.uuid4().int % 50000 + 10000}/{uuid.uuid4().hex}")


def two_processes(new_store: StoreFactory, slots: int) -> tuple[str, SlotLimiter, SlotLimiter]:
    """A fresh server key and two limiters of it, each on its own store (as two processes)."""
    key = server_key()
    a = SlotLimiter("ep", slots, store=new_store(), key=key)
    b = SlotLimiter("ep", slots, store=new_store(), key=key)
    return key, a, b


def zcard(server: RedisServer, key: str, suffix: str) -> int:
    with server.client() as client:
        return int(client.zcard(f"{PREFIX}:{{{key}}}:{suffix}"))


async def queue_in_order(
    server: RedisServer, key: str, entries: list[tuple[SlotLimiter, str, float]], order: list[str]
) -> list[asyncio.Task[None]]:
    """Queue one acquire per entry (limiter, tag, priority), each in Redis before the next."""

    async def enter(limiter: SlotLimiter, tag: str, priority: float) -> None:
        async with limiter.slot(timeout=10, priority=priority):
            order.append(tag)
            await asyncio.sleep(0.01)

    tasks = []
    for count, (limiter, tag, priority) in enumerate(entries, start=1):
        tasks.append(asyncio.create_task(enter(limiter, tag, priority)))
        await until(lambda n=count: zcard(server, key, "waiting") == n)  # type: ignore[misc]
    return tasks


def skew_clock(monkeypatch: pytest.MonkeyPatch, store: RedisSlotStore, skew_s: float) -> None:
    """Make ``time.time()`` on the store's own thread ``skew_s`` off (a host's skewed clock)."""

    async def ident() -> int:
        return threading.get_ident()

    thread = store.submit(ident()).result(5)
    real = time.time
    monkeypatch.setattr(
        time, "time", lambda: real() + (skew_s if threading.get_ident() == thread else 0.0)
    )


async def test_waiters_of_two_processes_are_served_first_come_first_served(
    redis_server: RedisServer, new_store: StoreFactory
) -> None:
    key, a, b = two_processes(new_store, 1)
    held = await a.acquire(timeout=5)
    order: list[str] = []
    entries = [(a, "a1", 0.0), (b, "b1", 0.0), (a, "a2", 0.0), (b, "b2", 0.0)]
    tasks = await queue_in_order(redis_server, key, entries, order)
    assert b.stats().queued == 2 and a.stats().in_use == 1
    a.release(held)
    await asyncio.gather(*tasks)
    assert order == ["a1", "b1", "a2", "b2"]
    await until(lambda: zcard(redis_server, key, "leases") == 0)


@pytest.mark.parametrize("skew_s", [-10.0, 10.0], ids=["a-behind", "a-ahead"])
async def test_hosts_with_skewed_clocks_are_still_served_first_come_first_served(
    redis_server: RedisServer,
    new_store: StoreFactory,
    monkeypatch: pytest.MonkeyPatch,
    skew_s: float,
) -> None:
    """Security review finding 12: 10 s of clock skew must not be 500 tokens of priority.

    Aging is computed from Redis's clock inside the script, never the caller's.
    """
    key, a, b = two_processes(new_store, 1)
    held = await b.acquire(timeout=5)
    assert isinstance(a.store, RedisSlotStore)
    skew_clock(monkeypatch, a.store, skew_s)
    order: list[str] = []
    entries = [(a, "a1", 0.0), (b, "b1", 0.0), (a, "a2", 0.0), (b, "b2", 0.0)]
    tasks = await queue_in_order(redis_server, key, entries, order)
    b.release(held)
    await asyncio.gather(*tasks)
    assert order == ["a1", "b1", "a2", "b2"]


async def test_higher_priority_is_granted_first_across_processes(
    redis_server: RedisServer, new_store: StoreFactory
) -> None:
    key, a, b = two_processes(new_store, 1)
    held = await b.acquire(timeout=5)
    order: list[str] = []
    # Token-sized priorities: the enqueues are milliseconds apart, aging adds 50 a second.
    entries = [(a, "low-a", 0.0), (b, "low-b", 0.0), (a, "high", 3000.0), (b, "mid", 1000.0)]
    tasks = await queue_in_order(redis_server, key, entries, order)
    b.release(held)
    await asyncio.gather(*tasks)
    assert order == ["high", "mid", "low-a", "low-b"]


async def test_cap_holds_across_processes_and_stats_show_every_lease(
    redis_server: RedisServer, new_store: StoreFactory
) -> None:
    key, a, b = two_processes(new_store, 2)
    held = [await a.acquire(timeout=5), await a.acquire(timeout=5)]
    with pytest.raises(SlotTimeoutError, match="across the processes sharing redis://"):
        await b.acquire(timeout=1.0)
    await until(lambda: b.stats().leases == 2)  # as b's last script saw them
    assert b.stats().in_use == 0
    waiting = asyncio.create_task(b.acquire(timeout=5))
    await until(lambda: zcard(redis_server, key, "waiting") == 1)
    a.release(held[0])
    assert await waiting == 0
    assert zcard(redis_server, key, "leases") == 2


async def test_localhost_and_127_0_0_1_with_a_slash_share_one_cap(
    new_store: StoreFactory,
) -> None:
    port = uuid.uuid4().int % 50000 + 10000
    a = SlotLimiter("ep", 1, store=new_store(), key=endpoint_key(f"http://localhost:{port}/"))
    b = SlotLimiter("ep", 1, store=new_store(), key=endpoint_key(f"http://127.0.0.1:{port}"))
    held = await a.acquire(timeout=5)
    with pytest.raises(SlotTimeoutError):
        await b.acquire(timeout=0.3)
    a.release(held)
    assert await b.acquire(timeout=5) == 0


async def test_a_killed_holder_gives_its_slots_back_within_the_ttl(
    redis_server: RedisServer, new_store: StoreFactory
) -> None:
    key, ttl_s = server_key(), 1.0
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_server.url(), key, str(ttl_s)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.to_thread(holder.stdout.readline) == "held\n"
        limiter = SlotLimiter("ep", 2, store=new_store(ttl_s=ttl_s), key=key)
        # Alive, the holder renews its leases: two TTLs later they are still its.
        await asyncio.sleep(2 * ttl_s)
        with pytest.raises(SlotTimeoutError):
            await limiter.acquire(timeout=0.2)
        waiting = [asyncio.create_task(limiter.acquire(timeout=ttl_s + 1)) for _ in range(2)]
        await until(lambda: zcard(redis_server, key, "waiting") == 2)
        holder.send_signal(signal.SIGKILL)
        assert sorted(await asyncio.gather(*waiting)) == [0, 1]
    finally:
        holder.kill()
        holder.wait(5)


async def test_redis_down_fails_closed_with_the_fix_then_recovers(
    tmp_path: Path, new_store: StoreFactory
) -> None:
    server = RedisServer(tmp_path)  # not started yet
    key = server_key()
    store = new_store(server.url(), ttl_s=1.0)
    limiter = SlotLimiter("ep", 1, store=store, key=key)
    assert "unreachable" in (await store.check() or "")
    with pytest.raises(SlotTimeoutError) as failure:
        await limiter.acquire(timeout=0.8)
    message = str(failure.value)
    assert server.url() in message and "unreachable" in message
    assert "start Redis" in message and 'on_store_down = "degrade"' in message
    assert limiter.stats().in_use == 0 and limiter.stats().queued == 0
    # A task waiting while Redis is down gets its slot once Redis is back.
    waiting = asyncio.create_task(limiter.acquire(timeout=20))
    await asyncio.sleep(0.3)
    await asyncio.to_thread(server.start)
    try:
        slot = await waiting
        assert zcard(server, key, "leases") == 1
        # Redis restarts empty mid-run: the holder's heartbeat takes its lease again.
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        await until(lambda: zcard(server, key, "leases") == 1, timeout_s=10)
        limiter.release(slot)
        await until(lambda: zcard(server, key, "leases") == 0)
    finally:
        server.stop()


async def test_degrade_takes_a_share_of_the_slots_and_warns(
    tmp_path: Path, new_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    down = RedisServer(tmp_path)  # never started
    store = new_store(down.url(), on_store_down="degrade", expected_processes=2)
    limiter = SlotLimiter("ep", 4, store=store, key=server_key())
    with caplog.at_level(logging.WARNING, logger="kitty.endpoints"):
        held = [await limiter.acquire(timeout=5), await limiter.acquire(timeout=5)]
        with pytest.raises(SlotTimeoutError):
            await limiter.acquire(timeout=0.3)
    assert "degrading to 2 of 4 slots" in caplog.text
    assert limiter.stats().in_use == 2
    for slot in held:
        limiter.release(slot)
    assert limiter.stats().in_use == 0


async def test_a_shrink_admits_by_leases_held_also_degraded(
    tmp_path: Path, new_store: StoreFactory
) -> None:
    """Security review finding 13 for the Redis limiter: 4 -> 2 with 2 slots busy admits none.

    In Redis the cap is the count of leases (so it held already); degraded, the process's
    share is an in-process limiter, which had the bug.
    """
    shared = SlotLimiter("ep", 4, store=new_store(), key=server_key())
    down = RedisServer(tmp_path)  # never started
    store = new_store(down.url(), on_store_down="degrade", expected_processes=1)
    degraded = SlotLimiter("ep", 4, store=store, key=server_key())
    for limiter in (shared, degraded):
        held = [await limiter.acquire(timeout=5) for _ in range(4)]
        limiter.release(held[0])
        limiter.release(held[1])
        limiter.resize(2)
        with pytest.raises(SlotTimeoutError):
            await limiter.acquire(timeout=0.3)
        assert limiter.stats().in_use == 2
        limiter.release(held[3])
        assert await limiter.acquire(timeout=5) in (0, 1)
        assert limiter.stats().in_use == 2


async def test_refused_credentials_and_a_missing_db_fail_at_start(
    tmp_path: Path, new_store: StoreFactory
) -> None:
    server = RedisServer(tmp_path, password="right-one")
    server.start()
    try:
        wrong = new_store(server.url(password="not-it"))
        with pytest.raises(SettingsError, match="refused the credentials") as failure:
            await wrong.check()
        assert "not-it" not in str(failure.value)
        limiter = SlotLimiter("ep", 1, store=wrong, key=server_key())
        with pytest.raises(SettingsError, match="refused the credentials"):
            await limiter.acquire(timeout=5)
        with pytest.raises(SettingsError, match="no such database"):
            await new_store(server.url(db=99)).check()
        assert await new_store(server.url()).check() is None
    finally:
        server.stop()


async def test_a_cooldown_decided_in_one_process_reaches_the_others(
    redis_server: RedisServer, new_store: StoreFactory
) -> None:
    seen: list[tuple[str, float]] = []
    watcher, teller = new_store(), new_store()
    watcher.watch_cooldowns(lambda key, seconds: seen.append((key, seconds)))
    with redis_server.client() as client:
        await until(lambda: client.pubsub_numsub(f"{PREFIX}:events")[0][1] >= 1)
    key = server_key()
    teller.share_cooldown(key, 30.0)
    await until(lambda: (key, 30.0) in seen)
    teller.share_cooldown(key, 0.0)
    await until(lambda: (key, 0.0) in seen)


async def test_a_waiter_ages_past_newer_higher_priorities_across_processes(
    redis_server: RedisServer, new_store: StoreFactory
) -> None:
    from endpoints.slots._store import AGING_PER_S

    key, a, b = two_processes(new_store, 1)
    held = await b.acquire(timeout=5)
    old = asyncio.create_task(a.acquire(timeout=10, priority=0.0))
    await until(lambda: zcard(redis_server, key, "waiting") == 1)
    await asyncio.sleep(0.6)  # the old waiter gains about 30
    newer = asyncio.create_task(b.acquire(timeout=10, priority=0.2 * AGING_PER_S))  # 10
    await until(lambda: zcard(redis_server, key, "waiting") == 2)
    b.release(held)
    assert await old == 0  # aged past the newcomer's higher priority
    assert not newer.done()
    a.release(0)
    assert await newer == 0
    b.release(0)
