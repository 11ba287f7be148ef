"""Slot discovery: size each limiter from what its server says, before a run uses it.

Every run awaits :func:`discover_capacity` through ``FleetRuntime.discover``:

- a llama.cpp server's ``/props`` ``total_slots`` sizes its limiter (a smaller ``slots`` in
  the fleet file is a deliberate cap and is kept);
- a server still loading its model (``/health`` 503) is polled until it answers or
  ``loading_wait_s`` passes, so a run does not start on a capacity nobody has read;
- a server that is down or still loading keeps its configured slots and is asked again by
  the next run (only servers whose capacity was read are done);
- Ollama does not report its parallel slots (``OLLAMA_NUM_PARALLEL`` is server-side), so
  its endpoints are checked for reachability and a pulled model, and a fleet file that
  leaves ``slots`` out is warned about once.

A changed fleet file gets a new runtime (see ``endpoints.fleet._routing.get_runtime``) and therefore
a fresh discovery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from endpoints.clients.probes import DEFAULT_PROBE_TIMEOUT_S, EndpointStatus, probe_all
from endpoints.config import EndpointConfig
from endpoints.slots import SlotLimiter

logger = logging.getLogger("kitty.endpoints")

LOADING_WAIT_S = 60.0
LOADING_POLL_S = 0.5


class Discoverable(Protocol):
    """What discovery needs of an endpoint handle."""

    config: EndpointConfig
    limiter: SlotLimiter


async def probe_until_loaded(
    endpoints: Sequence[EndpointConfig],
    *,
    timeout: float = DEFAULT_PROBE_TIMEOUT_S,
    loading_wait_s: float = LOADING_WAIT_S,
    poll_s: float = LOADING_POLL_S,
) -> list[EndpointStatus]:
    """Probe endpoints; re-probe the ones still loading until they answer or time runs out.

    Args:
        endpoints: What to probe.
        timeout: Seconds per probe request.
        loading_wait_s: How long servers answering 503 (loading) are waited for.
        poll_s: Seconds between probes of a loading server.

    Returns:
        One status per endpoint, in order: the last one seen.
    """
    statuses = await probe_all(list(endpoints), timeout=timeout)
    deadline = time.monotonic() + loading_wait_s
    while True:
        loading = [i for i, status in enumerate(statuses) if status.health == "loading"]
        if not loading or time.monotonic() >= deadline:
            return statuses
        await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        again = await probe_all([endpoints[i] for i in loading], timeout=timeout)
        for index, status in zip(loading, again, strict=True):
            statuses[index] = status


def _apply_llamacpp(handle: Discoverable, status: EndpointStatus, warnings: list[str]) -> bool:
    if not status.total_slots:
        if status.health == "loading":
            warnings.append(
                f"endpoint {handle.config.name}: still loading its model; using "
                f"{handle.limiter.capacity} slot(s) from the fleet file until it reports "
                "its own (the next run asks again)"
            )
        return False
    configured = handle.config.slots
    if configured is not None and configured < status.total_slots:
        # A deliberate cap (the server is shared with something else): keep it.
        target = configured
    else:
        target = status.total_slots
        if configured is not None and configured != status.total_slots:
            warnings.append(
                f"endpoint {handle.config.name}: fleet file says {configured} slots but "
                f"the server reports {status.total_slots}; using the server's value"
            )
    if handle.limiter.capacity != target:
        handle.limiter.resize(target)
    return True


def _apply_ollama(handle: Discoverable, status: EndpointStatus, warnings: list[str]) -> bool:
    endpoint = handle.config
    if status.health != "ok":
        return False
    if status.model_missing:
        warnings.append(
            f"endpoint {endpoint.name}: model {endpoint.model!r} is not pulled on "
            f"{endpoint.base_url}; run `ollama pull {endpoint.model}` there"
        )
    if endpoint.slots is None:
        warnings.append(
            f"endpoint {endpoint.name}: Ollama does not report its parallel slots; "
            f"using {handle.limiter.capacity}. Set `slots` in the fleet file to the "
            "server's OLLAMA_NUM_PARALLEL"
        )
    return True


async def discover_capacity(
    handles: Sequence[Discoverable],
    *,
    timeout: float = DEFAULT_PROBE_TIMEOUT_S,
    loading_wait_s: float = LOADING_WAIT_S,
) -> tuple[list[Discoverable], list[str]]:
    """Read each server's capacity and resize its limiter.

    Args:
        handles: Endpoints not discovered yet (one per server).
        timeout: Seconds per probe request.
        loading_wait_s: How long a server that is still loading is waited for.

    Returns:
        The handles whose capacity is now known (the rest are asked again next time),
        and warnings for the user.
    """
    statuses = await probe_until_loaded(
        [h.config for h in handles], timeout=timeout, loading_wait_s=loading_wait_s
    )
    done: list[Discoverable] = []
    warnings: list[str] = []
    for handle, status in zip(handles, statuses, strict=True):
        apply = _apply_ollama if handle.config.kind == "ollama" else _apply_llamacpp
        if apply(handle, status, warnings):
            done.append(handle)
    for message in warnings:
        logger.warning(message)
    return done, warnings


__all__ = ["LOADING_WAIT_S", "discover_capacity", "probe_until_loaded"]
