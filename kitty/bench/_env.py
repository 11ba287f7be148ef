"""Shared setup of a benchmark session: fleet, repetitions, output folder, progress log."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from endpoints.config import FleetConfig, load_fleet
from graph import RunResult
from kitty.errors import SettingsError

BenchSize = Literal["full", "quick", "smoke"]
"""How big the workloads are: the published numbers, a few minutes, or the CI smoke run."""


@dataclass
class BenchEnv:
    """Settings every suite reads.

    Attributes:
        fleet: Fleet profile name or path (llama.cpp endpoints: the suites pin token
            counts with ``ignore_eos``).
        size: ``full`` (the published numbers), ``quick`` (small workloads, one
            repetition) or ``smoke`` (the smallest that still runs every suite, for CI).
        reps: Repetitions per measurement (best of ``reps`` is reported); 0 picks 3 for
            ``full`` and 1 otherwise.
        out: Folder for ``results.md``, ``results.json`` and timeline PNGs.
        log: Progress printer.
        label: How results name the fleet (default: ``fleet``).
        processes: Orchestrator processes of the scale suite (``--processes``; 1: one
            process, the in-process suite).
    """

    fleet: str = "embedded"
    size: BenchSize = "full"
    reps: int = 0
    out: Path = Path("docs/bench")
    log: Callable[[str], None] = field(default=lambda message: print(message, flush=True))
    label: str = ""
    processes: int = 1
    _config: FleetConfig | None = None

    def __post_init__(self) -> None:
        if self.size not in ("full", "quick", "smoke"):
            raise SettingsError(f"size must be full, quick or smoke, got {self.size!r}")
        if self.reps < 0:
            raise SettingsError(f"reps must be >= 0 (0 = default), got {self.reps}")
        if self.reps == 0:
            self.reps = 3 if self.size == "full" else 1

    @property
    def config(self) -> FleetConfig:
        """The loaded fleet."""
        if self._config is None:
            self._config = load_fleet(self.fleet)
        return self._config

    def ensure_fleet(self) -> None:
        """Start the embedded fleet in-process unless something already serves it."""
        if self.config.embedded:
            from ops.embedded import ensure_embedded_fleet

            ensure_embedded_fleet(self.config)


def machine() -> dict[str, Any]:
    """Where the numbers came from."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_1m": round(psutil.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def plot(env: BenchEnv, result: RunResult | None, name: str) -> str | None:
    """Write a timeline PNG of a product run; returns the file name or ``None``."""
    if result is None:
        return None
    from graph.charts import plot_timeline

    path = env.out / f"timeline-{name}.png"
    try:
        env.out.mkdir(parents=True, exist_ok=True)
        plot_timeline(result, path)
    except Exception as exc:  # a plotting problem must not lose the measurements
        env.log(f"  (timeline {name} not written: {exc})")
        return None
    return path.name
