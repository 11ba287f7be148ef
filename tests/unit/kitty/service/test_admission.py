"""Admission across service workers: runs in flight and running threads as Redis leases.

Each ``create_app`` stands for one worker of ``kitty-orch serve --workers N``: they share
nothing in-process but the Redis named by ``KITTY_SLOT_STORE``. Runs are a fake
``astream_goal`` held until released, so only the admission layer is exercised; Redis
is a real ``redis-server``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import kitty.service._runs
from graph import Plan, RunFinished, RunMetrics, RunResult, Task
from kitty.errors import SettingsError
from kitty.service import ServiceSettings, create_app
from kitty.service._admission import PREFIX, LocalRunLeases, RedisRunLeases, RunAdmission
from kitty.service._errors import RequestError
from tests.helpers import asgi_client, free_port
from tests.redis_server import RedisServer, running_redis

QUERY = "/api/query/parallel"
STREAM = f"{QUERY}/stream"


def resume_path(thread: str) -> str:
    return f"/api/threads/{thread}/resume"


class HeldRuns:
    """Stands in for ``astream_goal``: every run waits for ``gate``; counts what started."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = 0
        self.in_flight = 0
        self.threads: list[str | None] = []

    async def __call__(self, goal: str | None, **kwargs: Any) -> AsyncIterator[Any]:
        self.started += 1
        self.in_flight += 1
        self.threads.append(kwargs.get("thread_id"))
        try:
            await self.gate.wait()
            plan = Plan(tasks=[Task(id="a", agent="researcher", description="d")])
            result = RunResult(
                goal=goal or "", answer="ok", plan=plan, tasks=[], metrics=RunMetrics(), run_id="r"
            )
            yield RunFinished(run_id="r", result=result)
        finally:
            self.in_flight -= 1

    async def until_in_flight(self, count: int) -> None:
        for _ in range(500):
            if self.in_flight >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{self.in_flight} runs in flight, expected {count}")


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch, fresh_fleet_state: None) -> HeldRuns:
    fake = HeldRuns()
    monkeypatch.setattr(kitty.service._runs, "astream_goal", fake)
    return fake


