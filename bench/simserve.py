"""Serve the SIMULATED ``m3-ultra-sim`` fleet on free ports for a benchmark suite.

:class:`ops.simfleet.SimFleet` runs the servers on a background thread of this process.
They bind free ports (so a simulated fleet someone else runs on the profile's own ports
is left alone), and a copy of the profile pointing at those ports is written to a
temporary folder: the product reads fleets by name or path.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from endpoints.config import load_fleet, resolve_fleet_path

SIM_PROFILE = "m3-ultra-sim"


def served_profile(urls: dict[str, str], folder: Path, profile: str = SIM_PROFILE) -> str:
    """Write a copy of a fleet file whose endpoints point at ``urls``; returns its path.

    Args:
        urls: Endpoint name -> new base URL.
        folder: Where to write the copy (same file name as the original).
        profile: Fleet profile name or path.
    """
    source = resolve_fleet_path(profile)
    text = source.read_text(encoding="utf-8")
    for endpoint in load_fleet(profile).all_endpoints():
        text = text.replace(f'"{endpoint.base_url}"', f'"{urls[endpoint.name]}"')
    path = folder / source.name
    path.write_text(text, encoding="utf-8")
    return str(path)


@contextmanager
def sim_fleet(time_scale: float, profile: str = SIM_PROFILE) -> Iterator[str]:
    """Serve ``profile`` SIMULATED at ``time_scale``; yields the served fleet file's path.

    Raises:
        ImportError: ``ops.simfleet`` is missing.
    """
    from ops.simfleet import SimFleet

    names = [e.name for e in load_fleet(profile).all_endpoints()]
    sim = SimFleet.from_fleet(
        profile, time_scale=time_scale, overrides={n: {"port": 0} for n in names}
    )
    with sim, tempfile.TemporaryDirectory(prefix="kitty-bench-sim-") as folder:
        yield served_profile(sim.urls, Path(folder), profile)
