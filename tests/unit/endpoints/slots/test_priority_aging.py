"""Aging of slot priorities: a stream of urgent arrivals cannot starve a waiter."""

from __future__ import annotations

import asyncio

import pytest

from endpoints.slots import _store as slot_store
from endpoints.slots._store import AGING_PER_S, LocalSlots

DEFAULT_SLOT_TIMEOUT_S = 600.0
URGENT = 20_000.0  # a 20-task chain of 1024-token tasks, against a leaf at 0


async def _grant_time_under_a_stream(step_s: float = 10.0, steps: int = 200) -> float | None:
    """Fake seconds until a priority-0 waiter gets the one slot, or None if it never does.

    Every ``step_s`` a new urgent waiter arrives and the holder releases the slot.
    """
    now = [0.0]
    slots = LocalSlots("e", 1, clock=lambda: now[0])
    slot = await slots.acquire()
    low = asyncio.create_task(slots.acquire(priority=0.0))
    await asyncio.sleep(0)
    urgent: list[asyncio.Task[int]] = []
    try:
        for _ in range(steps):
            now[0] += step_s
            urgent.append(asyncio.create_task(slots.acquire(priority=URGENT)))
            await asyncio.sleep(0)
            slots.release(slot)
            for _ in range(3):  # the grant is delivered through the loop
                await asyncio.sleep(0)
            if low.done():
                return now[0]
        return None
    finally:
        for task in [low, *urgent]:
            task.cancel()
        await asyncio.gather(low, *urgent, return_exceptions=True)


async def test_a_stream_of_urgent_arrivals_cannot_starve_a_waiter() -> None:
    granted_at = await _grant_time_under_a_stream()
    assert granted_at is not None
    # Passed only while an arrival's lead exceeds what the waiter gained by waiting.
    assert granted_at <= URGENT / AGING_PER_S + 2 * 10.0
    assert granted_at <= DEFAULT_SLOT_TIMEOUT_S


async def test_without_aging_the_same_stream_starves_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slot_store, "AGING_PER_S", 0.0)
    assert await _grant_time_under_a_stream() is None


async def test_priority_still_wins_over_a_short_wait() -> None:
    now = [0.0]
    slots = LocalSlots("e", 1, clock=lambda: now[0])
    slot = await slots.acquire()
    order: list[str] = []

    async def enter(tag: str, priority: float) -> None:
        got = await slots.acquire(priority=priority)
        order.append(tag)
        slots.release(got)

    leaf = asyncio.create_task(enter("leaf", 100.0))
    await asyncio.sleep(0)
    now[0] += 5.0  # the leaf gained 250: less than the chain's lead of 2900
    chain = asyncio.create_task(enter("chain", 3000.0))
    await asyncio.sleep(0)
    slots.release(slot)
    await asyncio.gather(leaf, chain)
    assert order == ["chain", "leaf"]
