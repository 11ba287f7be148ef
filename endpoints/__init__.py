"""Model servers: fleet config, slot limiter, probes, routing + fallback, chat models."""

from endpoints.clients import is_busy_error, is_endpoint_failure, make_chat_model
from endpoints.clients.probes import EndpointStatus, probe_all, probe_endpoint
from endpoints.config import (
    EndpointConfig,
    FleetConfig,
    FleetError,
    LaunchSettings,
    TierConfig,
    available_profiles,
    load_fleet,
)
from endpoints.fleet import EndpointHandle, FleetRuntime, get_runtime
from endpoints.slots import LimiterStats, SlotLimiter, SlotTimeoutError

__all__ = [
    "EndpointConfig",
    "EndpointHandle",
    "EndpointStatus",
    "FleetConfig",
    "FleetError",
    "FleetRuntime",
    "LaunchSettings",
    "LimiterStats",
    "SlotLimiter",
    "SlotTimeoutError",
    "TierConfig",
    "available_profiles",
    "get_runtime",
    "is_busy_error",
    "is_endpoint_failure",
    "load_fleet",
    "make_chat_model",
    "probe_all",
    "probe_endpoint",
]
