"""The one place the CLI starts model servers: an embedded fleet, for as long as it is needed.

``kitty-orch run`` and ``resume`` start the servers of an ``embedded = true`` fleet that
nothing serves yet and stop them when the run ends; ``kitty-orch fleet up`` serves them
until Ctrl-C. Endpoints already served (by ``fleet up`` in another terminal, say) are
reused, not started twice (:class:`ops.embedded.EmbeddedFleet`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.markup import escape

from endpoints import FleetConfig
from kitty.cli._console import err_console
from ops import EmbeddedFleet


@contextmanager
def embedded_servers(
    config: FleetConfig,
    *,
    announce: bool,
    verbose: bool = False,
    startup_timeout_s: float = 60.0,
) -> Iterator[EmbeddedFleet | None]:
    """Serve an embedded fleet inside the ``with`` block (nothing for other fleets).

    Args:
        config: The fleet; only ``embedded = true`` fleets are started.
        announce: Say on stderr how many servers were started, and that they stop with
            the run.
        verbose: Let llama.cpp log to stderr.
        startup_timeout_s: Seconds to wait for each server's ``/health``.

    Yields:
        The started fleet (``servers`` started here, ``reused`` found running), or
        ``None`` when the fleet is not embedded.

    Raises:
        EmbeddedFleetError: A server cannot start (port taken, model missing...); the
            ones started before are stopped.
    """
    if not config.embedded:
        yield None
        return
    fleet = EmbeddedFleet(config, verbose=verbose, startup_timeout_s=startup_timeout_s)
    began = time.perf_counter()
    fleet.start()
    try:
        if announce and fleet.servers:
            err_console.print(
                f"[dim]started {len(fleet.servers)} embedded llama.cpp server(s) for fleet "
                f"{escape(config.name)} in {time.perf_counter() - began:.1f} s; "
                "they stop when the run ends[/]"
            )
        yield fleet
    finally:
        fleet.stop()
