"""The one owner of this process's live state: :class:`ProcessRuntime`.

Everything a process learns or opens while it runs lives here, so one call,
:func:`reset_runtime`, forgets all of it (tests, notebooks, a fleet restarted with other
settings). The endpoint layer's own state has named fields: limiters, health records,
slot stores and what servers reported about themselves (tool and vision support, slot
counts). The layers above (fleet runtimes, per-loop HTTP clients, MCP sessions, compiled
graphs, the shared checkpointer...) cannot be named here without importing upwards, so
each declares a typed :class:`RuntimeSlot` and keeps its state in it: process-wide
(:meth:`ProcessRuntime.get`) or per event loop (:meth:`ProcessRuntime.for_loop`).

Everything that names the same server (by normalised base URL, see
:func:`~endpoints.slots.endpoint_key`) shares its limiter and health record, so slot caps
hold across runs, fleets and event loops; with a shared slot store they hold across
processes too, and cooldowns decided elsewhere land in the same health records.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from endpoints.runtime._health import EndpointHealth
from endpoints.slots import (
    LOCAL,
    CoordinationConfig,
    SlotLimiter,
    SlotStore,
    endpoint_key,
    open_slot_store,
)

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class RuntimeSlot(Generic[T]):
    """A typed place in the process runtime for state a layer above the endpoints owns.

    Declare one per kind of state, as a module constant of the module that owns it; the
    value is made by ``factory`` on first use and dropped by :func:`reset_runtime`.

    Attributes:
        name: What the slot holds, for debugging (slots are told apart by identity).
        factory: Makes an empty value (``dict``, a small record class...).
    """

    name: str
    factory: Callable[[], T]


@dataclass
class ServerSlotCount:
    """A server's ``/props`` ``total_slots`` (``None``: unreadable) and until when it holds."""

    count: int | None
    valid_until: float


class ProcessRuntime:
    """Live state of this process: every cache, open client and record of what it learned.

    Attributes:
        lock: Guards the tables below (re-entrant: a factory may use the runtime).
        tool_support: Server base URL -> its chat template parses OpenAI ``tools``
            (``/props``, or learned from a reply that ignored a required call).
        vision_support: Server base URL -> its ``/props`` reports ``modalities.vision``.
        server_slots: Server base URL -> its ``/props`` slot count (prefix affinity).
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.tool_support: dict[str, bool] = {}
        self.vision_support: dict[str, bool] = {}
        self.server_slots: dict[str, ServerSlotCount] = {}
        self._limiters: dict[tuple[str, str], SlotLimiter] = {}
        self._configured: dict[tuple[str, str], int] = {}
        self._health: dict[str, EndpointHealth] = {}
        self._watched: set[int] = set()
        self._slot_stores: dict[tuple[object, ...], SlotStore] = {}
        self._slots: dict[RuntimeSlot[Any], Any] = {}
        self._per_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[RuntimeSlot[Any], Any]
        ] = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------ slots of upper layers

    def get(self, slot: RuntimeSlot[T]) -> T:
        """The process-wide value of ``slot``, made on first use."""
        with self.lock:
            if slot not in self._slots:
                self._slots[slot] = slot.factory()
            return cast(T, self._slots[slot])

    def for_loop(self, slot: RuntimeSlot[T], loop: asyncio.AbstractEventLoop | None = None) -> T:
        """The value of ``slot`` for one event loop (default: the running one).

        Pooled connections, sessions and tasks belong to the loop that opened them: reused
        on a later loop (a second ``asyncio.run``, a notebook cell) they fail with "Event
        loop is closed". State of loops that have closed is dropped here.

        Raises:
            RuntimeError: No loop given and none is running.
        """
        loop = loop or asyncio.get_running_loop()
        with self.lock:
            for closed in [other for other in self._per_loop if other.is_closed()]:
                del self._per_loop[closed]
            values = self._per_loop.setdefault(loop, {})
            if slot not in values:
                values[slot] = slot.factory()
            return cast(T, values[slot])

    # ------------------------------------------------------------------ endpoint state

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

    def slot_store(self, config: CoordinationConfig) -> SlotStore:
        """This process's slot store for a ``[coordination]`` table (one per URL and settings).

        Raises:
            SettingsError: The store URL is malformed.
        """
        url = config.store_url()
        # The pid keeps a forked worker from sharing its parent's store thread and sockets.
        settings = (config.lease_ttl_s, config.on_store_down, config.expected_processes)
        key = (url, *settings, os.getpid())
        with self.lock:
            store = self._slot_stores.get(key)
            if store is None:
                store = self._slot_stores[key] = open_slot_store(config)
            return store

    def reset(self) -> None:
        """Forget everything: limiters, health, stores, server reports and every slot.

        Slot stores that run a thread of their own (Redis) are closed; their held leases
        expire within the lease TTL. Other open things (HTTP clients, MCP sessions) are
        dropped, not closed: they belong to event loops that may have ended.
        """
        with self.lock:
            stores = list(self._slot_stores.values())
            self.tool_support.clear()
            self.vision_support.clear()
            self.server_slots.clear()
            self._limiters.clear()
            self._configured.clear()
            self._health.clear()
            self._watched.clear()
            self._slot_stores.clear()
            self._slots.clear()
            self._per_loop = weakref.WeakKeyDictionary()
        for store in stores:
            close = getattr(store, "close", None)  # the local store has nothing to stop
            if callable(close):
                close()


_runtime = ProcessRuntime()


def process_runtime() -> ProcessRuntime:
    """This process's runtime."""
    return _runtime


def reset_runtime() -> None:
    """Forget all of this process's live state (see :meth:`ProcessRuntime.reset`)."""
    _runtime.reset()


def limiter_for(key: str, name: str, capacity: int, store: SlotStore | None = None) -> SlotLimiter:
    """This process's limiter for a server (see :meth:`ProcessRuntime.limiter`)."""
    return _runtime.limiter(key, name, capacity, store)
