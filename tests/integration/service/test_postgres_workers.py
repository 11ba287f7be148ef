"""``kitty-orch serve --workers 2 --checkpoint postgresql://...`` on the embedded fleet.

Two worker processes behind one port share a real Redis slot store and a real PostgreSQL
checkpoint store. A streamed run is cut off by its client after its first task finished
(the run is cancelled, its thread keeps the finished task); the thread is then resumed
through a fresh connection, which either worker may take: the finished task is not run
again, the unfinished one is.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from endpoints.config import FleetConfig
from kitty.bench._workload import pinned
from tests.helpers import free_port, kitty_command, stop_process, wait_until_serving
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "postgres-workers-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Workers:
    base_url: str
    checkpoints: str


@pytest.fixture(scope="module")
def workers(
    embedded_fleet: FleetConfig,
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Workers]:
    """Redis, a fresh PostgreSQL database, then two service workers on a free port."""
    folder = tmp_path_factory.mktemp("postgres-workers")
    redis_server = RedisServer(folder)
    redis_server.start()
    checkpoints = postgres_server.new_database()
    port = free_port()
    log = folder / "serve.log"
    env = {
        **os.environ,
        "KITTY_API_TOKEN": TOKEN,
        "KITTY_FLEET": "embedded",
        "KITTY_SLOT_STORE": redis_server.url(),
    }
    command = kitty_command("serve", "--port", str(port), "--workers", "2")
    command += ["--checkpoint", checkpoints, "--log-level", "warning"]
    command += ["--set", "synthesis_max_tokens=4", "--set", "summary_max_tokens=4"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/healthz", process, log, name="service")
        yield Workers(f"http://127.0.0.1:{port}", checkpoints)
    finally:
        stop_process(process, timeout_s=20)
        redis_server.stop()


def two_step_run(thread_id: str) -> dict[str, Any]:
    """``quick`` finishes at once; ``slow`` (independent) is still generating when cut."""
    tasks = [
        pinned("quick", "researcher", 4, what="Quick fact"),
        pinned("slow", "coder", 400, what="Slow code"),
    ]
    return {
        "query": "finish what was started",
        "max_tasks": 2,
        "voice_mode": False,
        "thread_id": thread_id,
        "plan": {"tasks": [t.model_dump(exclude_none=True) for t in tasks]},
    }


async def finished_before_cut(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """Stream the run until ``quick`` finished, then hang up; ``quick``'s result."""
    event = ""
    async with http.stream("POST", "/api/query/parallel/stream", json=body) as stream:
        assert stream.status_code == 200, await stream.aread()
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "task_finished":
                data = json.loads(line.split(":", 1)[1])
                if data["result"]["task_id"] == "quick":
                    return dict(data["result"])
            elif event in {"result", "error"}:
                pytest.fail(f"the run ended before it could be cut: {line}")
    pytest.fail("the stream ended before the quick task finished")


async def test_a_cut_run_resumes_on_any_worker_without_rerunning_finished_work(
    workers: Workers,
) -> None:
    for _ in range(2):  # two threads: the resumes land on either worker
        thread_id = f"pg-{uuid.uuid4().hex[:8]}"
        async with httpx.AsyncClient(base_url=workers.base_url, headers=AUTH, timeout=120) as http:
            quick = await finished_before_cut(http, two_step_run(thread_id))
        async with httpx.AsyncClient(base_url=workers.base_url, headers=AUTH, timeout=120) as http:
            resumed = await http.post(f"/api/threads/{thread_id}/resume")
            again = await http.post(f"/api/threads/{thread_id}/resume")
        assert resumed.status_code == 200, resumed.text
        body = resumed.json()
        tasks = {task["task_id"]: task for task in body["tasks"]}
        assert body["thread_id"] == thread_id
        assert tasks["quick"]["status"] == "completed" and tasks["slow"]["status"] == "completed"
        # The same record, not a second run of it: same output and the same start time.
        assert tasks["quick"]["output"] == quick["output"]
        assert tasks["quick"]["started_at"] == quick["started_at"]
        assert again.status_code == 409, again.text  # nothing left, seen from either worker
