"""Suite 6: what the HTTP service costs over the Python API, on the same pinned run.

A 2-task run (coder -> vision_analyst, 4 pinned tokens each, an 8-token synthesis, no
voice summary) goes once through :func:`graph.arun_goal` and once as ``POST
/api/query/parallel`` to the service, per round; rounds alternate which goes first and
every run carries its own marker of equal length, so neither side profits from the
other's llama.cpp prompt cache. The service runs in this process on real uvicorn, on a
free loopback port, with a bearer token (the middleware a deployment has), on the same
fleet. One unmeasured pair first pays for imports, graph compile and connections.

Reported: the median wall time of each side, their ratio (HTTP / direct), and the
median of "HTTP time minus the run's own ``metrics.wall_s``": what the request costs
around the run (client, socket, uvicorn, middleware, validation, serialization). Client
and server share one event loop and the machine's cores here, as a caller on the same
host would.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from graph import Plan, arun_goal
from kitty.bench._env import BenchEnv
from kitty.bench._workload import pinned

QUERY_PATH = "/api/query/parallel"
ROUNDS = {"full": 9, "quick": 5, "smoke": 2}
TOKENS_PER_TASK = 4
RUN_SETTINGS: dict[str, Any] = {"synthesis_max_tokens": 8, "summary_max_tokens": 8}
STARTUP_TIMEOUT_S = 60.0


def pinned_run(marker: str) -> Plan:
    """Two pinned tasks (``svc_b`` depends on ``svc_a``) on the coder and vision tiers."""
    return Plan(
        tasks=[
            pinned(
                "svc_a", "coder", TOKENS_PER_TASK, what=f"[{marker}] Name one sorting algorithm."
            ),
            pinned(
                "svc_b",
                "vision_analyst",
                TOKENS_PER_TASK,
                ["svc_a"],
                what=f"[{marker}] Say one word about it.",
            ),
        ],
        source="given",
    )


@asynccontextmanager
async def served(fleet: str, token: str) -> AsyncIterator[str]:
    """Run the service on real uvicorn in this event loop; yields its base URL.

    Port 0 lets the kernel pick a free loopback port (no race with other processes).
    """
    from kitty.service import ServiceSettings, make_server

    settings = ServiceSettings(
        host="127.0.0.1",
        port=0,
        fleet=fleet,
        api_token=token,
        start_embedded=False,  # the suite started the fleet already
        context_overrides=RUN_SETTINGS,
    )
    server = make_server(settings, log_level="warning")
    serving = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if serving.done():
                await serving  # raises what stopped it
                raise RuntimeError("the service stopped before it started serving")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start in {STARTUP_TIMEOUT_S:g} s")
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def run_direct(fleet: str, marker: str) -> tuple[float, float]:
    """One run through :func:`graph.arun_goal`; returns (caller's seconds, run's wall_s)."""
    began = time.perf_counter()
    result = await arun_goal(
        f"service overhead {marker}",
        plan=pinned_run(marker),
        max_tasks=2,
        voice=False,
        fleet=fleet,
        **RUN_SETTINGS,
    )
    elapsed = time.perf_counter() - began
    failed = [t.task_id for t in result.tasks if t.status != "completed"]
    if failed:
        raise RuntimeError(f"direct run {marker}: tasks not completed: {', '.join(failed)}")
    return elapsed, result.metrics.wall_s


async def run_http(http: httpx.AsyncClient, marker: str) -> tuple[float, float]:
    """The same run as one HTTP request; returns (caller's seconds, run's wall_s)."""
    plan = pinned_run(marker)
    body = {
        "query": f"service overhead {marker}",
        "max_tasks": 2,
        "voice_mode": False,
        "plan": {"tasks": [t.model_dump(mode="json") for t in plan.tasks]},
    }
    began = time.perf_counter()
    response = await http.post(QUERY_PATH, json=body)
    elapsed = time.perf_counter() - began
    if response.status_code != 200:
        raise RuntimeError(f"HTTP run {marker}: {response.status_code} {response.text[:300]}")
    payload = response.json()
    failed = [t["task_id"] for t in payload["tasks"] if t["status"] != "completed"]
    if failed:
        raise RuntimeError(f"HTTP run {marker}: tasks not completed: {', '.join(failed)}")
    return elapsed, float(payload["metrics"]["wall_s"])


def _ms(values: list[float]) -> list[float]:
    return [round(v * 1000, 1) for v in values]


async def run_service(env: BenchEnv) -> dict[str, Any]:
    """Run the suite; returns JSON-ready results."""
    env.ensure_fleet()
    rounds = ROUNDS[env.size]
    token = secrets.token_urlsafe(24)
    direct_s: list[float] = []
    direct_wall_s: list[float] = []
    http_s: list[float] = []
    http_wall_s: list[float] = []
    async with (
        served(env.fleet, token) as base_url,
        httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(600),
        ) as http,
    ):
        await run_direct(env.fleet, "DW")  # unmeasured warm-up of both paths
        await run_http(http, "HW")
        for index in range(rounds):
            order = ["http", "direct"] if index % 2 else ["direct", "http"]
            for side in order:
                if side == "direct":
                    elapsed, wall = await run_direct(env.fleet, f"D{index}")
                    direct_s.append(elapsed)
                    direct_wall_s.append(wall)
                else:
                    elapsed, wall = await run_http(http, f"H{index}")
                    http_s.append(elapsed)
                    http_wall_s.append(wall)
            env.log(
                f"  round {index + 1}/{rounds} ({' first, '.join(order)} second): direct "
                f"{direct_s[-1] * 1000:.0f} ms, HTTP {http_s[-1] * 1000:.0f} ms "
                f"(the run's own wall_s {http_wall_s[-1] * 1000:.0f} ms)"
            )
    outside = [h - w for h, w in zip(http_s, http_wall_s, strict=True)]
    direct_outside = [d - w for d, w in zip(direct_s, direct_wall_s, strict=True)]
    direct_median = statistics.median(direct_s)
    http_median = statistics.median(http_s)
    result = {
        "rounds": rounds,
        "tasks": 2,
        "tokens_per_task": TOKENS_PER_TASK,
        "median_direct_ms": round(direct_median * 1000, 1),
        "median_http_ms": round(http_median * 1000, 1),
        "ratio_http_to_direct": round(http_median / direct_median, 3),
        "median_round_ratio": round(
            statistics.median(h / d for h, d in zip(http_s, direct_s, strict=True)), 3
        ),
        "median_http_minus_wall_ms": round(statistics.median(outside) * 1000, 1),
        "min_http_minus_wall_ms": round(min(outside) * 1000, 1),
        "max_http_minus_wall_ms": round(max(outside) * 1000, 1),
        "median_direct_minus_wall_ms": round(statistics.median(direct_outside) * 1000, 1),
        "direct_ms": _ms(direct_s),
        "http_ms": _ms(http_s),
        "http_wall_ms": _ms(http_wall_s),
        "direct_wall_ms": _ms(direct_wall_s),
    }
    env.log(
        f"  {rounds} alternating rounds: median direct {result['median_direct_ms']:.0f} ms, "
        f"HTTP {result['median_http_ms']:.0f} ms -> {result['ratio_http_to_direct']:.3f}x; "
        f"HTTP minus the run's wall_s: median {result['median_http_minus_wall_ms']:.1f} ms "
        f"(min {result['min_http_minus_wall_ms']:.1f}, max {result['max_http_minus_wall_ms']:.1f})"
    )
    return result
