"""The slow-versus-down policy with a fake chat model: a timeout of a live server is slow
(no cooldown, the slot held until the server stops), of a dead one down.

No server runs (see the ``fake_fleet`` fixture): the probes and ``/slots`` reads a
timeout triggers are replaced where a test needs a live server.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from endpoints.calls import CallLimits, ModelRequest, call_tiers
from endpoints.clients import llamacpp as engine
from endpoints.clients import probes
from endpoints.fleet import get_runtime
from tests.conftest import FakeFleet
from tests.fake_chat import Reply

TIMING_OUT = ModelRequest(tiers=["vision"], limits=CallLimits(call_timeout_s=0.2))


def server_alive(monkeypatch: pytest.MonkeyPatch, busy: list[int]) -> list[float]:
    """Probes say the server is up; ``/slots`` reports ``busy`` (one value per read)."""
    reads: list[float] = []

    async def alive(*args: Any, **kwargs: Any) -> str:
        return "up"

    async def slots(*args: Any, **kwargs: Any) -> int | None:
        reads.append(time.perf_counter())
        return busy.pop(0) if len(busy) > 1 else busy[0]

    monkeypatch.setattr(probes, "quick_health", alive)
    monkeypatch.setattr(engine, "busy_slots", slots)
    return reads


# --------------------------------------------------------------------------- slow vs down


async def test_a_timeout_of_a_live_server_is_slow_and_waits_for_the_server_to_stop(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = server_alive(monkeypatch, busy=[1, 1, 1, 0])
    fake_fleet.chat.script(Reply("late", delay_s=30), repeat=True)
    runtime = get_runtime(fake_fleet.path)
    (vision,) = runtime.handles("vision")
    released: list[tuple[float, int]] = []
    release = vision.limiter.release

    def recording_release(slot: int) -> None:
        released.append((time.perf_counter(), len(reads)))
        release(slot)

    monkeypatch.setattr(vision.limiter, "release", recording_release)
    for _ in range(2):
        outcome = await call_tiers(runtime, TIMING_OUT, [HumanMessage("hi")])
        assert not outcome.ok
        assert "no answer within the timeout" in (outcome.error or "")
        assert "slow" in (outcome.error or "")
        assert [c.status for c in outcome.calls] == ["slow"]

    assert vision.health.slow_calls == 2
    assert vision.health.consecutive_failures == 0 and not vision.health.cooling_down()
    # The first slot went back only once /slots showed the request stopped (4th read).
    assert released[0][1] == 4
    assert vision.limiter.stats().in_use == 0


async def test_a_timeout_of_a_dead_server_is_down(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_fleet.chat.script(Reply("late", delay_s=30), repeat=True)
    runtime = get_runtime(fake_fleet.path)
    (vision,) = runtime.handles("vision")
    for _ in range(2):  # nothing listens on the fake fleet's ports: the probe is refused
        outcome = await call_tiers(runtime, TIMING_OUT, [HumanMessage("hi")])
        assert [c.status for c in outcome.calls] == ["down"]
    assert vision.health.cooling_down() and vision.health.slow_calls == 0
