"""Suite 4: scale. Many goals at once through the Python API on one fleet, then a big DAG.

First the cost of a slot lease: acquire + release per task with the local store and with
the Redis store (``$KITTY_SLOT_STORE``, else a throwaway ``redis-server`` when installed),
printed as a ratio.

While the runs go, a sampler polls every server's ``/slots`` every ~20 ms and this
process's RSS (psutil). Reported: every goal completed, the most busy slots seen per
server against its slots, the product's own limiter peaks, peak RSS, and whether a
200-task DAG completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from endpoints.clients.probes import count_busy, fetch_slots
from endpoints.fleet import get_runtime
from endpoints.slots import RedisSlotStore, SlotLimiter
from graph import Plan, RunResult, arun_goal
from kitty.bench._env import BenchEnv
from kitty.bench._throwaway_redis import redis_url
from kitty.bench._workload import ONE_AGENT_PER_TIER, layered_plan, small_goal_plan

SAMPLE_EVERY_S = 0.02
SIZES = {"full": (50, 200), "quick": (16, 60), "smoke": (2, 10)}
SETTINGS = {"voice": False, "synthesis_max_tokens": 4}
LEASE_CYCLES = {"full": 2000, "quick": 500, "smoke": 100}
# Longest wait for the first slot of a fresh Redis (its lease TTL, 10 s by default, + 1 s).
FIRST_GRANT_S = 30.0


async def _cycle_cost_us(limiter: SlotLimiter, cycles: int) -> float:
    """Mean microseconds of one uncontended acquire + release."""
    # Connect and load the scripts; a Redis started just now opens its grants one lease TTL
    # after its start (a restarted Redis may still have holders), so wait that out here.
    limiter.release(await limiter.acquire(timeout=FIRST_GRANT_S))
    began = time.perf_counter()
    for _ in range(cycles):
        limiter.release(await limiter.acquire(timeout=10))
    return (time.perf_counter() - began) / cycles * 1e6


async def lease_overhead(cycles: int) -> dict[str, Any]:
    """Per-task cost of a slot: local store vs Redis leases (``None`` without Redis)."""
    local_us = await _cycle_cost_us(SlotLimiter("bench", 4), cycles)
    with redis_url() as url:
        if url is None:
            return {"local_us": round(local_us, 1), "redis_us": None, "redis_vs_local": None}
        store = RedisSlotStore(url)
        try:
            limiter = SlotLimiter("bench", 4, store=store, key=f"bench-{os.getpid()}")
            redis_us = await _cycle_cost_us(limiter, cycles)
        finally:
            store.close()
    return {
        "local_us": round(local_us, 1),
        "redis_us": round(redis_us, 1),
        "redis_vs_local": round(redis_us / local_us, 1),
    }


@dataclass
class SlotSampler:
    """Polls ``/slots`` of every server and the process RSS until stopped."""

    servers: dict[str, str]
    max_busy: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    failed_polls: int = 0
    peak_rss: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        process = psutil.Process()
        self.max_busy = dict.fromkeys(self.servers, 0)
        async with httpx.AsyncClient() as client:
            while not self._stop.is_set():
                began = time.perf_counter()
                answers = await asyncio.gather(
                    *(fetch_slots(client, url, timeout=1.0) for url in self.servers.values()),
                    return_exceptions=True,
                )
                for name, answer in zip(self.servers, answers, strict=True):
                    if isinstance(answer, BaseException):
                        self.failed_polls += 1
                        continue
                    self.max_busy[name] = max(self.max_busy[name], count_busy(answer))
                self.samples += 1
                self.peak_rss = max(self.peak_rss, process.memory_info().rss)
                pause = SAMPLE_EVERY_S - (time.perf_counter() - began)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(pause, 0.0))

    def stop(self) -> None:
        self._stop.set()


def _completed(result: RunResult | BaseException) -> bool:
    return not isinstance(result, BaseException) and all(
        t.status == "completed" for t in result.tasks
    )


async def _goal(index: int, plan: Plan, env: BenchEnv) -> RunResult:
    return await arun_goal(
        f"Scale test: plan a small printed part, variant {index}",
        plan=plan,
        fleet=env.fleet,
        **SETTINGS,
    )


async def run_scale(env: BenchEnv) -> dict[str, Any]:
    """Run the suite; returns JSON-ready results.

    With ``env.processes`` > 1 (``bench scale --processes N``) the suite is the
    cross-process comparison of :mod:`kitty.bench._scale_processes` instead.
    """
    overhead = await lease_overhead(LEASE_CYCLES[env.size])
    env.log(
        f"  slot lease per task: local {overhead['local_us']} us, "
        f"redis {overhead['redis_us']} us (x{overhead['redis_vs_local']})"
    )
    if env.processes > 1:
        from kitty.bench._scale_processes import run_processes

        return {**await run_processes(env, env.processes), "lease_overhead": overhead}
    env.ensure_fleet()
    goals, dag_tasks = SIZES[env.size]
    runtime = get_runtime(env.fleet)
    await runtime.discover()
    servers = {h.name: h.config.base_url for h in runtime.all_handles()}
    slots = {h.name: h.limiter.capacity for h in runtime.all_handles()}
    sampler = SlotSampler(servers)
    sampling = asyncio.create_task(sampler.run())
    rss_before = psutil.Process().memory_info().rss
    try:
        began = time.perf_counter()
        results = await asyncio.gather(
            *(_goal(i, small_goal_plan(i), env) for i in range(goals)), return_exceptions=True
        )
        goals_wall = time.perf_counter() - began
        began = time.perf_counter()
        big = await arun_goal(
            f"Scale test: a {dag_tasks}-task plan",
            plan=layered_plan(dag_tasks, tokens=2, agents=ONE_AGENT_PER_TIER),
            fleet=env.fleet,
            **SETTINGS,
        )
        dag_wall = time.perf_counter() - began
    finally:
        sampler.stop()
        await sampling
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    limiter_peaks = {h.name: h.limiter.stats().peak_in_use for h in runtime.all_handles()}
    over = {n: b for n, b in sampler.max_busy.items() if b > slots[n]}
    summary = {
        "lease_overhead": overhead,
        "goals": goals,
        "goals_completed": sum(1 for r in results if _completed(r)),
        "goals_wall_s": round(goals_wall, 2),
        "goal_errors": errors[:5],
        "max_busy_slots": sampler.max_busy,
        "slots": slots,
        "slots_never_exceeded": not over
        and all(limiter_peaks[n] <= slots[n] for n in limiter_peaks),
        "limiter_peak_in_use": limiter_peaks,
        "slot_samples": sampler.samples,
        "failed_polls": sampler.failed_polls,
        "rss_before_mb": round(rss_before / 2**20, 1),
        "peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
        "fleet_in_process": _serves_in_process({h.config.port for h in runtime.all_handles()}),
        "dag_tasks": dag_tasks,
        "dag_completed": sum(1 for t in big.tasks if t.status == "completed"),
        "dag_wall_s": round(dag_wall, 2),
        "dag_execution_s": round(big.metrics.execution_s, 2),
        "dag_peak_concurrency": big.metrics.peak_concurrency,
    }
    env.log(
        f"  {summary['goals_completed']}/{goals} goals in {goals_wall:.1f}s; "
        f"{summary['dag_completed']}/{dag_tasks}-task DAG in {dag_wall:.1f}s; "
        f"max busy {sampler.max_busy} vs slots {slots}; peak RSS {summary['peak_rss_mb']} MB"
    )
    return summary


def _serves_in_process(ports: set[int]) -> bool:
    """True when this process listens on one of the fleet's ports (servers in its RSS)."""
    try:
        listening = {
            c.laddr.port
            for c in psutil.Process().net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        }
    except psutil.Error:
        return False
    return bool(listening & ports)
