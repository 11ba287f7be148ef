"""The one owner of a process's live state: :class:`ProcessRuntime` and its typed slots.

:func:`reset_runtime` forgets all of it (tests, notebooks, servers restarted).
"""

from endpoints.runtime._health import EndpointHealth
from endpoints.runtime._runtime import (
    ProcessRuntime,
    RuntimeSlot,
    ServerSlotCount,
    limiter_for,
    process_runtime,
    reset_runtime,
)

__all__ = [
    "EndpointHealth",
    "ProcessRuntime",
    "RuntimeSlot",
    "ServerSlotCount",
    "limiter_for",
    "process_runtime",
    "reset_runtime",
]
