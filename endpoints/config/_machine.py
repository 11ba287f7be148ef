"""The machine a fleet file is for (``[machine]``): its name and memory.

A fleet written for one machine (the shipped ``m3-ultra`` profile is a 256 GiB Mac Studio)
can be planned from any other: ``kitty-orch fleet plan`` compares the fleet's memory with
the memory declared here instead of the memory of the machine it runs on.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Far above any machine today (the largest single-host memories are a few TiB): a larger
# figure is a typo (bytes or MiB given as GiB), not a machine.
MAX_MACHINE_GIB = 64 * 1024


class MachineConfig(BaseModel):
    """``[machine]``: the machine the fleet file is written for.

    Attributes:
        name: What the machine is, for people (``"Mac Studio M3 Ultra"``).
        memory_gib: Its memory in GiB (1 GiB = 1024**3 bytes), what ``fleet plan``
            compares the fleet's needs with.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200)
    memory_gib: float = Field(gt=0, le=MAX_MACHINE_GIB)
