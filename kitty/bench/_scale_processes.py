"""``bench scale --processes N``: N orchestrator processes on one fleet, side by side.

The same goals (:func:`kitty.bench._workload.small_goal_plan`, a few in flight per process) run
three ways, one after the other on the same servers:

- ``1 process``: one orchestrator, the local slot store (what one user sees today);
- ``N processes, local store``: each process caps slots for itself only, so together they
  send a server more requests than it has slots (the failure the Redis store fixes);
- ``N processes, redis``: leases shared through Redis (``$KITTY_SLOT_STORE``, else a
  throwaway ``redis-server``).

While each runs, every server's own ``/slots`` (busy) and ``/metrics``
(``llamacpp:requests_deferred``: requests waiting inside llama.cpp for a slot) are polled
every 100 ms. A cap held means ``requests_deferred`` stayed 0; ``/slots`` busy can never
exceed the server's slots, so it alone cannot show oversubscription. Reported per variant:
goals completed, wall seconds, completed goals per minute, peaks; and the ratio of goals per minute
of N processes (Redis) to one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from endpoints.clients.probes import count_busy, fetch_slots
from endpoints.config import resolve_fleet_path
from endpoints.fleet import get_runtime
from endpoints.slots import SLOT_STORE_ENV
from kitty.bench._env import BenchEnv
from kitty.bench._throwaway_redis import redis_url
from kitty.errors import SettingsError

ROOT = Path(__file__).resolve().parents[1]
GOALS_PER_PROCESS = {"full": 50, "quick": 12, "smoke": 2}
IN_FLIGHT_PER_PROCESS = 6
SAMPLE_EVERY_S = 0.1
READY_TIMEOUT_S = 180.0
LEASE_TTL_S = 5.0


@dataclass
class ServerSampler:
    """Peak busy slots (``/slots``) and deferred requests (``/metrics``) per server."""

    servers: dict[str, str]
    busy: dict[str, int] = field(default_factory=dict)
    deferred: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    failed_polls: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _poll(self, client: httpx.AsyncClient, name: str, url: str) -> None:
        try:
            busy = count_busy(await fetch_slots(client, url, timeout=1.0))
            metrics = (await client.get(f"{url}/metrics", timeout=1.0)).text
        except (httpx.HTTPError, ValueError):
            self.failed_polls += 1
            return
        self.busy[name] = max(self.busy.get(name, 0), busy)
        for line in metrics.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "llamacpp:requests_deferred":
                self.deferred[name] = max(self.deferred.get(name, 0), int(float(parts[1])))

    async def run(self) -> None:
        """Poll until :meth:`stop`."""
        async with httpx.AsyncClient() as client:
            while not self._stop.is_set():
                await asyncio.gather(*(self._poll(client, n, u) for n, u in self.servers.items()))
                self.samples += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), SAMPLE_EVERY_S)

    def stop(self) -> None:
        """End :meth:`run`."""
        self._stop.set()


def fleet_with_store(fleet: str, store: str | None, folder: Path) -> str:
    """A copy of the fleet file whose ``[coordination]`` uses ``store`` (``None``: local)."""
    source = resolve_fleet_path(fleet)
    text = source.read_text(encoding="utf-8")
    if "[coordination]" in text:
        raise SettingsError(
            f"bench scale --processes sets [coordination] itself; {source} already has one: "
            "use a copy of the fleet file without that table"
        )
    name = "redis" if store else "local"
    path = folder / f"{source.stem}-{name}.toml"
    if store:
        text += f'\n[coordination]\nslot_store = "{store}"\nlease_ttl_s = {LEASE_TTL_S}\n'
    path.write_text(text, encoding="utf-8")
    return str(path)


async def _readline(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(timeout):
        return await asyncio.to_thread(process.stdout.readline)


async def run_variant(
    label: str, fleet: str, processes: int, goals_each: int, servers: dict[str, str]
) -> dict[str, Any]:
    """Start ``processes`` workers, release them together, sample the servers meanwhile."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(SLOT_STORE_ENV, None)  # the fleet file says which store
    command = [sys.executable, "-m", "kitty.bench.scale_worker", fleet, str(goals_each)]
    workers = [
        subprocess.Popen(
            [*command, str(i * goals_each), str(IN_FLIGHT_PER_PROCESS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for i in range(processes)
    ]
    sampler = ServerSampler(servers)
    try:
        for worker in workers:
            line = await _readline(worker, READY_TIMEOUT_S)
            if line.strip() != "ready":
                raise RuntimeError(f"{label}: a worker did not start (said {line!r})")
        sampling = asyncio.create_task(sampler.run())
        began = time.perf_counter()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = [json.loads(await _readline(w, 3600)) for w in workers]
        wall = time.perf_counter() - began
        sampler.stop()
        await sampling
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait(10)
    goals = sum(r["goals"] for r in reports)
    completed = sum(r["completed"] for r in reports)
    return {
        "variant": label,
        "processes": processes,
        "goals": goals,
        "completed": completed,
        "wall_s": round(wall, 2),
        "goals_per_min": round(completed / wall * 60, 1),
        "peak_busy": sampler.busy,
        "peak_deferred": sampler.deferred,
        "cap_held": all(v == 0 for v in sampler.deferred.values()),
        "samples": sampler.samples,
        "failed_polls": sampler.failed_polls,
        "errors": [e for r in reports for e in r["errors"]][:3],
    }


async def run_processes(env: BenchEnv, processes: int) -> dict[str, Any]:
    """The three variants on ``env``'s fleet; JSON-ready results."""
    goals_each = GOALS_PER_PROCESS[env.size]
    env.ensure_fleet()
    runtime = get_runtime(env.fleet)
    await runtime.discover()
    servers = {h.name: h.config.base_url for h in runtime.all_handles()}
    slots = {h.name: h.limiter.capacity for h in runtime.all_handles()}
    with redis_url() as url, tempfile.TemporaryDirectory() as folder:
        if url is None:
            raise SettingsError(
                "bench scale --processes needs Redis: install redis-server (apt-get install "
                f"redis-server) or set {SLOT_STORE_ENV}=redis://host:port/db"
            )
        local = fleet_with_store(env.fleet, None, Path(folder))
        shared = fleet_with_store(env.fleet, url, Path(folder))
        plans = [
            ("1 process", local, 1, goals_each * processes),
            (f"{processes} processes, local store", local, processes, goals_each),
            (f"{processes} processes, redis", shared, processes, goals_each),
        ]
        variants = []
        for label, fleet, count, goals in plans:
            env.log(f"  {label}: {count} x {goals} goals")
            variant = await run_variant(label, fleet, count, goals, servers)
            env.log(
                f"    {variant['completed']}/{variant['goals']} completed in "
                f"{variant['wall_s']} s ({variant['goals_per_min']} goals/min); "
                f"peak deferred {variant['peak_deferred']}"
            )
            variants.append(variant)
    single, _, redis = variants
    return {
        "processes": processes,
        "slots": slots,
        "variants": variants,
        "redis_vs_one_process": round(redis["goals_per_min"] / single["goals_per_min"], 2)
        if single["goals_per_min"]
        else None,
    }
