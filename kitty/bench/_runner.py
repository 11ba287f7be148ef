"""Run benchmark suites and write their results (`kitty-orch bench`, `python -m kitty.bench`)."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from kitty.bench._env import BenchEnv, machine
from kitty.bench._report import docs_page_for, save
from kitty.errors import SettingsError

Suite = Callable[[BenchEnv], Awaitable[dict[str, Any]]]


def _suites() -> dict[str, Suite]:
    from kitty.bench._contention import run_contention
    from kitty.bench._fairness import run_fairness
    from kitty.bench._overhead import run_overhead
    from kitty.bench._planner_validity import run_planner
    from kitty.bench._scale import run_scale
    from kitty.bench._scheduling import run_scheduling
    from kitty.bench._service_overhead import run_service
    from kitty.bench._simulated import run_simulated
    from kitty.bench._tools import run_tools

    return {
        "scheduling": run_scheduling,
        "overhead": run_overhead,
        "planner": run_planner,
        "scale": run_scale,
        "sim": run_simulated,
        "service": run_service,
        "tools": run_tools,
        "contention": run_contention,
        "fairness": run_fairness,
    }


SUITE_NAMES = [
    "scheduling",
    "overhead",
    "planner",
    "scale",
    "sim",
    "service",
    "tools",
    "contention",
    "fairness",
]


def resolve(selection: str) -> list[str]:
    """Suite names for ``all`` or one name.

    Raises:
        SettingsError: Unknown suite; the message lists the valid ones.
    """
    if selection == "all":
        return list(SUITE_NAMES)
    if selection not in SUITE_NAMES:
        raise SettingsError(
            f"unknown benchmark {selection!r}; choose all or one of {', '.join(SUITE_NAMES)}"
        )
    return [selection]


async def run_suites(env: BenchEnv, names: list[str]) -> dict[str, Any]:
    """Run suites one after another; a failing suite is recorded and the rest still run.

    Returns:
        The merged results (this run's suites plus earlier ones found in ``env.out``).
    """
    suites = _suites()
    results: dict[str, Any] = {}
    kitty_logger = logging.getLogger("kitty")
    if not kitty_logger.handlers:  # the planner suite counts warnings; don't print them
        kitty_logger.addHandler(logging.NullHandler())
    for name in names:
        env.log(f"[{name}]")
        began = time.perf_counter()
        try:
            result = await suites[name](env)
        except Exception as exc:  # keep the other suites' numbers
            env.log(traceback.format_exc())
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["meta"] = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "size": env.size,
            "reps": env.reps,
            "fleet": env.label or env.fleet,
            "seconds": round(time.perf_counter() - began, 1),
        }
        results[name] = result
        env.log(f"[{name}] done in {result['meta']['seconds']:.0f}s")
    data = save(env.out, results, machine())
    page = docs_page_for(env.out)
    if page is not None:
        env.log(f"rewrote the docs site's benchmarks page, {page}")
    return data


def run(env: BenchEnv, selection: str = "all", *, own_fleet: bool = False) -> dict[str, Any]:
    """Synchronous entry: run the selection and write ``results.md`` / ``results.json``.

    Results in ``docs/bench`` of a MkDocs project also rewrite its ``docs/benchmarks.md``.

    Args:
        env: Settings.
        selection: ``all`` or a suite name.
        own_fleet: Run on a private copy of the (embedded) fleet on free ports.
    """
    names = resolve(selection)
    if not own_fleet:
        return asyncio.run(run_suites(env, names))
    from kitty.bench._private import private_fleet

    env.log(f"starting a private copy of fleet {env.fleet!r} on free ports")
    with private_fleet(env.fleet) as path:
        private = replace(env, fleet=path, _config=None)
        private.label = f"{env.fleet} (private copy on free ports)"
        return asyncio.run(run_suites(private, names))
