"""Routing over a fleet: replicas, slot discovery, fallback chains and cooldowns.

A :class:`FleetRuntime` wraps a :class:`~endpoints.config._fleet.FleetConfig` with the live state
the orchestrator needs: one process-wide :class:`~endpoints.slots._limiter.SlotLimiter` and one
health record per server. Concurrent runs on the same fleet share both, so caps hold
across runs and a server that keeps failing is skipped by everyone for a cooldown. The
fleet runtimes themselves live in the process runtime (:mod:`endpoints.runtime`), so
:func:`~endpoints.runtime.reset_runtime` forgets them with everything else.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel

from endpoints.clients import ChatModelFactory, make_chat_model
from endpoints.config import EndpointConfig, FleetConfig, load_fleet, resolve_fleet_path
from endpoints.fleet._discovery import LOADING_WAIT_S, discover_capacity
from endpoints.runtime import (
    EndpointHealth,
    ProcessRuntime,
    RuntimeSlot,
    process_runtime,
)
from endpoints.slots import SlotLimiter, endpoint_key

logger = logging.getLogger("kitty.endpoints")

DEFAULT_SLOTS = 1


def health_for(base_url: str) -> EndpointHealth:
    """Process-wide health record of a server."""
    return process_runtime().health(base_url)


@dataclass
class EndpointHandle:
    """An endpoint with its live limiter and health record."""

    config: EndpointConfig
    tier: str
    limiter: SlotLimiter
    health: EndpointHealth

    @property
    def name(self) -> str:
        """Endpoint name."""
        return self.config.name


class FleetRuntime:
    """Live view of a fleet used to route model calls.

    Args:
        fleet: The fleet configuration.
        failure_threshold: Consecutive endpoint failures that start a cooldown.
        cooldown_s: Seconds a failing server is avoided while alternatives exist.
        process: Where the limiters, health records and slot store live (default: this
            process's runtime).
    """

    def __init__(
        self,
        fleet: FleetConfig,
        *,
        failure_threshold: int = 2,
        cooldown_s: float = 30.0,
        process: ProcessRuntime | None = None,
    ) -> None:
        process = process or process_runtime()
        self.fleet = fleet
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._handles: dict[str, list[EndpointHandle]] = {}
        # Where slots are counted: this process, or Redis shared with other processes.
        self.store = process.slot_store(fleet.coordination)
        for tier_name, tier in fleet.tiers.items():
            self._handles[tier_name] = [
                EndpointHandle(
                    config=endpoint,
                    tier=tier_name,
                    limiter=process.limiter(
                        endpoint.base_url,
                        endpoint.name,
                        endpoint.slots or DEFAULT_SLOTS,
                        self.store,
                    ),
                    health=process.health(endpoint.base_url),
                )
                for endpoint in tier.endpoints
            ]
        self._discovered: set[str] = set()
        self._discover_lock = threading.Lock()
        self.loading_wait_s = LOADING_WAIT_S
        self.warnings: list[str] = []
        # The one seam between the graph and the chat client: tests put a fake here.
        self.model_factory: ChatModelFactory = make_chat_model

    def chat_model(self, endpoint: EndpointConfig, **settings: Any) -> BaseChatModel:
        """A chat model bound to ``endpoint`` (``settings`` as for ``make_chat_model``)."""
        return self.model_factory(endpoint, **settings)

    def handles(self, tier: str) -> list[EndpointHandle]:
        """The replicas of a tier (raises ``FleetError`` for an unknown tier)."""
        self.fleet.tier(tier)
        return self._handles[tier]

    def all_handles(self) -> list[EndpointHandle]:
        """One handle per distinct server."""
        unique: dict[str, EndpointHandle] = {}
        for handles in self._handles.values():
            for handle in handles:
                unique.setdefault(endpoint_key(handle.config.base_url), handle)
        return list(unique.values())

    def limiters(self) -> dict[str, SlotLimiter]:
        """Endpoint name -> limiter, one per distinct server."""
        return {h.name: h.limiter for h in self.all_handles()}

    async def lease_counts(self) -> dict[str, tuple[int, int]]:
        """Endpoint name -> (leases, waiters) of every process sharing the slot store.

        Empty for the local store (no other process is visible) or while it is unreachable.
        """
        counts: dict[str, tuple[int, int]] = {}
        for handle in self.all_handles():
            found = await self.store.counts(endpoint_key(handle.config.base_url))
            if found is not None:
                counts[handle.name] = found
        return counts

    async def discover(self, timeout: float = 2.0) -> list[str]:
        """Size each limiter from its server before a run uses it (``endpoints.fleet._discovery``).

        Servers whose capacity was read are not asked again by this runtime; one that was
        down or still loading is asked again by the next run. The slot store is checked
        on every call, so a store that refuses us fails each run at its start, not
        mid-run.

        Returns:
            Warnings (configured slots that disagree with the server, a server still
            loading, an Ollama model not pulled, the store unreachable), each once.

        Raises:
            SettingsError: The slot store refuses the credentials or has no such db.
        """
        store_warning = await self.store.check()
        if store_warning and store_warning not in self.warnings:
            logger.warning("%s; tasks wait for it (on_store_down)", store_warning)
            self.warnings.append(store_warning)
        with self._discover_lock:
            pending = [
                h
                for h in self.all_handles()
                if endpoint_key(h.config.base_url) not in self._discovered
            ]
        if not pending:
            return self.warnings
        done, warnings = await discover_capacity(
            pending, timeout=timeout, loading_wait_s=self.loading_wait_s
        )
        with self._discover_lock:
            self._discovered.update(endpoint_key(h.config.base_url) for h in done)
            self.warnings.extend(w for w in warnings if w not in self.warnings)
        return self.warnings

    def candidates(self, tiers: list[str]) -> list[EndpointHandle]:
        """Endpoints to try, in order, for a chain of tiers (primary first).

        Within a tier, healthy replicas come first, least loaded first; servers cooling
        down come after every healthy one of the whole chain, so a benched primary is
        still tried when nothing else is left.
        """
        now = time.monotonic()
        ready: list[EndpointHandle] = []
        benched: list[EndpointHandle] = []
        seen: set[str] = set()
        for tier in tiers:
            for handle in sorted(self.handles(tier), key=lambda h: h.limiter.load):
                server = endpoint_key(handle.config.base_url)
                if server in seen:
                    continue
                seen.add(server)
                (benched if handle.health.cooling_down(now) else ready).append(handle)
        return ready + benched

    def record_success(self, handle: EndpointHandle, latency_s: float) -> None:
        """Note a successful call: resets the failure count."""
        was_benched = handle.health.cooldown_until > 0.0
        handle.health.consecutive_failures = 0
        handle.health.cooldown_until = 0.0
        handle.health.latencies_s.append(latency_s)
        if was_benched:
            self.store.share_cooldown(endpoint_key(handle.config.base_url), 0.0)

    def record_slow(self, handle: EndpointHandle) -> None:
        """Note a request that ran past its timeout while the server stayed alive.

        Slow is not down: the failure count and any cooldown stay as they are, so a
        healthy server busy with long generations is never benched for it.
        """
        handle.health.slow_calls += 1
        logger.info(
            "endpoint %s: a request ran past its timeout (server alive; %d slow so far)",
            handle.name,
            handle.health.slow_calls,
        )

    def record_failure(self, handle: EndpointHandle) -> None:
        """Note an endpoint failure (down: refused, reset, 5xx); repeated ones bench it.

        ``failure_threshold`` failures in a row bench the server for ``cooldown_s``.
        Timeouts of a live server go to :meth:`record_slow` instead.
        """
        handle.health.consecutive_failures += 1
        if handle.health.consecutive_failures >= self.failure_threshold:
            handle.health.cooldown_until = time.monotonic() + self.cooldown_s
            self.store.share_cooldown(endpoint_key(handle.config.base_url), self.cooldown_s)
            logger.warning(
                "endpoint %s failed %d times in a row; avoiding it for %.0fs",
                handle.name,
                handle.health.consecutive_failures,
                self.cooldown_s,
            )


_FLEET_RUNTIMES: RuntimeSlot[dict[str, FleetRuntime]] = RuntimeSlot(
    "fleet runtimes by fleet file (path and mtime) or config", dict
)


def _file_key(path: Path) -> str:
    return f"{path.resolve()}@{path.stat().st_mtime_ns}"


def get_runtime(fleet: str | FleetConfig | None = None) -> FleetRuntime:
    """Process-wide runtime for a fleet (by profile name, path or config).

    Every model call asks for its runtime, so a fleet named by profile or path is only
    re-read when its file changes (path + modification time identify it); a changed file
    gets a new runtime whose limiters are resized to the new slot counts.
    """
    process = process_runtime()
    runtimes = process.get(_FLEET_RUNTIMES)
    if isinstance(fleet, FleetConfig):
        config = fleet
        source = Path(config.source) if config.source else None
        # A config loaded from a file shares the runtime of that file's name or path.
        key = _file_key(source) if source and source.is_file() else config.model_dump_json()
    else:
        path = resolve_fleet_path(fleet)
        key = _file_key(path)
        with process.lock:
            cached = runtimes.get(key)
        if cached is not None:
            return cached
        config = load_fleet(path)
    with process.lock:
        runtime = runtimes.get(key)
        if runtime is None or runtime.fleet != config:
            runtime = runtimes[key] = FleetRuntime(config, process=process)
        return runtime


__all__ = [
    "EndpointHandle",
    "EndpointHealth",
    "FleetRuntime",
    "get_runtime",
    "health_for",
]
