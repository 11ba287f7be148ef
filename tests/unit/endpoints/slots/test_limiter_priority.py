"""SlotLimiter priorities: a higher priority is granted first, FIFO among equals."""

from __future__ import annotations

import asyncio

from endpoints.slots import SlotLimiter
from tests.helpers import settle


async def test_higher_priority_first_then_first_come_first_served() -> None:
    limiter = SlotLimiter("ep", 1)
    held = await limiter.acquire()
    order: list[str] = []

    async def enter(tag: str, priority: float) -> None:
        async with limiter.slot(priority=priority):
            order.append(tag)
            await asyncio.sleep(0)

    tasks = []
    for tag, priority in [("low1", 0), ("low2", 0), ("high1", 5), ("mid", 1), ("high2", 5)]:
        tasks.append(asyncio.create_task(enter(tag, priority)))
        await settle()
    assert limiter.stats().queued == 5
    limiter.release(held)
    await asyncio.gather(*tasks)
    assert order == ["high1", "high2", "mid", "low1", "low2"]


async def test_a_cancelled_priority_waiter_leaves_the_order_intact() -> None:
    limiter = SlotLimiter("ep", 1)
    held = await limiter.acquire()
    first = asyncio.create_task(limiter.acquire(priority=1))
    urgent = asyncio.create_task(limiter.acquire(priority=9))
    await settle()
    urgent.cancel()
    await settle()
    assert limiter.stats().queued == 1
    limiter.release(held)
    assert await first == 0
