"""The one owner of a process's live fleet state: limiters, health records, per-loop HTTP clients.

:func:`reset_fleet_state` clears all of it (tests, notebooks, a new event loop).
"""

from endpoints.runtime._health import EndpointHealth
from endpoints.runtime._state import fleet_state, limiter_for, reset_fleet_state

__all__ = [
    "EndpointHealth",
    "fleet_state",
    "limiter_for",
    "reset_fleet_state",
]
