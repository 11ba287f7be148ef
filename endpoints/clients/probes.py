"""Health and capacity probes for llama.cpp and Ollama servers.

Probes use short timeouts: one slow answer is reported as such, not as "down".
llama.cpp: ``/health`` (503 while the model loads), ``/props`` (``total_slots``,
per-slot ``n_ctx``, model), ``/slots`` (busy slots). Ollama: ``/api/version``,
``/api/ps`` (loaded models) and ``/api/tags`` (pulled models).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import httpx
from pydantic import BaseModel

from endpoints.clients.llamacpp import count_busy, fetch_slots
from endpoints.config import EndpointConfig

DEFAULT_PROBE_TIMEOUT_S = 2.0
# After a request timed out: long enough for a loaded server's HTTP thread to answer
# /health, short enough not to stall the fallback.
QUICK_PROBE_TIMEOUT_S = 1.0

Health = Literal["ok", "loading", "down", "slow", "error"]


class EndpointStatus(BaseModel):
    """What a probe learned about one endpoint.

    Attributes:
        name: Endpoint name.
        kind: Server kind.
        base_url: Server root.
        health: ``ok``, ``loading`` (503 while the model loads), ``down`` (no connection),
            ``slow`` (no answer within the probe timeout) or ``error`` (unexpected reply).
        detail: Human-readable reason when not ok.
        total_slots: Slots the server reports (llama.cpp ``/props``).
        busy_slots: Slots processing a request now (llama.cpp ``/slots``).
        n_ctx: Context per slot the server reports.
        model: Model the server reports.
        requests_processing: Requests the server is decoding now (llama.cpp ``/metrics``,
            with ``--metrics``).
        requests_deferred: Requests waiting inside the server for a free slot (llama.cpp
            ``/metrics``): above 0 means more requests reached it than it has slots.
        model_missing: Ollama: the model is not among the server's pulled models
            (``/api/tags``).
        latency_ms: Round-trip time of the health probe.
    """

    name: str
    kind: str
    base_url: str
    health: Health
    detail: str = ""
    total_slots: int | None = None
    busy_slots: int | None = None
    n_ctx: int | None = None
    model: str | None = None
    requests_processing: int | None = None
    requests_deferred: int | None = None
    model_missing: bool = False
    latency_ms: float | None = None

    @property
    def healthy(self) -> bool:
        """True when the server answered its health check positively."""
        return self.health == "ok"


@asynccontextmanager
async def _given_or_own(client: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
    """``client`` when the caller shares one (left open), else a new one closed on exit."""
    if client is not None:
        yield client
        return
    async with httpx.AsyncClient() as own:
        yield own


def _status(endpoint: EndpointConfig, health: Health, detail: str = "") -> EndpointStatus:
    return EndpointStatus(
        name=endpoint.name,
        kind=endpoint.kind,
        base_url=endpoint.base_url,
        health=health,
        detail=detail,
    )


async def _probe_llamacpp(
    client: httpx.AsyncClient, endpoint: EndpointConfig, timeout: float
) -> EndpointStatus:
    base = endpoint.base_url
    status = _status(endpoint, "ok")
    started = time.perf_counter()
    health = await client.get(f"{base}/health", timeout=timeout)
    status.latency_ms = (time.perf_counter() - started) * 1000
    if health.status_code == 503:
        status.health, status.detail = "loading", "server is loading the model (503)"
        return status
    if health.status_code != 200:
        status.health = "error"
        status.detail = f"/health answered HTTP {health.status_code}"
        return status
    props_response = await client.get(f"{base}/props", timeout=timeout)
    if props_response.status_code == 200:
        props = props_response.json()
        status.total_slots = props.get("total_slots")
        settings = props.get("default_generation_settings") or {}
        status.n_ctx = settings.get("n_ctx")
        status.model = props.get("model_alias") or props.get("model_path")
    try:
        status.busy_slots = count_busy(await fetch_slots(client, base, timeout))
    except (httpx.HTTPError, ValueError):
        status.busy_slots = None  # /slots can be disabled with --no-slots
    metrics = await client.get(f"{base}/metrics", timeout=timeout)
    if metrics.status_code == 200:  # 501 without --metrics
        samples = prometheus_samples(metrics.text)
        status.requests_processing = _as_int(samples.get("llamacpp:requests_processing"))
        status.requests_deferred = _as_int(samples.get("llamacpp:requests_deferred"))
    return status


def prometheus_samples(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text exposition (llama.cpp's ``/metrics``)."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("#"):
            with contextlib.suppress(ValueError):
                samples[parts[0]] = float(parts[1])
    return samples


def _as_int(value: float | None) -> int | None:
    return None if value is None else int(value)


async def _probe_ollama(
    client: httpx.AsyncClient, endpoint: EndpointConfig, timeout: float
) -> EndpointStatus:
    base = endpoint.base_url
    status = _status(endpoint, "ok")
    started = time.perf_counter()
    version = await client.get(f"{base}/api/version", timeout=timeout)
    status.latency_ms = (time.perf_counter() - started) * 1000
    if version.status_code != 200:
        status.health = "error"
        status.detail = f"/api/version answered HTTP {version.status_code}"
        return status
    status.total_slots = endpoint.slots
    status.n_ctx = endpoint.ctx
    try:
        running = (await client.get(f"{base}/api/ps", timeout=timeout)).json()
        models = [m.get("name") or m.get("model") for m in running.get("models", [])]
        status.model = endpoint.model if endpoint.model in models else None
        if status.model is None:
            status.detail = f"model {endpoint.model} not loaded yet (loads on first request)"
        pulled = (await client.get(f"{base}/api/tags", timeout=timeout)).json()
        names = {m.get("name") or m.get("model") for m in pulled.get("models", [])}
        status.model_missing = not names & {endpoint.model, f"{endpoint.model}:latest"}
        if status.model_missing:
            status.detail = f"model {endpoint.model} is not pulled (ollama pull {endpoint.model})"
    except (httpx.HTTPError, ValueError, AttributeError):
        pass
    return status


async def probe_endpoint(
    endpoint: EndpointConfig,
    *,
    client: httpx.AsyncClient | None = None,
    timeout: float = DEFAULT_PROBE_TIMEOUT_S,
) -> EndpointStatus:
    """Probe one endpoint; never raises, the outcome is in the returned status.

    Args:
        endpoint: The endpoint to probe.
        client: Optional shared HTTP client.
        timeout: Seconds per probe request.
    """
    async with _given_or_own(client) as http:
        try:
            if endpoint.kind == "ollama":
                return await _probe_ollama(http, endpoint, timeout)
            return await _probe_llamacpp(http, endpoint, timeout)
        except httpx.ConnectError:
            return _status(
                endpoint,
                "down",
                f"nothing listening at {endpoint.base_url}; start the server "
                "(kitty-orch fleet up / fleet script) or fix base_url",
            )
        except httpx.TimeoutException:
            return _status(endpoint, "slow", f"no answer within {timeout:g}s (busy or hung)")
        except (httpx.HTTPError, ValueError) as exc:
            return _status(endpoint, "error", f"{type(exc).__name__}: {exc}")


QuickHealth = Literal["up", "unresponsive", "down"]


async def quick_health(
    endpoint: EndpointConfig,
    *,
    client: httpx.AsyncClient | None = None,
    timeout: float = QUICK_PROBE_TIMEOUT_S,
) -> QuickHealth:
    """One cheap health request (llama.cpp ``/health``, Ollama ``/api/version``).

    Returns:
        ``down`` only when the server is certainly down (refused, reset, a 5xx other than
        503); ``unresponsive`` when the check itself timed out (hung or swamped: alive as
        far as we know); ``up`` otherwise, including 503 while the model loads. A
        timed-out generation on a server that is not ``down`` is "slow", not a failure.
    """
    path = "/api/version" if endpoint.kind == "ollama" else "/health"
    async with _given_or_own(client) as http:
        try:
            response = await http.get(f"{endpoint.base_url}{path}", timeout=timeout)
        except httpx.TimeoutException:
            return "unresponsive"
        except httpx.TransportError:
            return "down"
    return "down" if response.status_code >= 500 and response.status_code != 503 else "up"


async def probe_all(
    endpoints: list[EndpointConfig], timeout: float = DEFAULT_PROBE_TIMEOUT_S
) -> list[EndpointStatus]:
    """Probe several endpoints concurrently, in the given order."""
    async with httpx.AsyncClient() as client:
        return list(
            await asyncio.gather(
                *(probe_endpoint(e, client=client, timeout=timeout) for e in endpoints)
            )
        )
