"""The original design's hand estimates of the M3 Ultra fleet, beside computed figures."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ops.memory_plan import GIB, FleetMemoryPlan

#: The original design's "M3 Ultra 256GB Unified Memory Allocation" table (hand estimates,
#: reference/seed-parallel-orchestration.md), by ``m3-ultra`` endpoint name, in GB.
SEED_ESTIMATES_GB: dict[str, float] = {
    "gpt-oss-120b": 80,
    "athene-q4": 16,
    "qwen32b-coder": 35,
    "gemma3-27b-vision": 18,
    "hermes-8b-summary": 5,
}
SEED_TOTAL_RESIDENT_GB = 154
SEED_OS_HEADROOM_GB = 40
SEED_KV_AVAILABLE_GB = 62
SEED_MACHINE_GB = 256


@dataclass(frozen=True)
class SeedComparison:
    """One line of the original design's table beside the computed figure (GiB)."""

    item: str
    seed_gb: float
    computed_gib: float

    @property
    def ratio(self) -> float:
        """Computed / seed estimate."""
        return self.computed_gib / self.seed_gb if self.seed_gb else math.inf


def compare_with_seed(plan: FleetMemoryPlan) -> list[SeedComparison]:
    """The seed's hand estimates beside the computed numbers (empty for other fleets).

    The seed's "VRAM" column is read as the resident weights, its "available for KV cache"
    as the room the KV caches may take.
    """
    rows = [
        SeedComparison(e.endpoint, SEED_ESTIMATES_GB[e.endpoint], e.weights_bytes / GIB)
        for e in plan.endpoints
        if e.endpoint in SEED_ESTIMATES_GB
    ]
    if not rows:
        return []
    return [
        *rows,
        SeedComparison("total resident weights", SEED_TOTAL_RESIDENT_GB, plan.weights_bytes / GIB),
        SeedComparison("KV cache", SEED_KV_AVAILABLE_GB, plan.kv_bytes / GIB),
        SeedComparison(
            "weights + KV + compute",
            SEED_MACHINE_GB - SEED_OS_HEADROOM_GB,
            plan.total_bytes / GIB,
        ),
    ]
