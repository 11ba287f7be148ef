"""``kitty-orch serve --workers 2`` on the embedded fleet, sharing a real Redis slot store.

The workers are separate processes behind one port: the run limit holds for both together
and ``/api/endpoints`` shows the store with the leases of every process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from endpoints.config import FleetConfig
from kitty.bench._workload import pinned
from tests.helpers import free_port, kitty_command, stop_process, wait_until_serving
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "workers-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUERY = "/api/query/parallel"


@dataclass
class Workers:
    base_url: str
    redis_url: str
    log: Path


@pytest.fixture(scope="module")
def workers(
    embedded_fleet: FleetConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    """Redis, then two service workers with ``--max-concurrent-runs 1`` on a free port."""
    folder = tmp_path_factory.mktemp("workers")
    redis_server = RedisServer(folder)
    redis_server.start()
    port = free_port()
    log = folder / "serve.log"
    env = {
        **os.environ,
        "KITTY_API_TOKEN": TOKEN,
        "KITTY_FLEET": "embedded",
        "KITTY_SLOT_STORE": redis_server.url(),
    }
    command = kitty_command(
        "serve",
        "--port",
        str(port),
        "--workers",
        "2",
    )
    command += ["--max-concurrent-runs", "1", "--log-level", "warning"]
    command += ["--checkpoint", str(folder / "checkpoints.sqlite")]
    command += ["--set", "synthesis_max_tokens=4", "--set", "summary_max_tokens=4"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)
    live = Workers(f"http://127.0.0.1:{port}", redis_server.url(), log)
    try:
        wait_until_serving(f"{live.base_url}/healthz", process, log, name="service")
        yield live
    finally:
        stop_process(process, timeout_s=20)
        redis_server.stop()


def long_run(tokens: int) -> dict[str, Any]:
    task = pinned("long", "researcher", tokens, what="Slow fact").model_dump(exclude_none=True)
    return {"query": "hold the run", "max_tasks": 1, "voice_mode": False, "plan": {"tasks": [task]}}


async def test_endpoints_show_the_shared_store_and_its_leases(workers: Workers) -> None:
    async with httpx.AsyncClient(base_url=workers.base_url, headers=AUTH, timeout=30) as http:
        answers = [await http.get("/api/endpoints") for _ in range(4)]  # both workers answer
    for answer in answers:
        assert answer.status_code == 200, answer.text
        for endpoint in answer.json()["endpoints"]:
            limiter = endpoint["limiter"]
            assert limiter["store"] == workers.redis_url
            assert isinstance(limiter["leases"], int)
            assert isinstance(limiter["store_queued"], int)


async def test_the_run_limit_holds_across_workers(workers: Workers) -> None:
    async with httpx.AsyncClient(base_url=workers.base_url, headers=AUTH, timeout=120) as http:
        running = asyncio.create_task(http.post(QUERY, json=long_run(tokens=300)))
        leases_seen = 0
        for _ in range(100):  # until the run holds its slot lease
            await asyncio.sleep(0.1)
            body = (await http.get("/api/endpoints")).json()
            leases_seen = max(e["limiter"]["leases"] or 0 for e in body["endpoints"])
            if leases_seen:
                break
        # New connections each time: the OS spreads them over both workers.
        refused = []
        for _ in range(6):
            async with httpx.AsyncClient(base_url=workers.base_url, headers=AUTH) as fresh:
                refused.append(await fresh.post(QUERY, json=long_run(tokens=4)))
        done = await running
        after = await http.post(QUERY, json=long_run(tokens=4))
    assert leases_seen >= 1
    assert done.status_code == 200, done.text
    assert [r.status_code for r in refused] == [429] * 6, [r.text for r in refused]
    assert all("all its workers together" in r.json()["error"] for r in refused)
    assert after.status_code == 200, after.text
