"""SlotLimiter: fair FIFO admission control per endpoint."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from endpoints.runtime import limiter_for
from endpoints.slots import SlotLimiter, SlotTimeoutError
from tests.helpers import settle

T = TypeVar("T")


async def held_with_waiters(count: int) -> tuple[SlotLimiter, int, list[asyncio.Task[int]]]:
    """A 1-slot limiter whose slot is held, and ``count`` acquires queued behind it.

    Returns:
        The limiter, the held slot and the queued acquire tasks.
    """
    limiter = SlotLimiter("ep", 1)
    held = await limiter.acquire()
    waiters = [asyncio.create_task(limiter.acquire()) for _ in range(count)]
    await settle()
    return limiter, held, waiters


def entrant(limiter: SlotLimiter, order: list[T]) -> Callable[[T], Coroutine[Any, Any, None]]:
    """A coroutine function that takes a slot and notes its tag in ``order`` on entry."""

    async def enter(tag: T) -> None:
        async with limiter.slot():
            order.append(tag)
            await asyncio.sleep(0)  # hold the slot across a switch, as real work does

    return enter


async def test_immediate_acquire_and_release() -> None:
    limiter = SlotLimiter("ep", 2)
    a = await limiter.acquire()
    b = await limiter.acquire()
    assert {a, b} == {0, 1}
    stats = limiter.stats()
    assert stats.in_use == 2
    assert stats.queued == 0
    limiter.release(a)
    limiter.release(b)
    assert limiter.stats().in_use == 0
    assert limiter.stats().peak_in_use == 2
    # Releasing twice (or an unknown slot) is harmless.
    limiter.release(a)
    assert limiter.stats().in_use == 0


async def test_lowest_free_slot_first() -> None:
    limiter = SlotLimiter("ep", 3)
    slots = [await limiter.acquire() for _ in range(3)]
    assert slots == [0, 1, 2]
    limiter.release(1)
    assert await limiter.acquire() == 1


async def test_fifo_order() -> None:
    limiter = SlotLimiter("ep", 1)
    first = await limiter.acquire()
    order: list[int] = []
    waiter = entrant(limiter, order)
    tasks = []
    for i in range(10):
        tasks.append(asyncio.create_task(waiter(i)))
        await settle()  # each one queues before the next arrives
    assert limiter.stats().queued == 10
    limiter.release(first)
    await asyncio.gather(*tasks)
    assert order == list(range(10))
    stats = limiter.stats()
    assert stats.waited == 10
    assert stats.in_use == 0
    assert stats.max_wait_s >= 0


async def test_newcomer_does_not_overtake_queue() -> None:
    limiter = SlotLimiter("ep", 1)
    held = await limiter.acquire()
    order: list[str] = []
    take = entrant(limiter, order)
    queued = asyncio.create_task(take("queued"))
    await settle()
    limiter.release(held)
    # The slot now belongs to the queued waiter even before it has run.
    late = asyncio.create_task(take("late"))
    await asyncio.gather(queued, late)
    assert order == ["queued", "late"]


async def test_acquire_timeout_message() -> None:
    limiter = SlotLimiter("athene-q4", 1)
    held = await limiter.acquire()
    with pytest.raises(SlotTimeoutError) as info:
        await limiter.acquire(timeout=0.05)
    message = str(info.value)
    assert "athene-q4" in message
    assert "0.05s" in message
    assert "slots" in message  # says what to do: more slots / longer timeout
    assert isinstance(info.value, TimeoutError)
    stats = limiter.stats()
    assert stats.queued == 0
    assert stats.in_use == 1
    limiter.release(held)
    assert await limiter.acquire(timeout=0.05) == 0


async def test_cancel_while_queued_takes_nothing() -> None:
    limiter, held, [task] = await held_with_waiters(1)
    assert limiter.stats().queued == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = limiter.stats()
    assert stats.queued == 0
    assert stats.in_use == 1  # the holder still holds; nothing was released by mistake
    limiter.release(held)
    assert limiter.stats().in_use == 0
    assert await limiter.acquire(timeout=0.1) == 0


async def test_cancel_right_after_grant_returns_the_slot() -> None:
    limiter, held, [task] = await held_with_waiters(1)
    limiter.release(held)  # hands the slot to the queued task...
    task.cancel()  # ...which is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = limiter.stats()
    assert stats.in_use == 0
    assert stats.queued == 0
    assert await limiter.acquire(timeout=0.1) == 0


async def test_cancel_while_holding_releases() -> None:
    limiter = SlotLimiter("ep", 1)
    entered = asyncio.Event()

    async def hold() -> None:
        async with limiter.slot():
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(hold())
    await entered.wait()
    assert limiter.stats().in_use == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.stats().in_use == 0


async def test_exception_in_block_releases() -> None:
    limiter = SlotLimiter("ep", 1)
    with pytest.raises(RuntimeError):
        async with limiter.slot():
            raise RuntimeError("model call failed")
    assert limiter.stats().in_use == 0


async def test_thousand_acquirers_never_exceed_capacity() -> None:
    capacity = 7
    limiter = SlotLimiter("ep", capacity)
    holders = 0
    max_holders = 0
    seen_slots: set[int] = set()

    async def worker(i: int) -> None:
        nonlocal holders, max_holders
        async with limiter.slot() as slot:
            holders += 1
            max_holders = max(max_holders, holders)
            seen_slots.add(slot)
            await asyncio.sleep(0 if i % 3 else 0.001)
            holders -= 1

    await asyncio.gather(*(worker(i) for i in range(1000)))
    stats = limiter.stats()
    assert max_holders <= capacity
    assert max_holders == capacity  # the cap was actually reached
    assert stats.peak_in_use == capacity
    assert stats.acquired == 1000
    assert stats.in_use == 0
    assert stats.queued == 0
    assert seen_slots == set(range(capacity))


def test_usable_from_two_event_loops_in_turn() -> None:
    limiter = SlotLimiter("ep", 2)

    async def burst() -> int:
        async def one() -> None:
            async with limiter.slot():
                await asyncio.sleep(0.001)

        await asyncio.gather(*(one() for _ in range(10)))
        return limiter.stats().in_use

    assert asyncio.run(burst()) == 0
    assert asyncio.run(burst()) == 0  # a new loop: no "bound to a different loop" error
    stats = limiter.stats()
    assert stats.acquired == 20
    assert stats.peak_in_use == 2


def test_release_from_another_loop_wakes_waiter() -> None:
    limiter = SlotLimiter("ep", 1)
    acquired = threading.Event()
    release = threading.Event()

    def holder() -> None:
        async def run() -> None:
            slot = await limiter.acquire()
            acquired.set()
            await asyncio.to_thread(release.wait)
            limiter.release(slot)

        asyncio.run(run())

    thread = threading.Thread(target=holder)
    thread.start()
    assert acquired.wait(5)

    async def wait_for_slot() -> int:
        task = asyncio.create_task(limiter.acquire(timeout=5))
        await asyncio.sleep(0.01)
        assert limiter.stats().queued == 1
        release.set()
        return await task

    assert asyncio.run(wait_for_slot()) == 0
    thread.join(5)
    limiter.release(0)
    assert limiter.stats().in_use == 0


async def test_resize_grow_admits_waiters() -> None:
    limiter, held, waiters = await held_with_waiters(2)
    assert limiter.stats().queued == 2
    limiter.resize(3)
    slots = await asyncio.wait_for(asyncio.gather(*waiters), timeout=1)
    assert sorted(slots) == [1, 2]
    assert limiter.capacity == 3
    for slot in [held, *slots]:
        limiter.release(slot)
    assert limiter.stats().in_use == 0


async def test_resize_shrink_retires_high_slots() -> None:
    limiter = SlotLimiter("ep", 3)
    slots = [await limiter.acquire() for _ in range(3)]
    limiter.resize(1)
    assert limiter.capacity == 1
    limiter.release(2)
    limiter.release(1)
    # Slots above the new capacity are retired, not handed out again.
    with pytest.raises(SlotTimeoutError):
        await limiter.acquire(timeout=0.02)
    limiter.release(slots[0])
    assert await limiter.acquire(timeout=0.1) == 0
    assert limiter.stats().in_use == 1


@pytest.mark.parametrize(
    "release_first", [True, False], ids=["freed-then-shrunk", "shrunk-then-freed"]
)
async def test_a_shrink_admits_by_slots_in_use_not_by_free_numbers(release_first: bool) -> None:
    """Security review finding 13: 4 -> 2 with slots 2 and 3 busy must not admit 2 more.

    Free low numbers are kept while higher ones are busy: the cap is the count in use,
    and a grant takes a number below the new capacity.
    """
    limiter = SlotLimiter("ep", 4)
    held = [await limiter.acquire() for _ in range(4)]
    if not release_first:
        limiter.resize(2)
    limiter.release(held[0])
    limiter.release(held[1])
    if release_first:
        limiter.resize(2)
    waiters = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
    await settle()
    in_use = [limiter.stats().in_use]
    assert not any(w.done() for w in waiters)
    for slot in (3, 2):  # each release of a retired slot lets one waiter in
        limiter.release(slot)
        await settle()
        in_use.append(limiter.stats().in_use)
    assert in_use == [2, 2, 2]
    granted = [w.result() for w in waiters if w.done()]
    assert sorted(granted) == [0, 1]  # numbers below the new capacity
    limiter.release(granted[0])
    assert await asyncio.wait_for(asyncio.gather(*waiters), timeout=1) is not None
    assert limiter.stats().in_use == 2


def test_invalid_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SlotLimiter("ep", 0)
    limiter = SlotLimiter("ep", 1)
    with pytest.raises(ValueError, match="capacity"):
        limiter.resize(0)


def test_load_counts_holders_and_queue() -> None:
    limiter = SlotLimiter("ep", 2)

    async def run() -> float:
        a = await limiter.acquire()
        load_one = limiter.load
        limiter.release(a)
        return load_one

    assert asyncio.run(run()) == 0.5
    assert limiter.load == 0.0


def test_limiter_for_is_shared_per_server() -> None:
    key = "http://limiter-test.invalid:1"
    first = limiter_for(key, "x", 3)
    assert first.capacity == 3
    second = limiter_for(key, "y", 9)  # the fleet file now says 9: resized, still shared
    assert first is second
    assert first.capacity == 9
