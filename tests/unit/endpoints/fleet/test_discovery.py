"""Slot discovery: loading servers are waited for, down ones asked again, Ollama checked.

Servers are the SIMULATED llama.cpp (``ops.simfleet``, which answers ``/health`` 503
while it "loads") and the fake Ollama daemon; nothing else is faked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from endpoints.config import FleetConfig
from endpoints.fleet._routing import FleetRuntime, get_runtime
from endpoints.runtime import reset_runtime
from ops.simfleet import SimEndpointSpec, SimFleet
from tests.fakes.ollama_server import FakeOllama
from tests.helpers import endpoint_spec, free_port, write_fleet


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    reset_runtime()
    yield
    reset_runtime()


def _fleet(
    port: int, *, slots: int | None, kind: str = "llamacpp", model: str = "m"
) -> FleetConfig:
    spec = endpoint_spec("probe-me", port, kind=kind, model=model)
    if slots is None:
        spec.pop("slots")
    else:
        spec["slots"] = slots
    return FleetConfig.model_validate(
        {"name": "discovery", "tiers": {"tools": {"endpoints": [spec]}}}
    )


async def test_a_loading_server_is_waited_for_and_sizes_the_limiter() -> None:
    # 30 simulated seconds of loading at 0.05 wall s each: /health says 503 for ~1.5 s.
    spec = SimEndpointSpec(name="loading", slots=3, time_scale=0.05, loading_s=30)
    with SimFleet([spec]) as sim:
        runtime = FleetRuntime(_fleet(_port(sim), slots=None))
        (handle,) = runtime.handles("tools")
        assert handle.limiter.capacity == 1  # nothing read yet
        warnings = await runtime.discover()
    assert handle.limiter.capacity == 3
    assert warnings == []


async def test_a_server_still_loading_past_the_wait_is_asked_again_next_run() -> None:
    spec = SimEndpointSpec(name="slow-load", slots=4, time_scale=0.05, loading_s=40)
    with SimFleet([spec]) as sim:
        runtime = FleetRuntime(_fleet(_port(sim), slots=None))
        runtime.loading_wait_s = 0.2
        (handle,) = runtime.handles("tools")
        warnings = await runtime.discover()
        assert handle.limiter.capacity == 1
        assert any("still loading" in w and "next run asks again" in w for w in warnings)
        runtime.loading_wait_s = 10.0
        await runtime.discover()  # the next run
    assert handle.limiter.capacity == 4


async def test_a_server_down_at_the_first_run_is_discovered_by_a_later_one() -> None:
    port = free_port()
    runtime = FleetRuntime(_fleet(port, slots=None))
    (handle,) = runtime.handles("tools")
    await runtime.discover()  # nothing listens yet
    assert handle.limiter.capacity == 1
    with SimFleet([SimEndpointSpec(name="late", slots=5, port=port, time_scale=0.01)]):
        await runtime.discover()
        assert handle.limiter.capacity == 5


async def test_a_changed_fleet_file_is_discovered_again(tmp_path: Path) -> None:
    with SimFleet([SimEndpointSpec(name="cap", slots=6, time_scale=0.01)]) as sim:
        port = _port(sim)
        path = tmp_path / "fleet.toml"
        write_fleet(path, {"tools": [endpoint_spec("probe-me", port, slots=6)]})
        first = get_runtime(str(path))
        await first.discover()
        assert first.handles("tools")[0].limiter.capacity == 6
        # The user caps the shared server at 2 slots: the next run reads the new file.
        write_fleet(path, {"tools": [endpoint_spec("probe-me", port, slots=2)]})
        second = get_runtime(str(path))
        assert second is not first
        await second.discover()
        assert second.handles("tools")[0].limiter.capacity == 2


async def test_ollama_endpoints_are_checked_for_their_model_and_slots() -> None:
    with FakeOllama(model="llama3.2:1b") as ollama:
        missing = FleetRuntime(_fleet(ollama.port, slots=None, kind="ollama", model="qwen3:8b"))
        warnings = await missing.discover()
        assert any("ollama pull qwen3:8b" in w for w in warnings)
        assert any("OLLAMA_NUM_PARALLEL" in w for w in warnings)
        reset_runtime()
        present = FleetRuntime(_fleet(ollama.port, slots=2, kind="ollama", model="llama3.2:1b"))
        assert await present.discover() == []
        assert present.handles("tools")[0].limiter.capacity == 2
        paths = [r.path for r in ollama.requests]
    assert "/api/tags" in paths


def _port(sim: SimFleet) -> int:
    (url,) = sim.urls.values()
    return int(url.rsplit(":", 1)[1])
