"""Background runs (``POST /api/runs``) in process, with the scripted fake model.

The service's lifespan runs (it starts the background runner); two apps in one process
stand for two workers sharing a real Redis (board, leases) and one SQLite checkpoint file.
A kill -9 of a whole host is tested live in tests/integration/service/test_takeover.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from graph import make_checkpointer
from kitty.service import ServiceSettings, create_app
from kitty.service._background import MAX_ATTEMPTS
from kitty.service._run_board import RedisRunBoard, StoredRun
from tests.conftest import FakeFleet
from tests.fake_chat import Reply
from tests.helpers import asgi_client
from tests.redis_server import RedisServer

TOKEN = "background-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def plan_body(**extra: Any) -> dict[str, Any]:
    tasks = [
        {"id": "quick", "agent": "researcher", "description": "Quick fact."},
        {"id": "slow", "agent": "coder", "description": "Slow code."},
    ]
    return {
        "query": "Do it in the background",
        "voice_mode": False,
        "plan": {"tasks": tasks},
    } | extra


@asynccontextmanager
async def worker(
    fleet: str, checkpoints: Path | None, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """One service worker with its lifespan running (its background runner looks at the board)."""
    async with make_checkpointer(checkpoints or "memory") as saver:
        app: FastAPI = create_app(
            ServiceSettings(
                fleet=fleet,
                start_embedded=False,
                api_token=TOKEN,
                checkpointer=saver if checkpoints is not None else None,
                context_overrides={"synthesis_max_tokens": 16},
                **settings,
            )
        )
        async with app.router.lifespan_context(app), asgi_client(app, timeout_s=30) as http:
            http.headers.update(AUTH)
            yield http


async def wait_for_state(
    http: httpx.AsyncClient, thread_id: str, states: set[str], timeout_s: float = 20
) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            answer = await http.get(f"/api/threads/{thread_id}")
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            if body["state"] in states:
                return body
            await asyncio.sleep(0.05)


async def test_a_submitted_run_answers_202_at_once_and_is_done_later(
    fake_fleet: FakeFleet, tmp_path: Path
) -> None:
    fake_fleet.chat.script(Reply("slow code", delay_s=0.5), phase="task", task="slow")
    async with worker(fake_fleet.path, tmp_path / "runs.sqlite") as http:
        submitted = await http.post("/api/runs", json=plan_body())
        assert submitted.status_code == 202, submitted.text
        state = submitted.json()
        thread_id = state["thread_id"]
        assert state["state"] == "queued" and state["result"] is None
        assert submitted.headers["location"] == f"/api/threads/{thread_id}"
        running = await wait_for_state(http, thread_id, {"running"})
        assert running["worker"] and running["attempts"] == 1
        done = await wait_for_state(http, thread_id, {"done"})
    assert done["tasks_total"] == 2 and done["tasks_done"] == 2
    assert done["result"]["thread_id"] == thread_id
    assert [t["status"] for t in done["result"]["tasks"]] == ["completed", "completed"]
    assert [t["output"] for t in done["result"]["tasks"]] == ["output of quick", "slow code"]


async def test_the_stream_sends_the_state_then_events_then_the_result(
    fake_fleet: FakeFleet, tmp_path: Path
) -> None:
    fake_fleet.chat.script(Reply("slow code", delay_s=0.5), phase="task", task="slow")
    async with worker(fake_fleet.path, tmp_path / "runs.sqlite") as http:
        thread_id = (await http.post("/api/runs", json=plan_body())).json()["thread_id"]
        events: list[tuple[str, dict[str, Any]]] = []
        async with http.stream("GET", f"/api/threads/{thread_id}/stream") as stream:
            assert stream.status_code == 200
            name = ""
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    events.append((name, json.loads(line.split(":", 1)[1])))
    names = [n for n, _ in events]
    assert names[0] == "state"
    assert names.count("task_finished") >= 1  # at least the slow one, live
    assert "result" in names
    assert events[-1][0] == "state" and events[-1][1]["state"] == "done"


async def test_unknown_thread_404_and_a_second_submission_of_a_live_thread_409(
    fake_fleet: FakeFleet, tmp_path: Path
) -> None:
    fake_fleet.chat.script(Reply("slow", delay_s=2), phase="task", task="slow")
    async with worker(fake_fleet.path, tmp_path / "runs.sqlite") as http:
        missing = await http.get("/api/threads/nope")
        first = await http.post("/api/runs", json=plan_body(thread_id="twice"))
        second = await http.post("/api/runs", json=plan_body(thread_id="twice"))
        bad = await http.post("/api/runs", json={"query": " "})
    assert missing.status_code == 404 and "no background run" in missing.json()["error"]
    assert first.status_code == 202
    assert second.status_code == 409 and "has not ended" in second.json()["error"]
    assert bad.status_code == 422  # checked before it is accepted, not a failed run later


async def test_background_runs_need_a_checkpointing_service(fake_fleet: FakeFleet) -> None:
    async with worker(fake_fleet.path, None) as http:
        answer = await http.post("/api/runs", json=plan_body())
    assert answer.status_code == 503 and "--checkpoint" in answer.json()["error"]


async def test_a_worker_that_stops_mid_run_hands_it_over_without_rerunning_finished_tasks(
    fake_fleet: FakeFleet,
    tmp_path: Path,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KITTY_SLOT_STORE", redis_server.url())
    chat = fake_fleet.chat
    chat.script(Reply("slow, cut", delay_s=30), Reply("slow, done"), phase="task", task="slow")
    checkpoints = tmp_path / "shared.sqlite"
    async with worker(fake_fleet.path, checkpoints) as first:
        thread_id = (await first.post("/api/runs", json=plan_body())).json()["thread_id"]
        async with asyncio.timeout(20):
            while not any(c.task_id == "slow" for c in chat.calls) or not any(
                c.task_id == "quick" and c.finished_at for c in chat.calls
            ):
                await asyncio.sleep(0.05)
            while (await first.get(f"/api/threads/{thread_id}")).json()["tasks_done"] < 1:
                await asyncio.sleep(0.05)
    # The first worker shut down mid-run (its leases given back); a second one takes over.
    async with worker(fake_fleet.path, checkpoints, port=8001) as second:
        done = await wait_for_state(second, thread_id, {"done", "failed"})
    assert done["state"] == "done", done["error"]
    assert done["attempts"] == 2
    calls = {task: sum(c.task_id == task for c in chat.calls) for task in ("quick", "slow")}
    assert calls == {"quick": 1, "slow": 2}  # the finished task never ran again
    outputs = {t["task_id"]: t["output"] for t in done["result"]["tasks"]}
    assert outputs == {"quick": "output of quick", "slow": "slow, done"}


async def test_a_run_that_kills_every_worker_that_takes_it_is_failed_not_retried_for_ever(
    fake_fleet: FakeFleet,
    tmp_path: Path,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KITTY_SLOT_STORE", redis_server.url())
    board = RedisRunBoard(redis_server.url())
    try:
        async with worker(fake_fleet.path, tmp_path / "runs.sqlite") as http:
            thread_id = "doomed"
            stored = StoredRun.model_validate(
                {
                    "request": plan_body(thread_id=thread_id),
                    "state": {
                        "thread_id": thread_id,
                        "state": "running",
                        "submitted_at": 1.0,
                        "attempts": MAX_ATTEMPTS,
                    },
                }
            )
            assert await board.submit(stored)
            failed = await wait_for_state(http, thread_id, {"failed", "done"})
    finally:
        await board.close()
    assert failed["state"] == "failed"
    assert f"started by {MAX_ATTEMPTS} workers" in failed["error"]
    assert not any(c.task_id == "quick" for c in fake_fleet.chat.calls)
