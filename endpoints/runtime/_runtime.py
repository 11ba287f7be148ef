"""The one owner of this process's live fleet state.

Limiters, health records, fleet runtimes and the per-event-loop chat clients all live in
one :class:`FleetState`. Everything that names the same server (by normalised base URL,
see :func:`~endpoints.slots._store.endpoint_key`) shares its limiter and health record, so
slot caps hold across runs, fleets and event loops; with a shared slot store they hold
across processes too, and cooldowns decided elsewhere land in the same health records.
Tests clear it all with :func:`reset_fleet_state`.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

from endpoints.runtime._health import EndpointHealth
from endpoints.slots import LOCAL, SlotLimiter, SlotStore, endpoint_key


class FleetState:
    """Live state of every server this process talks to.

    Attributes:
        runtimes: Fleet key (file path + mtime, or config source) -> its runtime object;
            owned by :func:`endpoints.fleet._routing.get_runtime`.
        loop_resources: Event loop -> that loop's chat models and HTTP client (pooled
            connections belong to the loop that opened them).
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._limiters: dict[tuple[str, str], SlotLimiter] = {}
        self._configured: dict[tuple[str, str], int] = {}
        self._health: dict[str, EndpointHealth] = {}
        self._watched: set[int] = set()
        self.runtimes: dict[str, Any] = {}
        self.loop_resources: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def limiter(
        self, key: str, name: str, capacity: int, store: SlotStore | None = None
    ) -> SlotLimiter:
        """The limiter of the server ``key`` (its base URL), sized ``capacity``.

        Created on first use, one per server and slot store. When a later fleet (an
        edited fleet file) configures a different capacity for the same server, the
        limiter is resized to it; the server's own ``/props`` still corrects it at
        discovery.
        """
        store = store or LOCAL
        server = endpoint_key(key)
        slot = (store.description, server)
        with self.lock:
            limiter = self._limiters.get(slot)
            if limiter is None:
                limiter = SlotLimiter(name, capacity, store=store, key=server)
                self._limiters[slot] = limiter
                self._watch(store)
            elif self._configured.get(slot) != capacity:
                limiter.resize(capacity)
            self._configured[slot] = capacity
            return limiter

    def _watch(self, store: SlotStore) -> None:
        if id(store) not in self._watched:
            self._watched.add(id(store))
            store.watch_cooldowns(self._shared_cooldown)

    def _shared_cooldown(self, key: str, seconds: float) -> None:
        self.health(key).shared_cooldown(seconds)

    def health(self, key: str) -> EndpointHealth:
        """The health record of the server ``key`` (its base URL)."""
        with self.lock:
            return self._health.setdefault(endpoint_key(key), EndpointHealth())

    def limiters(self) -> dict[str, SlotLimiter]:
        """Server key -> limiter, for every server seen so far."""
        with self.lock:
            return {server: limiter for (_, server), limiter in self._limiters.items()}

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


def limiter_for(key: str, name: str, capacity: int, store: SlotStore | None = None) -> SlotLimiter:
    """This process's limiter for a server (see :meth:`FleetState.limiter`)."""
    return _state.limiter(key, name, capacity, store)


def reset_fleet_state() -> None:
    """Clear all of this process's fleet state (limiters, health, runtimes, clients)."""
    _state.reset()
