"""Serve the SIMULATED ``m3-ultra-sim`` fleet on free ports for a benchmark suite.

:class:`ops.simfleet.SimFleet` runs the servers on a background thread of this process.
They bind free ports (so a simulated fleet someone else runs on the profile's own ports
is left alone), and a copy of the profile pointing at those ports is written to a
temporary folder: the product reads fleets by name or path.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from endpoints.config import load_fleet, resolve_fleet_path

SIM_PROFILE = "m3-ultra-sim"

_SLOTS_LINE = re.compile(r"^slots\s*=\s*\d+\s*$", re.MULTILINE)


def _set_slots(block: str, slots: int) -> str:
    """One endpoint's TOML block with its ``slots`` line set (added when missing)."""
    if _SLOTS_LINE.search(block):
        return _SLOTS_LINE.sub(f"slots = {slots}", block, count=1)
    # the endpoint has no slots line: put one right under its base_url
    return re.sub(r"^(base_url\s*=.*)$", rf"\1\nslots = {slots}", block, count=1, flags=re.M)


def served_profile(
    urls: Mapping[str, str],
    folder: Path,
    profile: str = SIM_PROFILE,
    slots: Mapping[str, int] | None = None,
) -> str:
    """Write a copy of a fleet file whose endpoints point at ``urls``; returns its path.

    Args:
        urls: Endpoint name -> new base URL.
        folder: Where to write the copy (same file name as the original).
        profile: Fleet profile name or path.
        slots: Endpoint name -> slot count to write instead of the file's own.
    """
    source = resolve_fleet_path(profile)
    text = source.read_text(encoding="utf-8")
    endpoints = load_fleet(profile).all_endpoints()
    if slots:
        # Each ``[[tiers.X.endpoints]]`` header starts one endpoint's block (its own
        # sub-tables follow it), so the block of an endpoint is found by its base_url.
        blocks = re.split(r"(?m)^(?=\[\[tiers\.)", text)
        for index, block in enumerate(blocks):
            for endpoint in endpoints:
                if endpoint.name in slots and f'"{endpoint.base_url}"' in block:
                    blocks[index] = _set_slots(block, slots[endpoint.name])
        text = "".join(blocks)
    for endpoint in endpoints:
        text = text.replace(f'"{endpoint.base_url}"', f'"{urls[endpoint.name]}"')
    path = folder / source.name
    path.write_text(text, encoding="utf-8")
    return str(path)


@contextmanager
def sim_fleet(
    time_scale: float, profile: str = SIM_PROFILE, slots: Mapping[str, int] | None = None
) -> Iterator[str]:
    """Serve ``profile`` SIMULATED at ``time_scale``; yields the served fleet file's path.

    Args:
        time_scale: Wall seconds per simulated second.
        profile: Fleet profile name or path.
        slots: Endpoint name -> slots, for the simulated server and the served file alike
            (e.g. scarce slots for the contention suite).

    Raises:
        ImportError: ``ops.simfleet`` is missing.
    """
    from ops.simfleet import SimFleet

    names = [e.name for e in load_fleet(profile).all_endpoints()]
    overrides: dict[str, dict[str, Any]] = {n: {"port": 0} for n in names}
    for name, count in (slots or {}).items():
        overrides[name]["slots"] = count
    sim = SimFleet.from_fleet(profile, time_scale=time_scale, overrides=overrides)
    with sim, tempfile.TemporaryDirectory(prefix="kitty-bench-sim-") as folder:
        yield served_profile(sim.urls, Path(folder), profile, slots)
