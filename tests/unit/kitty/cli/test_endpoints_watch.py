"""``kitty-orch endpoints --watch``: the peaks show a server that got more requests than slots.

The server is the SIMULATED llama.cpp (``ops.simfleet``): its ``/metrics`` counts
``llamacpp:requests_deferred`` as llama.cpp does (requests waiting for a slot).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from endpoints.config import load_fleet
from endpoints.fleet._routing import get_runtime
from endpoints.runtime import reset_runtime
from kitty.cli._endpoints_watch import watch_endpoints
from kitty.cli.main import app
from ops.simfleet import SimEndpointSpec, SimFleet
from tests.helpers import endpoint_spec, write_fleet


@pytest.fixture
def one_slot(tmp_path: Path) -> Iterator[tuple[SimFleet, Path]]:
    reset_runtime()
    with SimFleet([SimEndpointSpec(name="one", slots=1, time_scale=0.05)]) as sim:
        (url,) = sim.urls.values()
        port = int(url.rsplit(":", 1)[1])
        path = write_fleet(
            tmp_path / "fleet.toml", {"tools": [endpoint_spec("one", port, slots=1)]}
        )
        yield sim, path
    reset_runtime()


async def _flood(url: str, requests: int) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}
    body["ignore_eos"] = True
    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(
            *(client.post(f"{url}/v1/chat/completions", json=body) for _ in range(requests))
        )


async def test_the_watch_sees_requests_waiting_inside_an_oversubscribed_server(
    one_slot: tuple[SimFleet, Path],
) -> None:
    sim, path = one_slot
    (url,) = sim.urls.values()
    config = load_fleet(path)
    runtime = get_runtime(config)
    flood = asyncio.create_task(_flood(url, 3))  # 3 requests at once past our limiter
    (peak,) = await watch_endpoints(config, runtime, 1.0, timeout=1.0)
    await flood
    assert peak.has_metrics
    assert peak.busy == 1 and peak.slots == 1
    assert peak.deferred >= 1
    assert not peak.cap_held


def test_the_cli_reports_a_held_cap_when_nothing_oversubscribes(
    one_slot: tuple[SimFleet, Path],
) -> None:
    _, path = one_slot
    result = CliRunner().invoke(
        app, ["endpoints", "--fleet", str(path), "--watch", "0.5", "--json"]
    )
    assert result.exit_code == 0, result.output
    (peak,) = json.loads(result.output)["peaks"]
    assert peak["name"] == "one" and peak["deferred"] == 0 and peak["cap_held"] is True
    assert peak["samples"] >= 2
