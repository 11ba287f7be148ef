"""``python -m ops.simfleet``: serve a SIMULATED fleet profile until Ctrl-C."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from kitty.errors import SimFleetError
from ops.simfleet._fleet import DEFAULT_SIM_FLEET, SimFleet


def _describe(sim: SimFleet) -> str:
    lines = [
        "SIMULATED llama.cpp fleet (no model runs; timings follow the calibrated model)",
        f"{'endpoint':<20} {'url':<24} {'slots':>5} {'ctx':>6} {'tok/s@1':>8} "
        f"{'agg@slots':>9} {'prefill':>8}",
    ]
    for spec in sim.specs.values():
        lines.append(
            f"{spec.name:<20} {spec.base_url:<24} {spec.slots:>5} {spec.n_ctx:>6} "
            f"{spec.decode_tok_s_1:>8.1f} {spec.aggregate_decode_tok_s(spec.slots):>9.1f} "
            f"{spec.prefill_tok_s:>8.0f}"
        )
    if sim.skipped:
        lines.append(f"not simulated (Ollama endpoints): {', '.join(sim.skipped)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ops.simfleet``: serve a SIMULATED fleet until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m ops.simfleet",
        description="Serve SIMULATED llama.cpp endpoints for a fleet profile (what-if runs).",
    )
    parser.add_argument("--fleet", default=DEFAULT_SIM_FLEET, help="profile name or .toml path")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="wall seconds per simulated second (0.1 = 10x faster)",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be > 0")
    try:
        sim = SimFleet.from_fleet(args.fleet, time_scale=args.time_scale, log_level=args.log_level)
        sim.start()
    except (SimFleetError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    print(_describe(sim))
    print(f"time_scale={args.time_scale:g}; press Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0
