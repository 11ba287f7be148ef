"""``kitty-orch bench``: the benchmark command of :mod:`kitty.bench.command`, on this app.

The benchmarks are not in the default install: the ``bench`` extra adds them (the
kitty-orchestrator-bench distribution, built from ``packaging/bench``). Without them
``kitty-orch bench`` still exists and says in one line what is missing and the ``pip install``
that adds it; :mod:`kitty.bench` is imported only when it is there.
"""

from __future__ import annotations

import importlib.util

import typer

from kitty.cli._app import app
from kitty.cli._errors import fail, shows_errors

BENCH_INSTALL = "pip install 'kitty-orchestrator[bench]'"
"""The command that adds the benchmarks to an install without them."""


def bench_missing(command: str) -> str:
    """The one line ``command`` prints when the ``bench`` extra is not installed."""
    return (
        f"{command} needs the benchmarks (kitty.bench), which are not installed; "
        f"add them with: {BENCH_INSTALL}"
    )


def bench_installed() -> bool:
    """Whether :mod:`kitty.bench` is there (the ``bench`` extra, or a source checkout)."""
    return importlib.util.find_spec("kitty.bench") is not None


def add_bench_command(cli: typer.Typer, *, installed: bool) -> None:
    """Register ``bench`` on ``cli``: the benchmarks if ``installed``, else the install hint."""
    if installed:
        from kitty.bench.command import bench

        cli.command("bench")(shows_errors(bench))
        return

    def bench_not_installed() -> None:
        """Run the benchmarks (needs the bench extra, which is not installed)."""
        fail(bench_missing("kitty-orch bench"))

    # Whatever the arguments (a suite, --smoke...), the one line above is the answer.
    cli.command(
        "bench",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(bench_not_installed)


add_bench_command(app, installed=bench_installed())
