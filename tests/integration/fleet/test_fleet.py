"""The embedded llama.cpp fleet: discovery, chat round trips, slot caps, start-up errors."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langchain_core.language_models.chat_models import BaseChatModel

from endpoints.clients import make_chat_model
from endpoints.clients.probes import probe_endpoint
from endpoints.config import FleetConfig, load_fleet
from endpoints.fleet import FleetRuntime, get_runtime
from endpoints.slots import SlotLimiter
from graph import Plan, arun_goal
from ops.embedded import EmbeddedFleet, EmbeddedFleetError, port_is_free
from tests.helpers import (
    TIERS,
    ServerSampler,
    embedded_servers_fleet,
    endpoint_spec,
    free_port,
    free_ports,
    pinned_task,
    write_fleet,
)

pytestmark = pytest.mark.integration

# Async tests each run on their own event loop (pytest-asyncio's default): chat models
# used here on one endpoint from several loops in turn must keep working.


def with_slots(fleet: FleetConfig, tier: str, slots: int | None) -> FleetConfig:
    data = fleet.model_dump()
    data["tiers"] = {tier: data["tiers"][tier]}
    data["tiers"][tier]["endpoints"][0]["slots"] = slots
    return FleetConfig.model_validate(data)


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetConfig]:
    """One 4-slot server on a 29xxx port that no other test or helper sends requests to."""
    folder = tmp_path_factory.mktemp("private")
    config = load_fleet(embedded_servers_fleet(folder, [("solo", free_port())], slots=4))
    with EmbeddedFleet(config) as fleet:
        assert [s.endpoint.name for s in fleet.servers] == ["solo"]
        yield config


async def test_discovery_reads_total_slots(embedded_fleet: FleetConfig) -> None:
    config = with_slots(embedded_fleet, "tools", None)
    status = await probe_endpoint(config.tier("tools").endpoints[0])
    assert status.healthy
    assert status.total_slots == embedded_fleet.tier("tools").endpoints[0].slots
    runtime = FleetRuntime(config)
    (handle,) = runtime.handles("tools")
    handle.limiter.resize(1)  # as if nothing were known yet
    warnings = await runtime.discover()
    assert warnings == []
    assert handle.limiter.capacity == status.total_slots
    assert await runtime.discover() is warnings  # runs once per runtime


async def test_discovery_warns_on_disagreement(embedded_fleet: FleetConfig) -> None:
    actual = embedded_fleet.tier("tools").endpoints[0].slots
    assert actual is not None
    runtime = FleetRuntime(with_slots(embedded_fleet, "tools", actual + 3))
    warnings = await runtime.discover()
    assert len(warnings) == 1
    assert f"says {actual + 3} slots" in warnings[0]
    assert f"reports {actual}" in warnings[0]
    assert runtime.handles("tools")[0].limiter.capacity == actual


async def test_probe_reports_live_state(embedded_fleet: FleetConfig) -> None:
    endpoint = embedded_fleet.tier("reasoning").endpoints[0]
    status = await probe_endpoint(endpoint)
    assert status.health == "ok"
    assert status.total_slots == endpoint.slots
    assert status.n_ctx == endpoint.ctx
    assert status.busy_slots is not None and endpoint.slots is not None
    assert 0 <= status.busy_slots <= endpoint.slots
    assert status.latency_ms is not None and status.latency_ms > 0


async def test_probe_down_endpoint() -> None:
    port = free_port()
    endpoint = (
        load_fleet("embedded")
        .tier("tools")
        .endpoints[0]
        .model_copy(update={"base_url": f"http://127.0.0.1:{port}"})
    )
    status = await probe_endpoint(endpoint, timeout=1.0)
    assert status.health == "down"
    assert str(port) in status.detail


async def test_chat_round_trip_with_usage(embedded_fleet: FleetConfig) -> None:
    endpoint = embedded_fleet.tier("tools").endpoints[0]
    model = make_chat_model(endpoint, temperature=0.0, max_tokens=24)
    reply = await model.ainvoke(
        [("system", "You are terse."), ("human", "Name one colour of the sky.")]
    )
    assert isinstance(reply.content, str) and reply.content.strip()
    usage = reply.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] > 0
    assert 0 < usage["output_tokens"] <= 24
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_streaming_reports_usage(embedded_fleet: FleetConfig) -> None:
    endpoint = embedded_fleet.tier("summary").endpoints[0]
    model = make_chat_model(endpoint, temperature=0.0, max_tokens=16)
    chunks = [chunk async for chunk in model.astream("Say hi.")]
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert str(total.content).strip()
    assert total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] > 0


async def test_server_reports_timings(private_server: FleetConfig) -> None:
    endpoint = private_server.all_endpoints()[0]
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(
            f"{endpoint.base_url}/v1/chat/completions",
            json={
                "model": endpoint.model,
                "messages": [{"role": "user", "content": "Tell me about cats."}],
                "max_tokens": 32,
                "temperature": 0,
                "ignore_eos": True,
            },
        )
    response.raise_for_status()
    body = response.json()
    assert body["model"] == endpoint.model  # the alias we configured
    assert body["usage"]["completion_tokens"] == 32
    timings = body["timings"]
    assert timings["predicted_n"] == 32
    assert timings["predicted_per_second"] > 0
    print(f"\n{endpoint.name}: {timings['predicted_per_second']:.1f} tokens/s (1 request)")


async def _burst(limiter: SlotLimiter, model: BaseChatModel, requests: int) -> int:
    """Send ``requests`` calls at once, each through ``limiter``; their completion tokens."""

    async def one(i: int) -> int:
        async with limiter.slot(timeout=300):
            reply = await model.ainvoke(f"Write a short line about the number {i}.")
            assert reply.usage_metadata is not None
            return reply.usage_metadata["output_tokens"]

    return sum(await asyncio.gather(*(one(i) for i in range(requests))))


async def test_limiter_keeps_requests_out_of_the_server_queue(
    embedded_fleet: FleetConfig,
) -> None:
    runtime = get_runtime(embedded_fleet)
    await runtime.discover()
    (handle,) = runtime.handles("tools")
    n = handle.limiter.capacity
    model = make_chat_model(
        handle.config, temperature=0.0, max_tokens=32, extra={"ignore_eos": True}
    )
    async with ServerSampler({handle.name: handle.config.base_url}) as sampler:
        tokens = await _burst(handle.limiter, model, 3 * n)
    assert tokens == 3 * n * 32
    busy, deferred = sampler.peak_busy[handle.name], sampler.peak_deferred[handle.name]
    print(f"\n{handle.name}: N={n}, max busy {busy}, max deferred {deferred}")
    # /slots busy cannot exceed the server's own total_slots (= N here); a request past
    # our cap would show as deferred in llama.cpp's queue.
    assert deferred == 0
    assert busy >= 2  # requests really ran concurrently
    assert handle.limiter.stats().peak_in_use <= n


async def test_limiter_below_server_slots_is_the_cap(private_server: FleetConfig) -> None:
    endpoint = private_server.all_endpoints()[0]
    assert endpoint.slots == 4
    n = 2  # fewer than the server's slots: only our limiter can keep busy <= 2
    limiter = SlotLimiter(endpoint.name, n)
    model = make_chat_model(endpoint, temperature=0.0, max_tokens=32, extra={"ignore_eos": True})
    async with ServerSampler({endpoint.name: endpoint.base_url}) as sampler:
        tokens = await _burst(limiter, model, 3 * n)
    assert tokens == 3 * n * 32
    busy = sampler.peak_busy[endpoint.name]
    print(f"\n{endpoint.name}: limiter N={n} on 4 slots, max busy seen {busy}")
    assert busy <= n
    assert busy >= 2
    stats = limiter.stats()
    assert stats.peak_in_use == n
    assert stats.waited >= n  # the rest queued in our limiter, not in llama.cpp


async def test_fleet_file_slots_below_the_server_cap_a_burst_of_tasks(
    private_server: FleetConfig, tmp_path: Path
) -> None:
    """``slots`` in the fleet file below the server's ``total_slots`` is our cap for a run."""
    server = private_server.all_endpoints()[0]
    capped = endpoint_spec("capped", server.port, model=server.model, slots=2, ctx=server.ctx)
    fleet = write_fleet(tmp_path / "capped.toml", {tier: [capped] for tier in TIERS})
    plan = Plan(tasks=[pinned_task(f"t{i}", tokens=32) for i in range(6)])
    async with ServerSampler({"capped": server.base_url}) as sampler:
        result = await arun_goal(
            "Burst", plan=plan, fleet=fleet, voice=False, synthesis_max_tokens=8
        )
    assert [r.status for r in result.tasks] == ["completed"] * 6
    assert {r.slot for r in result.tasks} == {0, 1}
    busy = sampler.peak_busy["capped"]
    print(f"\ncapped: fleet file slots=2 on a 4-slot server, max busy seen {busy}")
    assert busy <= 2  # the server would run 4 at once
    assert busy >= 2
    assert sampler.peak_deferred["capped"] == 0


