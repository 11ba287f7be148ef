"""Slot leases across processes on the real embedded fleet, through a real Redis.

Three orchestrator processes share one 4-slot llama.cpp server: with the Redis store the
server's own ``llamacpp:requests_deferred`` (its queue of requests waiting for a slot)
stays 0, which ``/slots`` cannot show (busy never exceeds ``total_slots``). A process
killed while it holds leases gives them back within the lease TTL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from endpoints.config import FleetConfig
from endpoints.slots import endpoint_key
from endpoints.slots._redis_store import PREFIX
from tests.helpers import ServerSampler
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[3]
PROFILE = ROOT / "ops" / "profiles" / "embedded.toml"
LEASE_TTL_S = 2.0

# One orchestrator process: warm up, say "ready", wait for "go" on stdin, run one goal of
# N independent researcher tasks (tools tier) and print the task statuses.
WORKER = """
import asyncio, json, sys
from kitty.bench._workload import pinned
from endpoints.fleet._routing import get_runtime
from graph import Plan, arun_goal

fleet, count, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

async def main() -> None:
    import langchain_openai  # noqa: F401  (2 s of imports, before the start line)
    await get_runtime(fleet).discover()
    print("ready", flush=True)
    sys.stdin.readline()
    tasks = [pinned(f"task_{i + 1}", "researcher", tokens, what=f"Fact {i}") for i in range(count)]
    result = await arun_goal(
        "Slot lease test", plan=Plan(tasks=tasks, source="given"), fleet=fleet,
        voice=False, synthesis_max_tokens=4,
    )
    print(json.dumps([t.status for t in result.tasks]), flush=True)

asyncio.run(main())
"""


def fleet_file(folder: Path, store: str) -> str:
    """The embedded profile with its ``[coordination]`` slot store set to ``store``."""
    path = folder / f"embedded-{'redis' if store != 'local' else 'local'}.toml"
    coordination = f'\n[coordination]\nslot_store = "{store}"\nlease_ttl_s = {LEASE_TTL_S}\n'
    path.write_text(PROFILE.read_text() + coordination)
    return str(path)


class Worker:
    """An orchestrator subprocess running one goal of ``count`` tasks on the tools tier."""

    def __init__(self, fleet: str, count: int, tokens: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("KITTY_SLOT_STORE", None)
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, fleet, str(count), str(tokens)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    async def ready(self) -> None:
        assert self.process.stdout is not None
        line = await asyncio.to_thread(self.process.stdout.readline)
        assert line == "ready\n", f"worker {self.pid} did not start: {line!r}"

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    async def statuses(self) -> list[str]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), 120)
        return list(json.loads(line))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


async def three_processes(fleet: str, tools_url: str) -> tuple[int, list[list[str]]]:
    """Three processes x 6 tasks at once; the server's peak deferred and every status."""
    workers = [Worker(fleet, count=6, tokens=48) for _ in range(3)]
    try:
        await asyncio.gather(*(w.ready() for w in workers))
        async with ServerSampler({"tools": tools_url}, interval_s=0.1) as sampler:
            for worker in workers:
                worker.go()
            statuses = await asyncio.gather(*(w.statuses() for w in workers))
        print(
            f"\n{fleet}: peak deferred {sampler.peak_deferred['tools']}, peak busy "
            f"{sampler.peak_busy['tools']}, {len(sampler.deferred['tools'])} samples"
        )
        return sampler.peak_deferred["tools"], statuses
    finally:
        for worker in workers:
            worker.stop()


async def test_three_processes_never_queue_inside_the_server(
    embedded_fleet: FleetConfig, redis_server: RedisServer, tmp_path: Path
) -> None:
    tools_url = embedded_fleet.tier("tools").endpoints[0].base_url
    deferred, statuses = await three_processes(fleet_file(tmp_path, redis_server.url()), tools_url)
    assert all(s == ["completed"] * 6 for s in statuses), statuses
    assert deferred == 0


def leases_of(server: RedisServer, key: str, pid: int) -> int:
    with server.client() as client:
        members = client.zrange(f"{PREFIX}:{{{key}}}:leases", 0, -1)
    return sum(1 for m in members if f":{pid}:" in m)


async def until_leases(
    server: RedisServer, key: str, pid: int, count: int, limit_s: float
) -> float:
    """Seconds until process ``pid`` holds ``count`` leases on ``key``; fails after ``limit_s``."""
    started = time.monotonic()
    while leases_of(server, key, pid) < count:
        assert time.monotonic() - started < limit_s, f"pid {pid}: {leases_of(server, key, pid)}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_a_killed_process_gives_its_leases_back_within_the_ttl(
    embedded_fleet: FleetConfig, redis_server: RedisServer, tmp_path: Path
) -> None:
    fleet = fleet_file(tmp_path, redis_server.url())
    key = endpoint_key(embedded_fleet.tier("tools").endpoints[0].base_url)
    doomed, survivor = Worker(fleet, count=2, tokens=400), Worker(fleet, count=4, tokens=400)
    try:
        await asyncio.gather(doomed.ready(), survivor.ready())
        doomed.go()
        await until_leases(redis_server, key, doomed.pid, 2, limit_s=30)
        survivor.go()
        await until_leases(redis_server, key, survivor.pid, 2, limit_s=30)
        await asyncio.sleep(LEASE_TTL_S)  # both alive: the leases outlive one TTL
        assert leases_of(redis_server, key, doomed.pid) == 2
        assert leases_of(redis_server, key, survivor.pid) == 2
        doomed.process.send_signal(signal.SIGKILL)
        taken_s = await until_leases(redis_server, key, survivor.pid, 4, LEASE_TTL_S + 1)
        print(f"\nthe survivor held the dead process's 2 slots {taken_s:.2f}s after SIGKILL")
    finally:
        doomed.stop()
        survivor.stop()
