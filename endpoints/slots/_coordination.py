"""How processes sharing one fleet coordinate: the ``[coordination]`` table and its store."""

from __future__ import annotations

import os
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


def open_slot_store(config: CoordinationConfig) -> SlotStore:
    """A new slot store for a ``[coordination]`` table (:data:`LOCAL` for ``local``).

    Opened once per process and settings by
    :meth:`endpoints.runtime.ProcessRuntime.slot_store`; call that instead.

    Raises:
        SettingsError: The store URL is malformed.
    """
    url = config.store_url()
    if url == LOCAL_STORE:
        return LOCAL
    from endpoints.slots._redis_store import RedisSlotStore

    return RedisSlotStore(
        url,
        ttl_s=config.lease_ttl_s,
        on_store_down=config.on_store_down,
        expected_processes=config.expected_processes,
    )
