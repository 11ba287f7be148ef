"""``kitty-orch endpoints --watch SECONDS``: did any server get more requests than slots?

A snapshot of ``kitty-orch endpoints`` shows one moment; a cap is about every moment. The
watch polls every server for a while (its own ``/slots`` and ``/metrics``, and the slot
store's leases) and prints the peaks. ``requests_deferred`` is llama.cpp's count of
requests waiting inside the server for a slot: while every orchestrator respects the cap it
stays 0; ``/slots`` busy alone can never exceed the server's slots, so it cannot show
oversubscription.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
from rich.table import Table

from endpoints import FleetConfig, FleetRuntime, probe_endpoint

POLL_S = 0.25


@dataclass
class EndpointPeaks:
    """What one server showed at its busiest during a watch."""

    name: str
    slots: int | None
    busy: int = 0
    processing: int = 0
    deferred: int = 0
    leases: int = 0
    queued: int = 0
    has_metrics: bool = False
    samples: int = 0

    @property
    def cap_held(self) -> bool:
        """No request ever waited inside the server (unknown without ``--metrics``)."""
        return self.deferred == 0


async def watch_endpoints(
    config: FleetConfig,
    runtime: FleetRuntime,
    seconds: float,
    timeout: float,
    into: list[EndpointPeaks] | None = None,
) -> list[EndpointPeaks]:
    """Poll every llama.cpp server of ``config`` for ``seconds``; returns the peaks.

    Args:
        config: The fleet.
        runtime: Its runtime (for the slot store's leases).
        seconds: How long to watch.
        timeout: Seconds per probe request.
        into: A list the peaks are put in as they are found, so a caller interrupted
            (Ctrl-C) still has them.
    """
    handles = [h for h in runtime.all_handles() if h.config.kind == "llamacpp"]
    peaks = {h.name: EndpointPeaks(h.name, h.config.slots) for h in handles}
    if into is not None:
        into[:] = list(peaks.values())
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:
        while True:
            began = time.monotonic()
            statuses = await asyncio.gather(
                *(probe_endpoint(h.config, client=client, timeout=timeout) for h in handles)
            )
            shared = await runtime.lease_counts()
            for handle, status in zip(handles, statuses, strict=True):
                peak = peaks[handle.name]
                peak.samples += 1
                peak.slots = status.total_slots or peak.slots
                peak.busy = max(peak.busy, status.busy_slots or 0)
                if status.requests_deferred is not None:
                    peak.has_metrics = True
                    peak.deferred = max(peak.deferred, status.requests_deferred)
                    peak.processing = max(peak.processing, status.requests_processing or 0)
                leases, queued = shared.get(handle.name, (0, 0))
                peak.leases, peak.queued = max(peak.leases, leases), max(peak.queued, queued)
            if time.monotonic() >= deadline:
                return list(peaks.values())
            await asyncio.sleep(max(0.0, POLL_S - (time.monotonic() - began)))


def peaks_table(title: str, peaks: list[EndpointPeaks], shared: bool) -> Table:
    """The watch's result: one row per server."""
    table = Table(title=title)
    for column in ("endpoint", "slots", "peak busy", "peak deferred", "cap held", "samples"):
        table.add_column(column)
    if shared:
        table.add_column("peak leases / queued (store)")
    for peak in peaks:
        deferred = str(peak.deferred) if peak.has_metrics else "n/a (no --metrics)"
        held = "n/a" if not peak.has_metrics else "yes" if peak.cap_held else "[red]NO[/]"
        row = [peak.name, str(peak.slots or "?"), str(peak.busy), deferred, held]
        row.append(str(peak.samples))
        if shared:
            row.append(f"{peak.leases} / {peak.queued}")
        table.add_row(*row)
    return table


__all__ = ["EndpointPeaks", "peaks_table", "watch_endpoints"]
