"""Least attained service across runs and the FIFO switch, in-process and through Redis.

A run's attained service (slot-seconds it held) lowers the priority its waiters queue
with, so across runs the one that has used the least goes first; ``order="fifo"``
grants strictly in arrival order. The Redis ledger is shared: two stores stand for two
processes and see the same figure.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from endpoints.slots import SlotLimiter
from endpoints.slots._attained_service import (
    LAS_MAX_TOKENS,
    LAS_TOKENS_PER_SLOT_S,
    LocalLedger,
    RedisLedger,
    las_penalty,
)
from endpoints.slots._redis_store import PREFIX, RedisSlotStore
from endpoints.slots._store import LocalSlotStore, endpoint_key
from graph import Plan, arun_goal
from graph.context import Context
from kitty.errors import SettingsError
from tests.conftest import FakeFleet
from tests.helpers import settle, simple_task, until
from tests.redis_server import RedisServer


async def grant_order(
    limiter: SlotLimiter, waiters: list[tuple[str, dict[str, object]]]
) -> list[str]:
    """Hold the only slot, queue ``waiters`` (tag, acquire kwargs) in order, release: tags."""
    held = await limiter.acquire()
    order: list[str] = []

    async def enter(tag: str, kwargs: dict[str, object]) -> None:
        number = await limiter.acquire(**kwargs)  # type: ignore[arg-type]
        order.append(tag)
        await asyncio.sleep(0)
        limiter.release(number)

    tasks = []
    for tag, kwargs in waiters:
        tasks.append(asyncio.create_task(enter(tag, kwargs)))
        await settle()
    limiter.release(held)
    await asyncio.gather(*tasks)
    return order


# --------------------------------------------------------------------------- the score


def test_the_penalty_is_tokens_per_slot_second_and_capped() -> None:
    assert las_penalty(0.0) == 0.0
    assert las_penalty(2.0) == 2 * LAS_TOKENS_PER_SLOT_S
    assert las_penalty(1e9) == LAS_MAX_TOKENS


def test_the_local_ledger_adds_and_forgets_idle_runs() -> None:
    now = [100.0]
    ledger = LocalLedger(ttl_s=10.0, clock=lambda: now[0])
    ledger.add("a", 1.5)
    ledger.add("a", 0.5)
    assert ledger.seconds("a") == 2.0
    assert ledger.seconds("never") == 0.0
    now[0] += 11.0
    assert ledger.seconds("a") == 0.0


# --------------------------------------------------------------------------- in-process


async def test_the_run_with_less_attained_service_is_granted_first() -> None:
    store = LocalSlotStore()
    limiter = SlotLimiter("ep", 1, store=store)
    store.ledger.add("big", 3.0)  # the big goal already held slots for 3 s
    order = await grant_order(
        limiter,
        [
            ("big-chain", {"priority": 2000.0, "run": "big"}),  # longer path, queued first
            ("small", {"priority": 300.0, "run": "small"}),
        ],
    )
    assert order == ["small", "big-chain"]


async def test_service_gained_while_waiting_counts_at_the_grant() -> None:
    store = LocalSlotStore()
    limiter = SlotLimiter("ep", 1, store=store)
    held = await limiter.acquire()
    order: list[str] = []

    async def enter(tag: str, priority: float, run: str) -> None:
        number = await limiter.acquire(priority=priority, run=run)
        order.append(tag)
        limiter.release(number)

    chain = asyncio.create_task(enter("big-chain", 2000.0, "big"))
    await settle()
    leaf = asyncio.create_task(enter("small", 300.0, "small"))
    await settle()
    store.ledger.add("big", 3.0)  # the big run's other tasks finished meanwhile
    limiter.release(held)
    await asyncio.gather(chain, leaf)
    assert order == ["small", "big-chain"]


async def test_within_a_run_the_critical_path_still_orders() -> None:
    store = LocalSlotStore()
    limiter = SlotLimiter("ep", 1, store=store)
    store.ledger.add("r", 1.0)
    order = await grant_order(
        limiter,
        [("leaf", {"priority": 100.0, "run": "r"}), ("chain", {"priority": 900.0, "run": "r"})],
    )
    assert order == ["chain", "leaf"]


async def test_release_adds_the_held_seconds_to_the_run() -> None:
    store = LocalSlotStore()
    limiter = SlotLimiter("ep", 2, store=store)
    number = await limiter.acquire(run="r")
    await asyncio.sleep(0.01)
    limiter.release(number)
    other = await limiter.acquire()  # no run: nothing is counted
    limiter.release(other)
    assert store.ledger.seconds("r") > 0  # type: ignore[attr-defined]
    assert await store.ledger.attained("") == 0.0


async def test_fifo_grants_in_arrival_order_ignoring_priority_and_service() -> None:
    store = LocalSlotStore()
    limiter = SlotLimiter("ep", 1, store=store)
    store.ledger.add("served", 9.0)
    order = await grant_order(
        limiter,
        [
            ("served-leaf", {"priority": 0.0, "run": "served", "order": "fifo"}),
            ("fresh-chain", {"priority": 5000.0, "run": "fresh", "order": "fifo"}),
            ("middle", {"priority": 50.0, "order": "fifo"}),
        ],
    )
    assert order == ["served-leaf", "fresh-chain", "middle"]


def test_slot_order_is_a_run_setting() -> None:
    assert Context().slot_order == "priority"
    assert Context.build(slot_order="fifo").slot_order == "fifo"
    with pytest.raises(SettingsError, match="slot_order"):
        Context.build(slot_order="random")


# --------------------------------------------------------------------------- Redis


@pytest.fixture
def two_stores(redis_server: RedisServer) -> Iterator[tuple[RedisSlotStore, RedisSlotStore]]:
    """Two stores on one Redis: two processes sharing a fleet.

    Their TTL is short: a Redis just started grants nothing to waiters for one TTL.
    """
    url = redis_server.url()
    stores = (RedisSlotStore(url, ttl_s=2.0), RedisSlotStore(url, ttl_s=2.0))
    yield stores
    for store in stores:
        store.close()


async def test_attained_service_is_shared_through_redis_with_an_expiry(
    redis_server: RedisServer, two_stores: tuple[RedisSlotStore, RedisSlotStore]
) -> None:
    first, second = two_stores
    run = f"run-{uuid.uuid4().hex[:8]}"
    key = endpoint_key(f"http://las-{uuid.uuid4().hex[:6]}:8080")
    limiter = SlotLimiter("ep", 1, store=first, key=key)
    number = await limiter.acquire(timeout=5, run=run)
    await asyncio.sleep(0.05)
    limiter.release(number)
    client = redis_server.client()
    await until(lambda: client.get(RedisLedger.key(run)) is not None)
    assert await second.ledger.attained(run) > 0  # the other process sees it
    assert client.pttl(RedisLedger.key(run)) > 0  # and it expires


async def test_least_attained_service_orders_waiters_of_two_processes(
    redis_server: RedisServer, two_stores: tuple[RedisSlotStore, RedisSlotStore]
) -> None:
    first, second = two_stores
    big, small = f"big-{uuid.uuid4().hex[:6]}", f"small-{uuid.uuid4().hex[:6]}"
    key = endpoint_key(f"http://las-{uuid.uuid4().hex[:6]}:8080")
    a = SlotLimiter("ep", 1, store=first, key=key)
    b = SlotLimiter("ep", 1, store=second, key=key)
    second.ledger.add(big, 3.0)  # the big goal's service, recorded by one process ...
    client = redis_server.client()
    await until(lambda: client.get(RedisLedger.key(big)) is not None)
    held = await b.acquire(timeout=5)
    order: list[str] = []

    def waiting() -> int:
        return int(client.zcard(f"{PREFIX}:{{{key}}}:waiting"))

    async def enter(limiter: SlotLimiter, tag: str, priority: float, run: str) -> None:
        number = await limiter.acquire(timeout=10, priority=priority, run=run)
        order.append(tag)
        limiter.release(number)

    # ... and read by the other: its longer chain, queued first, still goes second.
    chain = asyncio.create_task(enter(a, "big-chain", 2000.0, big))
    await until(lambda: waiting() == 1)
    leaf = asyncio.create_task(enter(b, "small", 300.0, small))
    await until(lambda: waiting() == 2)
    b.release(held)
    await asyncio.gather(chain, leaf)
    assert order == ["small", "big-chain"]


# --------------------------------------------------------------------------- in a graph run


async def test_a_run_hands_its_id_and_slot_order_to_the_limiter(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[object, object]] = []
    original = SlotLimiter.acquire

    async def recording(self: SlotLimiter, timeout: float | None = None, **kwargs: Any) -> int:
        seen.append((kwargs.get("run"), kwargs.get("order")))
        return await original(self, timeout, **kwargs)

    monkeypatch.setattr(SlotLimiter, "acquire", recording)
    plan = Plan(tasks=[simple_task("a"), simple_task("b")])
    result = await arun_goal(
        "Goal", plan=plan, fleet=fake_fleet.path, voice=False, slot_order="fifo"
    )
    assert [run for run, _ in seen] == [result.run_id] * 3  # both tasks and the synthesis
    assert {order for _, order in seen} == {"fifo"}


async def test_every_call_of_a_run_counts_to_it(fake_fleet: FakeFleet) -> None:
    """Planner, tasks, synthesis and summary all carry the run id: their slot time is
    the run's attained service."""
    result = await arun_goal("Research cats and write code", fleet=fake_fleet.path, voice=True)
    phases = {call.phase for call in fake_fleet.chat.calls}
    assert phases == {"planner", "task", "synthesizer", "summarizer"}
    runs = {call.phase: call.metadata.get("kitty_run_id") for call in fake_fleet.chat.calls}
    assert runs == dict.fromkeys(phases, result.run_id)