@pytest.fixture
def shared_store(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> Iterator[str]:
    """``KITTY_SLOT_STORE`` on the test Redis, emptied before and after."""
    with redis_server.client() as client:
        client.flushall()
    monkeypatch.setenv("KITTY_SLOT_STORE", redis_server.url())
    yield redis_server.url()
    with redis_server.client() as client:
        client.flushall()


def worker(**overrides: Any) -> FastAPI:
    """One service worker (same settings as its siblings, as uvicorn workers have)."""
    settings: dict[str, Any] = {
        "fleet": "embedded",
        "start_embedded": False,
        "api_token": None,
        "port": 8765,
        "checkpointer": object(),  # only its presence matters to the fake runs
    }
    settings.update(overrides)
    return create_app(ServiceSettings(**settings))


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return asgi_client(app, base_url="http://127.0.0.1:8765")  # the port the worker is given


def close(*apps: FastAPI) -> None:
    for app in apps:
        app.state.admission.close()


# --- runs in flight across workers ----------------------------------------------------


async def test_the_limit_holds_for_all_workers_together(runs: HeldRuns, shared_store: str) -> None:
    first, second = worker(max_concurrent_runs=2), worker(max_concurrent_runs=2)
    async with client_for(first) as a, client_for(second) as b:
        held = [
            asyncio.create_task(a.post(QUERY, json={"query": "one"})),
            asyncio.create_task(b.post(QUERY, json={"query": "two"})),
        ]
        await runs.until_in_flight(2)
        refused = [
            await b.post(QUERY, json={"query": "3"}),
            await a.post(STREAM, json={"query": "4"}),
        ]
        runs.gate.set()
        done = await asyncio.gather(*held)
        after = await b.post(QUERY, json={"query": "after"})
    close(first, second)
    for response in refused:
        assert response.status_code == 429, response.text
        assert int(response.headers["retry-after"]) >= 1
        assert "all its workers together" in response.json()["error"]
    assert [r.status_code for r in done] == [200, 200]
    assert after.status_code == 200, after.text
    assert runs.started == 3  # the refused requests never started a run


async def test_without_redis_each_worker_counts_only_its_own(runs: HeldRuns) -> None:
    first, second = worker(max_concurrent_runs=1), worker(max_concurrent_runs=1)
    assert first.state.admission.leases.description == "local"
    async with client_for(first) as a, client_for(second) as b:
        held = [
            asyncio.create_task(a.post(QUERY, json={"query": "one"})),
            asyncio.create_task(b.post(QUERY, json={"query": "two"})),
        ]
        await runs.until_in_flight(2)
        refused = await a.post(QUERY, json={"query": "three"})
        runs.gate.set()
        done = await asyncio.gather(*held)
    assert [r.status_code for r in done] == [200, 200]
    assert refused.status_code == 429
    assert "workers" not in refused.json()["error"]


async def test_a_dead_workers_run_leases_expire_and_live_ones_are_renewed(
    redis_server: RedisServer, shared_store: str
) -> None:
    ttl_s = 0.4
    alive, dead, late = (RedisRunLeases(shared_store, ttl_s=ttl_s) for _ in range(3))
    try:
        assert await alive.take("runs:x", "alive", 2) == (True, 1)
        assert await dead.take("runs:x", "dead", 2) == (True, 2)
        dead.close()  # stops renewing, as a SIGKILLed worker would
        assert await late.take("runs:x", "late", 2) == (False, 2)
        await asyncio.sleep(ttl_s * 3)  # several TTLs: only the heartbeat keeps "alive"
        assert await late.take("runs:x", "late", 2) == (True, 2)
        with redis_server.client() as client:
            assert set(client.zrange(f"{PREFIX}:runs:x", 0, -1)) == {"alive", "late"}
    finally:
        alive.close()
        late.close()


# --- one run per thread ---------------------------------------------------------------


async def test_two_workers_resuming_one_thread_run_it_once(
    runs: HeldRuns, shared_store: str
) -> None:
    first, second = worker(), worker()
    async with client_for(first) as a, client_for(second) as b:
        running = asyncio.create_task(a.post(resume_path("t-1")))
        await runs.until_in_flight(1)
        twice = await b.post(resume_path("t-1"))
        other = asyncio.create_task(b.post(resume_path("t-2")))  # another thread may run
        await runs.until_in_flight(2)
        runs.gate.set()
        done, other_done = await running, await other
        again = await b.post(resume_path("t-1"))  # finished: the thread is free again
    close(first, second)
    assert twice.status_code == 409, twice.text
    assert twice.json()["field"] == "thread_id"
    assert "'t-1' is already running" in twice.json()["error"]
    assert "another worker" in twice.json()["error"]
    assert (done.status_code, other_done.status_code, again.status_code) == (200, 200, 200)
    assert runs.threads == ["t-1", "t-2", "t-1"]


async def test_one_worker_resuming_one_thread_twice_runs_it_once(runs: HeldRuns) -> None:
    app = worker()
    async with client_for(app) as client:
        running = asyncio.create_task(client.post(resume_path("t-1")))
        await runs.until_in_flight(1)
        twice = await client.post(resume_path("t-1"))
        runs.gate.set()
        done = await running
    assert twice.status_code == 409, twice.text
    assert done.status_code == 200
    assert runs.started == 1


async def test_a_thread_refused_for_the_run_limit_is_not_left_locked(runs: HeldRuns) -> None:
    app = worker(max_concurrent_runs=1)
    async with client_for(app) as client:
        running = asyncio.create_task(client.post(QUERY, json={"query": "q"}))
        await runs.until_in_flight(1)
        busy = await client.post(resume_path("t-9"))
        runs.gate.set()
        await running
        after = await client.post(resume_path("t-9"))
    assert busy.status_code == 429
    assert after.status_code == 200, after.text


async def test_resume_needs_a_checkpointing_service(runs: HeldRuns) -> None:
    async with client_for(worker(checkpointer=None)) as client:
        response = await client.post(resume_path("t-1"))
    assert response.status_code == 503
    assert "--checkpoint" in response.json()["error"]
    assert runs.started == 0


# --- the store unreachable or refusing us ---------------------------------------------


async def test_redis_down_refuses_runs_by_default_and_degrade_admits_a_share(
    tmp_path: Path,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    closed = RunAdmission(4, 3, leases=RedisRunLeases(url), service="s")
    with pytest.raises(RequestError) as refused:
        await closed.admit()
    closed.close()
    assert refused.value.status == 503
    assert url in refused.value.message and "KITTY_SLOT_STORE" in refused.value.message
    degraded = RunAdmission(4, 3, leases=RedisRunLeases(url), service="s", on_store_down="degrade")
    tickets = [await degraded.admit(), await degraded.admit()]  # 4 // 2 expected processes
    with pytest.raises(RequestError) as full:
        await degraded.admit()
    degraded.close()
    assert full.value.status == 429
    for ticket in tickets:
        await ticket.release()
    assert degraded.in_flight == 0


async def test_wrong_password_fails_at_start_naming_the_fix(tmp_path: Path) -> None:
    with running_redis(tmp_path, password="right") as server:
        leases = RedisRunLeases(server.url(password="wrong"))
        with pytest.raises(SettingsError, match="credentials") as error:
            await RunAdmission(2, 1, leases=leases).check()
        leases.close()
    assert "wrong" not in str(error.value)  # the password is hidden


async def test_local_places_are_given_back() -> None:
    admission = RunAdmission(1, 1, leases=LocalRunLeases())
    ticket = await admission.admit("t")
    await ticket.release()
    await ticket.release()  # idempotent
    again = await admission.admit("t")
    assert admission.in_flight == 1
    await again.release()
    assert admission.in_flight == 0


# --- kitty-orch serve --workers -------------------------------------------------------


def test_several_workers_without_redis_are_refused_saying_why_and_how(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from kitty.cli.main import app as cli_app

    monkeypatch.delenv("KITTY_SLOT_STORE", raising=False)
    result = CliRunner().invoke(cli_app, ["serve", "--workers", "3", "--port", str(free_port())])
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "--workers 3 needs a shared slot store" in text
    assert "every worker would take every slot" in text
    assert "KITTY_SLOT_STORE=redis://" in text


def test_several_workers_with_memory_checkpoints_are_refused(shared_store: str) -> None:
    from kitty.service import check_workers

    with pytest.raises(SettingsError, match="its own threads"):
        check_workers(2, "embedded", "memory")
    check_workers(2, "embedded", None)  # Redis store + the SQLite default: fine
