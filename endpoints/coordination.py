"""How processes sharing one fleet coordinate: the ``[coordination]`` table."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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

    slot_store: str = "local"
    on_store_down: Literal["fail_closed", "degrade"] = "fail_closed"
    expected_processes: int = Field(default=2, ge=1)
    lease_ttl_s: float = Field(default=10.0, gt=0)
