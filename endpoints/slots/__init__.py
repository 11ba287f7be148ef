"""Admission control: slot limiters in front of slot stores (in-process or Redis leases).

Priority and fair-share grants (attained service), lease renewal and cross-process coordination.
"""

from endpoints.slots._coordination import SLOT_STORE_ENV, CoordinationConfig, open_slot_store
from endpoints.slots._limiter import LimiterStats, SlotLimiter, SlotOrder, SlotTimeoutError
from endpoints.slots._redis_endpoint import LEASE_LOST
from endpoints.slots._redis_store import COMMAND_TIMEOUT_S, CONNECT_TIMEOUT_S, RedisSlotStore
from endpoints.slots._store import LOCAL, LOCAL_STORE, SlotStore, endpoint_key, hide_password

__all__ = [
    "COMMAND_TIMEOUT_S",
    "CONNECT_TIMEOUT_S",
    "LEASE_LOST",
    "LOCAL",
    "LOCAL_STORE",
    "SLOT_STORE_ENV",
    "CoordinationConfig",
    "LimiterStats",
    "RedisSlotStore",
    "SlotLimiter",
    "SlotOrder",
    "SlotStore",
    "SlotTimeoutError",
    "endpoint_key",
    "hide_password",
    "open_slot_store",
]
