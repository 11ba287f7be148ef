"""Model servers: the fleet file, slot limits, probes, routing with fallback, chat models.

The names below are the package's surface (the graph, the CLI and the service use only
these); the subpackages behind it hold the internals:

- :mod:`endpoints.calls`: the one call layer (:func:`call_tiers`, :class:`ModelRequest`).
- :mod:`endpoints.config`: the fleet file (:func:`load_fleet`, :class:`FleetConfig`...).
- :mod:`endpoints.clients`: one model server's clients and probes.
- :mod:`endpoints.fleet`: a fleet at run time (:class:`FleetRuntime`, :func:`get_runtime`).
- :mod:`endpoints.runtime`: the one owner of a process's live fleet state.
- :mod:`endpoints.slots`: slot limiters and their stores (in-process or Redis).
"""

from endpoints.calls import (
    CallLimits,
    CallOutcome,
    ModelCall,
    ModelRequest,
    ModelSettings,
    ResponseFormat,
    ToolBinding,
    call_tiers,
)
from endpoints.clients import is_busy_error, is_endpoint_failure, make_chat_model
from endpoints.clients.probes import EndpointStatus, probe_all, probe_endpoint
from endpoints.config import (
    DEFAULT_FLEET,
    FLEET_ENV_VAR,
    EndpointConfig,
    FetchSettings,
    FleetConfig,
    FleetError,
    LaunchSettings,
    TierConfig,
    available_profiles,
    load_fleet,
)
from endpoints.fleet import EndpointHandle, FleetRuntime, get_runtime, health_for
from endpoints.runtime import EndpointHealth
from endpoints.slots import COMMAND_TIMEOUT_S as REDIS_COMMAND_TIMEOUT_S
from endpoints.slots import CONNECT_TIMEOUT_S as REDIS_CONNECT_TIMEOUT_S
from endpoints.slots import (
    LOCAL_STORE,
    SLOT_STORE_ENV,
    CoordinationConfig,
    LimiterStats,
    SlotLimiter,
    SlotTimeoutError,
    hide_password,
)

__all__ = [
    "DEFAULT_FLEET",
    "FLEET_ENV_VAR",
    "LOCAL_STORE",
    "REDIS_COMMAND_TIMEOUT_S",
    "REDIS_CONNECT_TIMEOUT_S",
    "SLOT_STORE_ENV",
    "CallLimits",
    "CallOutcome",
    "CoordinationConfig",
    "EndpointConfig",
    "EndpointHandle",
    "EndpointHealth",
    "EndpointStatus",
    "FetchSettings",
    "FleetConfig",
    "FleetError",
    "FleetRuntime",
    "LaunchSettings",
    "LimiterStats",
    "ModelCall",
    "ModelRequest",
    "ModelSettings",
    "ResponseFormat",
    "SlotLimiter",
    "SlotTimeoutError",
    "TierConfig",
    "ToolBinding",
    "available_profiles",
    "call_tiers",
    "get_runtime",
    "health_for",
    "hide_password",
    "is_busy_error",
    "is_endpoint_failure",
    "load_fleet",
    "make_chat_model",
    "probe_all",
    "probe_endpoint",
]
