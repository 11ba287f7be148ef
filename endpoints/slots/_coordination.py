"""How processes sharing one fleet coordinate: the ``[coordination]`` table and its store."""

from __future__ import annotations

import os
import threading
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from endpoints.slots._store import LOCAL, LOCAL_STORE, SlotStore, check_store_url

SLOT_STORE_ENV = "KITTY_SLOT_STORE"


class CoordinationConfig(BaseModel):
    """Where slot leases live and what happens when that store is unreachable.

    Attributes:
        slot_store: ``local`` (in-process, the default) or ``redis://host:port/db``;
            ``$KITTY_SLOT_STORE`` overrides it.
        on_store_down: ``fail_closed`` (wait, then fail with a clear error) or
            ``degrade`` (each process takes ``slots // expected_processes``, warned).
        expected_processes: Processes sharing the fleet, for ``degrade``.
        lease_ttl_s: A lease not renewed for this long is given back.
    """

    model_config = ConfigDict(extra="forbid")

    slot_store: str = LOCAL_STORE
    on_store_down: Literal["fail_closed", "degrade"] = "fail_closed"
    expected_processes: int = Field(default=2, ge=1)
    lease_ttl_s: float = Field(default=10.0, gt=0)

    @field_validator("slot_store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        return check_store_url(value)

    def store_url(self) -> str:
        """The store in effect: ``$KITTY_SLOT_STORE`` if set, else ``slot_store``.

        Raises:
            SettingsError: ``$KITTY_SLOT_STORE`` is malformed (one line, expected form).
        """
        override = os.environ.get(SLOT_STORE_ENV, "").strip()
        if override:
            return check_store_url(override, source=SLOT_STORE_ENV)
        return self.slot_store


_stores: dict[tuple[object, ...], SlotStore] = {}
_stores_lock = threading.Lock()


def slot_store_for(config: CoordinationConfig) -> SlotStore:
    """This process's slot store for a ``[coordination]`` table (one per URL and settings).

    Raises:
        SettingsError: The store URL is malformed.
    """
    url = config.store_url()
    if url == LOCAL_STORE:
        return LOCAL
    from endpoints.slots._redis_store import RedisSlotStore

    # The pid keeps a forked worker from sharing its parent's store thread and sockets.
    key = (url, config.lease_ttl_s, config.on_store_down, config.expected_processes, os.getpid())
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = RedisSlotStore(
                url,
                ttl_s=config.lease_ttl_s,
                on_store_down=config.on_store_down,
                expected_processes=config.expected_processes,
            )
        return store
