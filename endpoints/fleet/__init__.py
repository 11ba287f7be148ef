"""A fleet at run time: routing over replicas and fallback chains, slot discovery, prefix affinity.

:class:`FleetRuntime` is what the graph asks for an endpoint of a tier.
"""

from endpoints.fleet._affinity import affinity_applies, pin_slot, prefix_key
from endpoints.fleet._routing import EndpointHandle, FleetRuntime, get_runtime, health_for

__all__ = [
    "EndpointHandle",
    "FleetRuntime",
    "affinity_applies",
    "get_runtime",
    "health_for",
    "pin_slot",
    "prefix_key",
]