def test_port_in_use_is_named(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        fleet = EmbeddedFleet(load_fleet(embedded_servers_fleet(tmp_path, [("busy", port)])))
        with pytest.raises(EmbeddedFleetError) as info:
            fleet.start()
    message = str(info.value)
    assert f"port {port}" in message
    assert "busy" in message
    assert str(tmp_path / "fleet.toml") in message  # says where to change base_url
    assert not fleet.running


def test_failed_start_leaves_nothing_running(tmp_path: Path) -> None:
    good, taken = free_ports(2)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        config = load_fleet(embedded_servers_fleet(tmp_path, [("first", good), ("second", taken)]))
        fleet = EmbeddedFleet(config)
        with pytest.raises(EmbeddedFleetError, match=f"port {taken}"):
            fleet.start()
    assert not fleet.running
    # The server started before the failure was stopped again.
    assert port_is_free("127.0.0.1", good)


def test_missing_model_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.gguf"
    path = embedded_servers_fleet(tmp_path, [("lost", free_port())], model_path=str(missing))
    with pytest.raises(EmbeddedFleetError) as info:
        EmbeddedFleet(load_fleet(path)).start()
    assert str(missing) in str(info.value)
    assert "model_path" in str(info.value)


def test_missing_model_package_says_how_to_install(tmp_path: Path) -> None:
    path = embedded_servers_fleet(
        tmp_path, [("pkg", free_port())], model_path="pkg:no_such_pkg_xyz/m.gguf"
    )
    with pytest.raises(EmbeddedFleetError, match="no_such_pkg_xyz"):
        EmbeddedFleet(load_fleet(path)).start()


def test_non_embedded_fleet_is_refused() -> None:
    with pytest.raises(EmbeddedFleetError, match="fleet script"):
        EmbeddedFleet("m3-ultra")


def test_healthy_servers_are_reused(embedded_fleet: FleetConfig) -> None:
    with EmbeddedFleet(embedded_fleet) as again:
        assert again.servers == []
        assert sorted(again.reused) == sorted(e.name for e in embedded_fleet.all_endpoints())
    # Leaving the block stopped nothing: the fleet still answers.
    for endpoint in embedded_fleet.all_endpoints():
        assert httpx.get(f"{endpoint.base_url}/health", timeout=5).status_code == 200
