"""A slot lease lost in a heartbeat gap: its request stops and queues again; never two
holders beyond the cap. Leases live in a real Redis (``redis-server``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from endpoints.calls import CallLimits, ModelRequest, ModelSettings, call_tiers
from endpoints.config import FleetConfig
from endpoints.fleet._routing import FleetRuntime
from endpoints.runtime import reset_runtime
from endpoints.slots import LEASE_LOST, SlotLimiter, endpoint_key
from endpoints.slots._redis_store import PREFIX, RedisSlotStore
from kitty.errors import SlotTimeoutError
from tests.fake_chat import FakeChat, Reply
from tests.helpers import until
from tests.redis_server import RedisServer

TTL_S = 1.0


@pytest.fixture
def base_url() -> Iterator[str]:
    reset_runtime()
    yield f"http://lease-loss-{uuid.uuid4().hex[:8]}.invalid:8080"
    reset_runtime()


def leases(server: RedisServer, url: str) -> list[str]:
    with server.client() as client:
        return [str(m) for m in client.zrange(f"{PREFIX}:{{{endpoint_key(url)}}}:leases", 0, -1)]


def expire_all(server: RedisServer, url: str) -> None:
    """What a heartbeat gap longer than the TTL does to this process's leases."""
    with server.client() as client:
        client.delete(f"{PREFIX}:{{{endpoint_key(url)}}}:leases")


async def take_over(server: RedisServer, url: str, theirs: SlotLimiter) -> int:
    """Expire the holder's lease and let ``theirs`` take the freed slot.

    The holder's own heartbeat may run between the two steps and take its expired lease
    back while there is room (that is the store's rule); then the gap is simply made again,
    as a longer stall of the holder's heartbeat would.
    """
    for _ in range(10):
        expire_all(server, url)
        try:
            return await theirs.acquire(timeout=1)
        except SlotTimeoutError:
            continue
    raise AssertionError("the holder's heartbeat retook its lease in every gap")


async def test_a_holder_whose_lease_was_taken_is_stopped(
    redis_server: RedisServer, base_url: str
) -> None:
    mine = RedisSlotStore(redis_server.url(), ttl_s=TTL_S)
    other = RedisSlotStore(redis_server.url(), ttl_s=TTL_S)
    try:
        limiter = SlotLimiter("ep", 1, store=mine, key=endpoint_key(base_url))
        theirs = SlotLimiter("ep", 1, store=other, key=endpoint_key(base_url))
        seen: list[tuple[str, bool]] = []

        async def holder() -> None:
            slot = await limiter.acquire(timeout=5)
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError as exc:
                seen.append((str(exc.args[0] if exc.args else ""), limiter.was_lost(slot)))
                raise
            finally:
                limiter.release(slot)

        task = asyncio.create_task(holder())
        await until(lambda: len(leases(redis_server, base_url)) == 1)
        other_slot = await take_over(redis_server, base_url, theirs)  # the cap looks free
        mine.call_soon(mine.poke)  # the heartbeat comes back and finds the lease gone
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert seen == [(LEASE_LOST, True)]
        assert len(leases(redis_server, base_url)) == 1  # the other holder alone
        assert mine.lost_leases == 1
        theirs.release(other_slot)
    finally:
        mine.close()
        other.close()


async def test_a_call_whose_lease_was_lost_is_requeued_and_completes(
    redis_server: RedisServer, base_url: str
) -> None:
    fleet = FleetConfig.model_validate(
        {
            "name": "lease-loss",
            "coordination": {"slot_store": redis_server.url(), "lease_ttl_s": TTL_S},
            "tiers": {
                "tools": {
                    "endpoints": [
                        {"name": "ep", "kind": "llamacpp", "base_url": base_url, "model": "m"}
                        | {"slots": 1}
                    ]
                }
            },
        }
    )
    runtime = FleetRuntime(fleet)
    chat = FakeChat()
    runtime.model_factory = chat
    chat.script(Reply("first, never finished", delay_s=30), Reply("second"))
    other = RedisSlotStore(redis_server.url(), ttl_s=TTL_S)
    try:
        theirs = SlotLimiter("ep", 1, store=other, key=endpoint_key(base_url))
        call = asyncio.create_task(
            call_tiers(
                runtime,
                ModelRequest(
                    tiers=["tools"],
                    model=ModelSettings(max_tokens=8),
                    limits=CallLimits(slot_timeout_s=10),
                ),
                [],
            )
        )
        await until(lambda: len(chat.calls) == 1)
        other_slot = await take_over(redis_server, base_url, theirs)
        runtime.store.call_soon(runtime.store.poke)  # type: ignore[attr-defined]
        await until(lambda: chat.calls[0].finished_at is not None)
        await asyncio.sleep(0.3)
        assert len(chat.calls) == 1  # queued again behind the other holder, not running
        assert len(leases(redis_server, base_url)) == 1
        theirs.release(other_slot)
        outcome = await asyncio.wait_for(call, 10)
    finally:
        other.close()
    assert outcome.ok and outcome.text == "second"
    assert [c.status for c in outcome.calls] == ["requeued", "ok"]
    assert outcome.calls[0].error == LEASE_LOST
