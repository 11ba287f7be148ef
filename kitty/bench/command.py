"""``kitty-orch bench [all|scheduling|overhead|planner|...|contention|fairness]``: the benchmarks.

Runs the suites of :mod:`bench` on the fleet (the embedded one by default, started
in-process when nothing serves it), prints progress and the result tables, and writes
``results.md`` + ``results.json`` (and timeline PNGs) to ``--out``. ``python -m bench``
runs the same command; ``kitty-orch`` registers it as ``kitty-orch bench``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from endpoints.config import DEFAULT_FLEET, FLEET_ENV_VAR
from kitty.errors import FleetError, UserError

console = Console(highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

SUITE_HELP = (
    "all, or one of: scheduling, overhead, planner, scale, sim, service, tools, contention, "
    "fairness."
)
FLEET_HELP = (
    "Fleet profile name (embedded, m3-ultra, ...) or path to a fleet .toml; env KITTY_FLEET."
)

P = ParamSpec("P")
R = TypeVar("R")


def _error(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def _user_errors_exit_2(command: Callable[P, R]) -> Callable[P, R]:
    """A :class:`UserError` prints one red line and exits 2 (as every kitty-orch command)."""

    @functools.wraps(command)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            raise _error(str(exc), 2) from None

    return guarded


@_user_errors_exit_2
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
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            min=1,
            help="scale: N orchestrator processes sharing the fleet through Redis leases, "
            "against one process.",
        ),
    ] = 1,
    own_fleet: Annotated[
        bool,
        typer.Option(
            "--own-fleet",
            help="Start a private copy of the embedded fleet on free ports (no other "
            "client shares its slots).",
        ),
    ] = False,
) -> None:
    """Run benchmark suites (scheduling, contention, fairness, overhead, ...); write results."""
    from kitty.bench._env import BenchEnv, BenchSize
    from kitty.bench._report import render
    from kitty.bench._runner import resolve, run

    names = resolve(suite)
    size: BenchSize = "smoke" if smoke else "quick" if quick else "full"
    fleet = fleet or os.environ.get(FLEET_ENV_VAR) or DEFAULT_FLEET
    env = BenchEnv(
        fleet=fleet,
        size=size,
        reps=reps,
        out=out,
        log=lambda m: console.print(m, markup=False),
        processes=processes,
    )
    config = env.config  # load the fleet now: a bad name fails before any work
    if any(e.kind != "llamacpp" for e in config.all_endpoints()):
        raise FleetError(
            f"fleet {config.name!r} has non-llama.cpp endpoints; the benchmarks pin "
            "token counts with llama.cpp's ignore_eos. Use --fleet embedded or a llama.cpp fleet"
        )
    console.print(f"kitty-orch bench {' '.join(names)} ({size}, fleet {fleet}) -> {out}")
    data = run(env, suite, own_fleet=own_fleet)
    console.print(
        render({**data, "suites": {k: data["suites"][k] for k in names}}),
        markup=False,
        soft_wrap=True,
    )
    console.print(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    failed = [n for n in names if data["suites"][n].get("error")]
    if failed:
        raise _error(f"suites failed: {', '.join(failed)} (see results.md)", 1)
