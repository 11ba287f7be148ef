"""Redis restarting empty: no slot goes to another process while its holder still has it.

Leases live only in Redis's memory (no persistence). After a restart that lost them, a
lease granted before may still be held until its expiry, at most one TTL after Redis
started; until then the scripts grant nothing new and holders take their leases back.
Leases live in a real ``redis-server`` restarted by the test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from endpoints.slots import SlotLimiter, endpoint_key
from endpoints.slots._redis_store import PREFIX, RedisSlotStore
from tests.helpers import until
from tests.redis_server import RedisServer

TTL_S = 2.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` of this test alone (it is restarted)."""
    started = RedisServer(tmp_path)
    started.start()
    yield started
    started.stop()


@pytest.fixture
def stores(server: RedisServer) -> Iterator[list[RedisSlotStore]]:
    """Two stores on ``server``, each standing for a process; closed after the test."""
    made = [RedisSlotStore(server.url(), ttl_s=TTL_S) for _ in range(2)]
    yield made
    for store in made:
        store.close()


def leases(server: RedisServer, key: str) -> list[str]:
    with server.client() as client:
        return [str(m) for m in client.zrange(f"{PREFIX}:{{{key}}}:leases", 0, -1)]


def waiting(server: RedisServer, key: str) -> int:
    with server.client() as client:
        return int(client.zcard(f"{PREFIX}:{{{key}}}:waiting"))


async def restart(server: RedisServer) -> None:
    """Stop and start Redis: every lease, waiter and counter is gone."""
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)


def new_key() -> str:
    return endpoint_key(f"http://restart-{uuid.uuid4().hex[:8]}.invalid:8080")


def past_the_window(server: RedisServer, key: str) -> bool:
    """True once Redis's clock is a heartbeat past the time its epoch opened the grants."""
    with server.client() as client:
        opens = client.get(f"{PREFIX}:{{{key}}}:epoch")
        seconds, micros = client.time()
    return opens is not None and seconds * 1000 + micros // 1000 > int(opens) + TTL_S * 1000 / 2


def owners(server: RedisServer, key: str) -> list[str]:
    """The process id of each lease holder (a lease id is ``<process id>:<n>``)."""
    return [lease.rsplit(":", 1)[0] for lease in leases(server, key)]


@pytest.mark.parametrize("b_ran_before", [False, True], ids=["b-new", "b-running"])
async def test_a_restart_grants_nothing_to_others_before_the_holder_is_back(
    server: RedisServer, stores: list[RedisSlotStore], b_ran_before: bool
) -> None:
    """Security review finding 15: A holds the only slot, Redis restarts empty, B asks.

    B must not get the slot while A still holds it (A takes its lease back), A must not
    be stopped as having lost it, and B gets the slot once A releases it.
    """
    mine, other = stores
    key = new_key()
    a = SlotLimiter("ep", 1, store=mine, key=key)
    b = SlotLimiter("ep", 1, store=other, key=key)
    if b_ran_before:  # B's process had used the store before the restart
        b.release(await b.acquire(timeout=10))
        await until(lambda: leases(server, key) == [])
    done = asyncio.Event()

    async def holder() -> None:
        async with a.slot(timeout=10):
            await done.wait()

    holding = asyncio.create_task(holder())
    await until(lambda: owners(server, key) == [mine.process_id])
    await restart(server)
    assert leases(server, key) == []
    taker = asyncio.create_task(b.acquire(timeout=30))
    await until(lambda: waiting(server, key) == 1 or taker.done())
    assert not taker.done()
    await until(lambda: past_the_window(server, key), timeout_s=3 * TTL_S + 5)
    assert not taker.done()
    assert owners(server, key) == [mine.process_id]  # A took its lease back
    assert not holding.done() and mine.lost_leases == 0
    done.set()
    await asyncio.wait_for(holding, 10)
    assert await asyncio.wait_for(taker, 10) == 0
    assert owners(server, key) == [other.process_id]


async def test_a_slot_given_back_right_after_a_restart_reaches_the_waiter(
    server: RedisServer, stores: list[RedisSlotStore]
) -> None:
    """Security review finding 15: the grants held after a restart resume (no deadlock).

    A releases before its heartbeat took its lease back: B, queued meanwhile, gets the slot
    when the restart's window ends (its process wakes for it).
    """
    mine, other = stores
    key = new_key()
    a = SlotLimiter("ep", 1, store=mine, key=key)
    b = SlotLimiter("ep", 1, store=other, key=key)
    held = await a.acquire(timeout=10)
    await restart(server)
    taker = asyncio.create_task(b.acquire(timeout=30))
    await until(lambda: waiting(server, key) == 1 or taker.done())
    a.release(held)
    assert await asyncio.wait_for(taker, 10) == 0
    assert mine.lost_leases == 0
