"""A background run outlives its host: kill -9 one service mid-run, another finishes it.

Two ``kitty-orch serve`` processes share nothing but a real Redis (slot store, run board,
leases), a real PostgreSQL (checkpoints) and the embedded llama.cpp fleet: separate
processes, homes and ports. A run is submitted to A; once its first task finished and
its slow task is generating, A is killed with SIGKILL. The two hosts are one service
(``--service-name``) with a run limit of 1: a second run submitted to B waits, before and
after the takeover, until the first is done. B takes the thread over within
the lease TTL plus a few seconds and finishes it from the checkpoint: the task that had
finished is never sent again (its record, start time included, is the one A saved).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from endpoints.config import FleetConfig, profiles_dir
from kitty.bench._workload import pinned
from tests.helpers import free_port, kitty_command, stop_process, wait_until_serving
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "takeover-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LEASE_TTL_S = 3.0


@dataclass
class Host:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Cluster:
    a: Host
    b: Host


def start_host(name: str, folder: Path, fleet: Path, checkpoints: str) -> Host:
    home = folder / name
    home.mkdir()
    port = free_port()
    env = {**os.environ, "HOME": str(home), "KITTY_API_TOKEN": TOKEN}
    env.pop("KITTY_SLOT_STORE", None)  # the fleet file names the shared store
    command = kitty_command("serve", "--port", str(port), "--fleet", str(fleet))
    command += ["--checkpoint", checkpoints, "--log-level", "info"]
    # One service on two hosts: one run at a time between them.
    command += ["--service-name", "takeover-test", "--max-concurrent-runs", "1"]
    command += ["--set", "synthesis_max_tokens=4", "--set", "summary_max_tokens=4"]
    log = home / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=sink, stderr=sink, start_new_session=True
        )
    host = Host(name, f"http://127.0.0.1:{port}", process, log)
    wait_until_serving(f"{host.base_url}/healthz", process, log, name=f"service {name}")
    return host


@pytest.fixture(scope="module")
def cluster(
    embedded_fleet: FleetConfig,
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("takeover")
    redis_server = RedisServer(folder)
    redis_server.start()
    fleet = folder / "shared-fleet.toml"
    fleet.write_text(
        (profiles_dir() / "embedded.toml").read_text()
        + f'\n[coordination]\nslot_store = "{redis_server.url()}"\nlease_ttl_s = {LEASE_TTL_S}\n'
    )
    checkpoints = postgres_server.new_database()
    hosts: list[Host] = []
    try:
        hosts.append(start_host("a", folder, fleet, checkpoints))
        hosts.append(start_host("b", folder, fleet, checkpoints))
        yield Cluster(*hosts)
    finally:
        for host in hosts:
            if host.process.poll() is None:
                stop_process(host.process, timeout_s=20)
        redis_server.stop()


def short_body() -> dict[str, Any]:
    task = pinned("only", "researcher", 4, what="One fact")
    return {
        "query": "wait your turn",
        "max_tasks": 1,
        "voice_mode": False,
        "plan": {"tasks": [task.model_dump(exclude_none=True)]},
    }


def run_body() -> dict[str, Any]:
    tasks = [
        pinned("quick", "researcher", 4, what="Quick fact"),
        pinned("slow", "coder", 600, what="Slow code"),
        pinned("after", "analyst", 4, ["quick", "slow"], what="Wrap up"),
    ]
    return {
        "query": "outlive the host",
        "max_tasks": 3,
        "voice_mode": False,
        "plan": {"tasks": [t.model_dump(exclude_none=True) for t in tasks]},
    }


async def state_of(http: httpx.AsyncClient, thread_id: str) -> dict[str, Any]:
    answer = await http.get(f"/api/threads/{thread_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_kill_9_mid_run_and_another_host_finishes_it(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    async with (
        httpx.AsyncClient(base_url=a.base_url, headers=AUTH, timeout=30) as on_a,
        httpx.AsyncClient(base_url=b.base_url, headers=AUTH, timeout=30) as on_b,
    ):
        submitted = await on_a.post("/api/runs", json=run_body())
        assert submitted.status_code == 202, submitted.text
        thread_id = submitted.json()["thread_id"]
        async with asyncio.timeout(120):
            while True:
                state = await state_of(on_a, thread_id)
                done = {t["task_id"]: t for t in state["tasks"]}
                if "quick" in done and state["state"] == "running":
                    break
                assert state["state"] in {"queued", "running"}, state
                await asyncio.sleep(0.1)
        assert "slow" not in done, "the slow task ended before the kill; make it slower"
        first_worker = state["worker"]
        # The run limit (1) is the service's, across both hosts: B queues this one.
        waiting = (await on_b.post("/api/runs", json=short_body())).json()["thread_id"]
        await asyncio.sleep(1.5)
        assert (await state_of(on_b, waiting))["state"] == "queued"

        os.killpg(a.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        a.process.wait(10)

        async with asyncio.timeout(60):
            while (state := await state_of(on_b, thread_id))["attempts"] < 2:
                await asyncio.sleep(0.1)
        taken_over_s = time.monotonic() - killed_at
        async with asyncio.timeout(180):
            while (state := await state_of(on_b, thread_id))["state"] not in {"done", "failed"}:
                # The limit holds across the takeover: the other run still waits.
                assert (await state_of(on_b, waiting))["state"] == "queued"
                await asyncio.sleep(0.2)
        async with asyncio.timeout(120):
            while (after := await state_of(on_b, waiting))["state"] not in {"done", "failed"}:
                await asyncio.sleep(0.2)

    assert state["state"] == "done", state["error"]
    assert state["worker"] != first_worker and state["attempts"] == 2
    tasks = {t["task_id"]: t for t in state["result"]["tasks"]}
    assert all(t["status"] == "completed" for t in tasks.values()), tasks
    # Not sent again: the finished task's record is the one host A saved before dying.
    assert tasks["quick"]["started_at"] == done["quick"]["started_at"]
    assert tasks["quick"]["output"] == done["quick"]["output"]
    assert tasks["after"]["started_at"] > tasks["slow"]["started_at"]
    assert taken_over_s <= LEASE_TTL_S + 5, f"taken over after {taken_over_s:.1f}s"
    assert after["state"] == "done", after["error"]
    assert after["started_at"] >= state["finished_at"] - 0.5  # only once the first ended
    print(f"\n[takeover] host B took the thread over {taken_over_s:.2f}s after the kill")
