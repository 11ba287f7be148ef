"""A private copy of an embedded fleet on free ports, for measurements nobody else skews.

The embedded fleet's servers are shared by everything on the machine that uses its
ports (tests, notebooks, another run). ``kitty-orch bench --own-fleet`` starts the same
servers (same model, slots, context) on free ports inside the benchmark process instead,
so no other client holds their slots; CPU is still shared.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from endpoints.config import load_fleet
from kitty.bench._simserve import served_profile
from kitty.errors import FleetError


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextmanager
def private_fleet(fleet: str, slots: Mapping[str, int] | None = None) -> Iterator[str]:
    """Start a copy of an embedded fleet on free ports; yields the copy's fleet file.

    Args:
        fleet: Embedded fleet profile name or path.
        slots: Endpoint name -> slots of its copy (default: the fleet file's own).

    Raises:
        FleetError: The fleet is not embedded (its servers are not ours to start).
    """
    from ops.embedded import EmbeddedFleet

    config = load_fleet(fleet)
    if not config.embedded:
        raise FleetError(
            f"--own-fleet needs an embedded fleet; {config.name!r} is served by your own "
            "servers (run without --own-fleet)"
        )
    urls = {e.name: f"http://{e.host}:{free_port(e.host)}" for e in config.all_endpoints()}
    with tempfile.TemporaryDirectory(prefix="kitty-bench-fleet-") as folder:
        path = served_profile(urls, Path(folder), fleet, slots)
        with EmbeddedFleet(path):
            yield path
