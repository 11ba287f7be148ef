"""Model servers: fleet config, slot limiter, probes, routing + fallback, chat models."""

from endpoints.config import (
    EndpointConfig,
    FleetConfig,
    FleetError,
    LaunchSettings,
    TierConfig,
    available_profiles,
    load_fleet,
)
from endpoints.limiter import LimiterStats, SlotLimiter, SlotTimeoutError
from endpoints.models import is_busy_error, is_endpoint_failure, make_chat_model
from endpoints.pool import EndpointHandle, FleetRuntime, get_runtime
from endpoints.probes import EndpointStatus, probe_all, probe_endpoint

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
