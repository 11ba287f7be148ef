"""Operations around a fleet: the embedded fleet, launch scripts and memory plans.

- Embedded fleet (real llama.cpp servers in-process): :class:`EmbeddedFleet`,
  :func:`ensure_embedded_fleet`, :func:`stop_shared_fleets`, :func:`port_is_free`,
  :func:`resolve_model_path`, :class:`EmbeddedFleetError`.
- Launch scripts from the fleet file: :func:`render_launch_script`,
  :func:`write_launch_script`, :func:`llama_server_args`.
- Memory plans (weights, KV cache, buffers against the machine): :func:`plan_fleet`,
  :class:`FleetMemoryPlan`, :class:`EndpointMemory`, :func:`memory_override_bytes`,
  :func:`machine_memory_bytes`, :func:`gib`, :data:`GIB`, and :func:`compare_with_seed`
  (:class:`SeedComparison`) beside the original design's hand estimates.

:mod:`ops.simfleet` (the simulated llama.cpp fleet, ``python -m ops.simfleet``) is a
package of its own; ``ops/profiles/`` holds the bundled fleet files.
"""

from kitty.errors import EmbeddedFleetError
from ops.embedded import (
    EmbeddedFleet,
    ensure_embedded_fleet,
    port_is_free,
    resolve_model_path,
    stop_shared_fleets,
)
from ops.launch import llama_server_args, render_launch_script, write_launch_script
from ops.memory_plan import (
    GIB,
    EndpointMemory,
    FleetMemoryPlan,
    gib,
    machine_memory_bytes,
    memory_override_bytes,
    plan_fleet,
)
from ops.seed_estimates import SeedComparison, compare_with_seed

__all__ = [
    "GIB",
    "EmbeddedFleet",
    "EmbeddedFleetError",
    "EndpointMemory",
    "FleetMemoryPlan",
    "SeedComparison",
    "compare_with_seed",
    "ensure_embedded_fleet",
    "gib",
    "llama_server_args",
    "machine_memory_bytes",
    "memory_override_bytes",
    "plan_fleet",
    "port_is_free",
    "render_launch_script",
    "resolve_model_path",
    "stop_shared_fleets",
    "write_launch_script",
]
