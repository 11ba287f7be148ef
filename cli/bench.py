"""``kitty-orch bench [all|scheduling|overhead|planner|scale|sim]``: the benchmarks.

Runs the suites of :mod:`bench` on the fleet (the embedded one by default, started
in-process when nothing serves it), prints progress and the result tables, and writes
``results.md`` + ``results.json`` (and timeline PNGs) to ``--out``. ``python -m bench``
is the same command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli.app import FLEET_HELP, app
from cli.fleet import fail
from endpoints.config import DEFAULT_FLEET, FLEET_ENV_VAR, FleetError
from ops.embedded import EmbeddedFleetError

console = Console(highlight=False)

SUITE_HELP = "all, or one of: scheduling, overhead, planner, scale, sim."


@app.command("bench")
def bench(
    suite: Annotated[str, typer.Argument(help=SUITE_HELP)] = "all",
    quick: Annotated[
        bool, typer.Option("--quick", help="Small workloads, one repetition (a few minutes).")
    ] = False,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="Smallest workloads that still run every suite (CI).")
    ] = False,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for results.md/results.json/PNGs.")
    ] = Path("docs/bench"),
    reps: Annotated[
        int, typer.Option("--reps", min=0, help="Best of N repetitions (0: 3, or 1 if quick).")
    ] = 0,
    fleet: Annotated[str | None, typer.Option("--fleet", "-f", help=FLEET_HELP)] = None,
    own_fleet: Annotated[
        bool,
        typer.Option(
            "--own-fleet",
            help="Start a private copy of the embedded fleet on free ports (no other "
            "client shares its slots).",
        ),
    ] = False,
) -> None:
    """Benchmark scheduling, overhead, planner validity, scale and a simulated fleet."""
    from bench.env import BenchEnv
    from bench.report import render
    from bench.runner import resolve, run

    try:
        names = resolve(suite)
    except ValueError as exc:
        fail(str(exc))
    size = "smoke" if smoke else "quick" if quick else "full"
    fleet = fleet or os.environ.get(FLEET_ENV_VAR) or DEFAULT_FLEET
    try:
        env = BenchEnv(
            fleet=fleet, size=size, reps=reps, out=out, log=lambda m: console.print(m, markup=False)
        )
        env.config  # noqa: B018  (load the fleet now: a bad name fails before any work)
    except (FleetError, ValueError) as exc:
        fail(str(exc))
    if any(e.kind != "llamacpp" for e in env.config.all_endpoints()):
        fail(
            f"fleet {env.config.name!r} has non-llama.cpp endpoints; the benchmarks pin "
            "token counts with llama.cpp's ignore_eos. Use --fleet embedded or a llama.cpp fleet"
        )
    console.print(f"kitty-orch bench {' '.join(names)} ({size}, fleet {fleet}) -> {out}")
    try:
        data = run(env, suite, own_fleet=own_fleet)
    except (ValueError, EmbeddedFleetError) as exc:
        fail(str(exc))
    console.print(
        render({**data, "suites": {k: data["suites"][k] for k in names}}),
        markup=False,
        soft_wrap=True,
    )
    console.print(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    failed = [n for n in names if data["suites"][n].get("error")]
    if failed:
        fail(f"suites failed: {', '.join(failed)} (see results.md)", code=1)
