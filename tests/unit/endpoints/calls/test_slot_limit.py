"""The slot-limit layer: a call whose lease was lost queues again, unless it was cancelled."""

from __future__ import annotations

import asyncio

import pytest

from endpoints.calls import ModelRequest, ModelSettings, call_tiers
from endpoints.fleet._routing import FleetRuntime
from endpoints.slots import LEASE_LOST
from tests.fake_chat import FakeChat, Reply
from tests.helpers import fleet_config, until


async def test_a_call_cancelled_while_its_lease_is_lost_is_not_sent_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Security review finding 11: the requeue's uncancel() swallowed the run's own cancel
    when both arrived together, and the task then made a whole new call."""
    runtime = FleetRuntime(fleet_config({"tools": ["ep"]}, slots=1))
    chat = FakeChat()
    runtime.model_factory = chat
    chat.script(Reply("first, never finished", delay_s=30), Reply("second"))
    call = asyncio.create_task(
        call_tiers(runtime, ModelRequest(tiers=["tools"], model=ModelSettings(max_tokens=8)), [])
    )
    await until(lambda: len(chat.calls) == 1)
    monkeypatch.setattr(runtime.limiters()["ep"], "was_lost", lambda slot: True)
    call.cancel(LEASE_LOST)  # the slot store stops the holder...
    call.cancel()  # ...and the run is cancelled before the holder runs again

    with pytest.raises(asyncio.CancelledError):
        await call
    assert len(chat.calls) == 1
    assert runtime.limiters()["ep"].stats().in_use == 0


async def test_a_lost_lease_alone_still_requeues_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = FleetRuntime(fleet_config({"tools": ["ep"]}, slots=1))
    chat = FakeChat()
    runtime.model_factory = chat
    chat.script(Reply("first, never finished", delay_s=30), Reply("second"))
    call = asyncio.create_task(
        call_tiers(runtime, ModelRequest(tiers=["tools"], model=ModelSettings(max_tokens=8)), [])
    )
    await until(lambda: len(chat.calls) == 1)
    lost = {"first": True}
    monkeypatch.setattr(runtime.limiters()["ep"], "was_lost", lambda slot: lost.pop("first", False))
    call.cancel(LEASE_LOST)

    outcome = await asyncio.wait_for(call, 10)
    assert outcome.ok and outcome.text == "second"
    assert [c.status for c in outcome.calls] == ["requeued", "ok"]
