"""Probes of an endpoint nothing listens on, with their own HTTP client or a shared one."""

from __future__ import annotations

import httpx

from endpoints.clients.probes import probe_endpoint, quick_health
from endpoints.config import EndpointConfig
from tests.helpers import free_port


def _nowhere() -> EndpointConfig:
    return EndpointConfig(
        name="gone", kind="llamacpp", base_url=f"http://127.0.0.1:{free_port()}", model="m"
    )


async def test_nothing_listening_is_down_and_says_how_to_start_it() -> None:
    status = await probe_endpoint(_nowhere(), timeout=2.0)
    assert (status.name, status.health) == ("gone", "down")
    assert "nothing listening at http://127.0.0.1:" in status.detail
    assert await quick_health(_nowhere(), timeout=2.0) == "down"


async def test_a_shared_client_is_left_open() -> None:
    async with httpx.AsyncClient() as client:
        assert (await probe_endpoint(_nowhere(), client=client, timeout=2.0)).health == "down"
        assert await quick_health(_nowhere(), client=client, timeout=2.0) == "down"
        assert not client.is_closed
