"""Each call wrapper alone, around a scripted sender: slot limit, fallback, busy retry and
slow versus down. Without the wrapper under test, each of these would fail.

No server runs (see the ``fake_fleet`` fixture); probes and ``/slots`` reads are replaced
where a test needs a live (or a dead) server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from endpoints.calls import (
    Attempt,
    AttemptFailed,
    BusyRetry,
    CallLimits,
    Fallback,
    ModelRequest,
    SlotLimited,
    SlowOrDown,
)
from endpoints.clients import llamacpp as engine
from endpoints.clients import probes
from endpoints.config import EndpointConfig
from endpoints.fleet import EndpointHandle, FleetRuntime, get_runtime
from kitty.errors import PromptTooLong, SlotTimeoutError
from tests.conftest import FakeFleet
from tests.fake_chat import connect_error, http_error

HI: list[BaseMessage] = [HumanMessage("hi")]


class ScriptedSender:
    """A sender answering from a script, one entry per send: an answer or an error.

    Attributes:
        sent: The endpoint of every send, in order.
        peak: Most sends under way at once.
    """

    def __init__(self, *script: str | BaseException, delay_s: float = 0.0) -> None:
        self.script = list(script)
        self.delay_s = delay_s
        self.sent: list[str] = []
        self.peak = 0
        self._running = 0

    async def send(self, attempt: Attempt) -> BaseMessage:
        self.sent.append(attempt.handle.name)
        entry = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self._running += 1
        self.peak = max(self.peak, self._running)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self._running -= 1
        if isinstance(entry, BaseException):
            raise entry
        return AIMessage(content=entry)


def runtime_of(fake_fleet: FakeFleet) -> FleetRuntime:
    return get_runtime(fake_fleet.path)


def handle(runtime: FleetRuntime, tier: str) -> EndpointHandle:
    (only,) = runtime.handles(tier)
    return only


def attempt_on(handle: EndpointHandle, **request: Any) -> Attempt:
    return Attempt(handle, ModelRequest(tiers=[handle.tier], **request), HI)


# --------------------------------------------------------------------------- slot limit


async def test_the_slot_limit_holds_the_endpoints_cap_and_releases_every_slot(
    fake_fleet: FakeFleet,
) -> None:
    vision = handle(runtime_of(fake_fleet), "vision")  # 2 slots
    inner = ScriptedSender("ok", delay_s=0.1)
    limited = SlotLimited(inner)

    attempts = [attempt_on(vision) for _ in range(4)]
    answers = await asyncio.gather(*(limited.send(a) for a in attempts))

    assert [a.content for a in answers] == ["ok"] * 4
    assert inner.peak == 2  # without the limit all four would run at once
    assert vision.limiter.stats().in_use == 0
    assert [[c.status for c in a.calls] for a in attempts] == [["ok"]] * 4
    assert {a.slot for a in attempts} == {0, 1}


async def test_the_slot_limit_releases_the_slot_of_a_failed_request(
    fake_fleet: FakeFleet,
) -> None:
    vision = handle(runtime_of(fake_fleet), "vision")
    limited = SlotLimited(ScriptedSender(AttemptFailed("down", "fake-vision: gone")))
    attempt = attempt_on(vision)

    with pytest.raises(AttemptFailed):
        await limited.send(attempt)

    assert vision.limiter.stats().in_use == 0
    assert [(c.status, c.error) for c in attempt.calls] == [("down", "fake-vision: gone")]


async def test_the_slot_limit_gives_up_after_the_slot_wait(fake_fleet: FakeFleet) -> None:
    vision = handle(runtime_of(fake_fleet), "vision")
    held = [await vision.limiter.acquire() for _ in range(2)]
    inner = ScriptedSender("never sent")
    attempt = attempt_on(vision, limits=CallLimits(slot_timeout_s=0.05))

    with pytest.raises(SlotTimeoutError):
        await SlotLimited(inner).send(attempt)

    assert inner.sent == [] and attempt.calls == [] and attempt.queued_s >= 0.05
    for slot in held:
        vision.limiter.release(slot)


# --------------------------------------------------------------------------- fallback


async def test_fallback_moves_to_the_next_tier_when_an_endpoint_fails(
    fake_fleet: FakeFleet,
) -> None:
    runtime = runtime_of(fake_fleet)
    inner = ScriptedSender(AttemptFailed("down", "fake-tools: cannot connect"), "from reasoning")

    outcome = await Fallback(runtime, inner).call(ModelRequest(tiers=["tools", "reasoning"]), HI)

    assert outcome.ok and outcome.text == "from reasoning"
    assert inner.sent == ["fake-tools", "fake-reasoning"]
    assert outcome.attempts == ["fake-tools", "fake-reasoning"]
    assert outcome.endpoint == "fake-reasoning" and outcome.fallback_used


async def test_fallback_stops_at_a_rejected_request(fake_fleet: FakeFleet) -> None:
    runtime = runtime_of(fake_fleet)
    inner = ScriptedSender(AttemptFailed("rejected", "fake-tools: request rejected"), "unused")

    outcome = await Fallback(runtime, inner).call(ModelRequest(tiers=["tools", "reasoning"]), HI)

    assert not outcome.ok and outcome.error == "fake-tools: request rejected"
    assert inner.sent == ["fake-tools"]


async def test_fallback_skips_an_endpoint_the_prompt_does_not_fit(fake_fleet: FakeFleet) -> None:
    runtime = runtime_of(fake_fleet)
    inner = ScriptedSender("fits here")

    async def messages(endpoint: EndpointConfig) -> Sequence[BaseMessage]:
        if endpoint.name == "fake-tools":
            raise PromptTooLong("too long for this one")
        return HI

    outcome = await Fallback(runtime, inner).call(
        ModelRequest(tiers=["tools", "reasoning"]), messages
    )

    assert outcome.ok and inner.sent == ["fake-reasoning"]
    assert outcome.attempts == ["fake-tools", "fake-reasoning"]


async def test_fallback_says_every_endpoint_failed(fake_fleet: FakeFleet) -> None:
    runtime = runtime_of(fake_fleet)
    inner = ScriptedSender(AttemptFailed("down", "gone"))

    outcome = await Fallback(runtime, inner).call(ModelRequest(tiers=["tools", "reasoning"]), HI)

    assert not outcome.ok
    assert outcome.error == "all endpoints failed (tried fake-tools, fake-reasoning); last: gone"


# --------------------------------------------------------------------------- busy retry


async def test_busy_retry_asks_a_busy_server_again(fake_fleet: FakeFleet) -> None:
    tools = handle(runtime_of(fake_fleet), "tools")
    busy = http_error(503)(tools.config)
    inner = ScriptedSender(busy, busy, "at last")

    answer = await BusyRetry(inner, backoff_s=0.0).send(attempt_on(tools))

    assert answer.content == "at last" and len(inner.sent) == 3


async def test_busy_retry_gives_up_after_its_retries_and_never_retries_other_errors(
    fake_fleet: FakeFleet,
) -> None:
    tools = handle(runtime_of(fake_fleet), "tools")
    busy = http_error(503)(tools.config)
    inner = ScriptedSender(busy)
    with pytest.raises(type(busy)):
        await BusyRetry(inner, backoff_s=0.0).send(
            attempt_on(tools, limits=CallLimits(busy_retries=2))
        )
    assert len(inner.sent) == 3

    refused = ScriptedSender(connect_error(tools.config))
    with pytest.raises(type(connect_error(tools.config))):
        await BusyRetry(refused, backoff_s=0.0).send(attempt_on(tools))
    assert len(refused.sent) == 1


# --------------------------------------------------------------------------- slow vs down


def probe_says(monkeypatch: pytest.MonkeyPatch, health: str) -> list[str]:
    """The quick health probe answers ``health``; ``/slots`` is not there (nothing to wait)."""
    probed: list[str] = []

    async def quick_health(endpoint: EndpointConfig, **kwargs: Any) -> str:
        probed.append(endpoint.name)
        return health

    async def no_slots(*args: Any, **kwargs: Any) -> int | None:
        return None

    monkeypatch.setattr(probes, "quick_health", quick_health)
    monkeypatch.setattr(engine, "busy_slots", no_slots)
    return probed


async def send_once(runtime: FleetRuntime, handle: EndpointHandle, error: BaseException) -> Any:
    attempt = attempt_on(handle)
    attempt.begin_request(0)
    with pytest.raises(AttemptFailed) as failed:
        await SlowOrDown(runtime, ScriptedSender(error)).send(attempt)
    assert [c.status for c in attempt.calls] == [failed.value.status]
    return failed.value


async def test_a_timeout_of_a_live_server_is_slow_and_benches_nothing(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtime_of(fake_fleet)
    vision = handle(runtime, "vision")
    probed = probe_says(monkeypatch, "up")

    for _ in range(runtime.failure_threshold + 1):
        failed = await send_once(runtime, vision, TimeoutError())
        assert failed.status == "slow" and "slow, not down" in failed.error

    assert probed == ["fake-vision"] * (runtime.failure_threshold + 1)
    assert vision.health.slow_calls == runtime.failure_threshold + 1
    assert vision.health.consecutive_failures == 0 and not vision.health.cooling_down()


async def test_a_timeout_of_a_dead_server_and_a_refused_connection_are_down(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtime_of(fake_fleet)
    vision = handle(runtime, "vision")
    probed = probe_says(monkeypatch, "down")

    assert (await send_once(runtime, vision, TimeoutError())).status == "down"
    assert (await send_once(runtime, vision, connect_error(vision.config))).status == "down"

    assert probed == ["fake-vision"]  # a refused connection needs no probe
    assert vision.health.cooling_down() and vision.health.slow_calls == 0


async def test_a_rejected_request_counts_against_no_server_and_success_resets_failures(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtime_of(fake_fleet)
    tools = handle(runtime, "tools")
    probe_says(monkeypatch, "up")
    assert (await send_once(runtime, tools, connect_error(tools.config))).status == "down"

    assert (await send_once(runtime, tools, http_error(400)(tools.config))).status == "rejected"
    assert tools.health.consecutive_failures == 1

    attempt = attempt_on(tools)
    attempt.begin_request(0)
    await SlowOrDown(runtime, ScriptedSender("fine")).send(attempt)
    assert tools.health.consecutive_failures == 0
    assert [c.status for c in attempt.calls] == ["ok"]
