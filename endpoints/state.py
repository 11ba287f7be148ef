"""The one owner of this process's live fleet state.

Limiters, health records, fleet runtimes and the per-event-loop chat clients all live in
one :class:`FleetState`. Everything that names the same server (by base URL) shares its
limiter and health record, so slot caps hold across runs, fleets and event loops. Tests
clear it all with :func:`reset_fleet_state`.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

from endpoints.health import EndpointHealth
from endpoints.limiter import SlotLimiter


class FleetState:
    """Live state of every server this process talks to.

    Attributes:
        runtimes: Fleet key (file path + mtime, or config source) -> its runtime object;
            owned by :func:`endpoints.pool.get_runtime`.
        loop_resources: Event loop -> that loop's chat models and HTTP client (pooled
            connections belong to the loop that opened them).
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._limiters: dict[str, SlotLimiter] = {}
        self._configured: dict[str, int] = {}
        self._health: dict[str, EndpointHealth] = {}
        self.runtimes: dict[str, Any] = {}
        self.loop_resources: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def limiter(self, key: str, name: str, capacity: int) -> SlotLimiter:
        """The limiter of the server ``key`` (its base URL), sized ``capacity``.

        Created on first use. When a later fleet (an edited fleet file) configures a
        different capacity for the same server, the limiter is resized to it; the
        server's own ``/props`` still corrects it at discovery.
        """
        with self.lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limiter = self._limiters[key] = SlotLimiter(name, capacity)
            elif self._configured.get(key) != capacity:
                limiter.resize(capacity)
            self._configured[key] = capacity
            return limiter

    def health(self, key: str) -> EndpointHealth:
        """The health record of the server ``key`` (its base URL)."""
        with self.lock:
            return self._health.setdefault(key, EndpointHealth())

    def limiters(self) -> dict[str, SlotLimiter]:
        """Server key -> limiter, for every server seen so far."""
        with self.lock:
            return dict(self._limiters)

    def reset(self) -> None:
        """Forget every limiter, health record, runtime and client (tests)."""
        with self.lock:
            self._limiters.clear()
            self._configured.clear()
            self._health.clear()
            self.runtimes.clear()
            self.loop_resources = weakref.WeakKeyDictionary()


_state = FleetState()


def fleet_state() -> FleetState:
    """This process's fleet state."""
    return _state


def limiter_for(key: str, name: str, capacity: int) -> SlotLimiter:
    """This process's limiter for a server (see :meth:`FleetState.limiter`)."""
    return _state.limiter(key, name, capacity)


def reset_fleet_state() -> None:
    """Clear all of this process's fleet state (limiters, health, runtimes, clients)."""
    _state.reset()
