"""The HTTP service, live: ``kitty-orch serve`` in a subprocess on loopback, real fleet.

Every run uses a pinned plan (a few tokens per task with ``ignore_eos``) and the service
is started with tiny synthesis/summary caps, so the runs are short and deterministic in
shape.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from endpoints.config import FleetConfig
from tests.helpers import free_port, kitty_command, stop_process, wait_until_serving

pytestmark = pytest.mark.integration

TOKEN = "integration-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUERY = "/api/query/parallel"
STREAM = "/api/query/parallel/stream"
SMALL_CAPS = {"synthesis_max_tokens": 8, "summary_max_tokens": 8}
# One agent per tier (tools, coder, vision): concurrent runs spread over three servers.
SPREAD_AGENTS = ("researcher", "coder", "vision_analyst")
CONTRACT_KEYS = {
    "response",
    "voice_summary",
    "tasks",
    "metrics",
    "plan",
    "run_id",
    "thread_id",
    "warnings",
}


@dataclass
class LiveService:
    base_url: str
    log: Path
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def service(
    embedded_fleet: FleetConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveService]:
    """``kitty-orch serve`` on a free loopback port with a bearer token."""
    port = free_port()
    log = tmp_path_factory.mktemp("service") / "serve.log"
    env = {**os.environ, "KITTY_API_TOKEN": TOKEN, "KITTY_FLEET": "embedded"}
    command = kitty_command(
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
        # 256 KiB: a 1 MB body is refused by the body cap (the default, 48 MiB, holds images)
        "--max-body-bytes",
        str(256 * 1024),
        *(arg for key, value in SMALL_CAPS.items() for arg in ("--set", f"{key}={value}")),
    )
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    live = LiveService(f"http://127.0.0.1:{port}", log, process)
    try:
        wait_until_serving(f"{live.base_url}/healthz", process, log, name="service")
        yield live
    finally:
        stop_process(process, timeout_s=15)


def client(service: LiveService, *, auth: bool = True) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=service.base_url, headers=AUTH if auth else {}, timeout=httpx.Timeout(600)
    )


def pinned_plan(prefix: str, marker: str, tokens: int = 4) -> dict[str, Any]:
    """Two tasks (``{prefix}_b`` depends on ``{prefix}_a``) on the coder and vision tiers."""
    extra = {"ignore_eos": True}
    return {
        "tasks": [
            {
                "id": f"{prefix}_a",
                "agent": "coder",
                "description": f"[{marker}] Name one sorting algorithm.",
                "max_tokens": tokens,
                "extra": extra,
            },
            {
                "id": f"{prefix}_b",
                "agent": "vision_analyst",
                "description": f"[{marker}] Say one word about it.",
                "dependencies": [f"{prefix}_a"],
                "max_tokens": tokens,
                "extra": extra,
            },
        ]
    }


def body(query: str, plan: dict[str, Any], *, voice: bool = False) -> dict[str, Any]:
    return {"query": query, "max_tasks": len(plan["tasks"]), "voice_mode": voice, "plan": plan}


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Parse a text/event-stream body into (event, data) pairs (comments skipped)."""
    event = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


async def limiter_load(http: httpx.AsyncClient) -> int:
    """Slots held plus tasks queued, over the service's limiters."""
    response = await http.get("/api/endpoints")
    response.raise_for_status()
    limiters = [e["limiter"] for e in response.json()["endpoints"] if e["limiter"]]
    return sum(item["in_use"] + item["queued"] for item in limiters)


async def wait_idle(
    http: httpx.AsyncClient, timeout_s: float, service: LiveService | None = None
) -> float:
    """Seconds until the service holds no slot (fails after ``timeout_s``)."""
    started = time.monotonic()
    while await limiter_load(http):
        if time.monotonic() - started > timeout_s:
            endpoints = (await http.get("/api/endpoints")).json()["endpoints"]
            held = {
                e["name"]: e["limiter"]
                for e in endpoints
                if e["limiter"] and (e["limiter"]["in_use"] or e["limiter"]["queued"])
            }
            log = service.log.read_text()[-4000:] if service else ""
            pytest.fail(
                f"the service still held slots {timeout_s:g} s after the disconnect:\n"
                f"{json.dumps(held, indent=1)}\nservice log:\n{log}"
            )
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def post_then_hang_up(
    service: LiveService,
    path: str,
    request: dict[str, Any],
    until: Callable[[], Awaitable[int]],
) -> None:
    """POST ``request`` on a raw socket, wait until ``until()`` is non-zero, then close it.

    A raw socket makes the hang-up itself certain: closing it sends FIN at once, with
    no client library deciding whether a cancelled request keeps its connection.
    """
    url = httpx.URL(service.base_url)
    payload = json.dumps(request).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(head.encode() + payload)
        await writer.drain()
        deadline = time.monotonic() + 60
        while not await until():
            assert time.monotonic() < deadline, "the task never took a slot"
            with suppress(TimeoutError):
                early = await asyncio.wait_for(reader.read(4096), timeout=0.2)
                pytest.fail(f"the service answered before the hang-up: {early!r}")
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def test_query_returns_the_seed_contract(service: LiveService) -> None:
    plan = pinned_plan("c", "CONTRACT")
    async with client(service) as http:
        response = await http.post(QUERY, json=body("Sorting, briefly", plan, voice=True))
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == CONTRACT_KEYS
    assert isinstance(result["response"], str) and result["response"].strip()
    assert isinstance(result["voice_summary"], str) and result["voice_summary"].strip()
    assert [t["task_id"] for t in result["tasks"]] == ["c_a", "c_b"]
    for task in result["tasks"]:
        assert task["status"] == "completed", task
        assert task["completion_tokens"] == 4
        assert task["endpoint"] and task["started_at"] <= task["finished_at"]
    assert result["metrics"]["tasks_total"] == 2
    assert result["metrics"]["tasks_completed"] == 2
    assert result["plan"]["source"] == "given"
    assert result["tasks"][1]["started_at"] >= result["tasks"][0]["finished_at"]
    assert len(result["run_id"]) == 32


async def test_endpoints_report_probe_and_limiter(service: LiveService) -> None:
    async with client(service) as http:
        response = await http.get("/api/endpoints")
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["fleet"] == "embedded"
    names = {e["name"] for e in payload["endpoints"]}
    assert names == {f"embedded-{t}" for t in ("tools", "reasoning", "vision", "coder", "summary")}
    for endpoint in payload["endpoints"]:
        assert endpoint["health"] == "ok", endpoint
        assert endpoint["total_slots"] >= 1 and endpoint["n_ctx"] == 2048
        assert endpoint["limiter"]["capacity"] == endpoint["total_slots"]
        assert endpoint["limiter"]["in_use"] >= 0 and endpoint["latency_ms"] is not None


async def test_stream_delivers_task_events_then_result(service: LiveService) -> None:
    plan = pinned_plan("s", "STREAM")
    events: list[tuple[str, dict[str, Any]]] = []
    async with (
        client(service) as http,
        http.stream("POST", STREAM, json=body("Sorting, streamed", plan)) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for item in sse_events(response):
            events.append(item)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "result", kinds
    result = events[-1][1]
    assert set(result) == CONTRACT_KEYS
    run_ids = {data["run_id"] for kind, data in events[:-1]}
    assert run_ids == {result["run_id"]}
    assert kinds.index("plan_ready") < kinds.index("task_started")
    started = [d["task_id"] for k, d in events if k == "task_started"]
    finished = [d["task_id"] for k, d in events if k == "task_finished"]
    assert sorted(started) == sorted(finished) == ["s_a", "s_b"]
    # s_b depends on s_a: it starts only after s_a finished.
    position = {(k, d.get("task_id")): i for i, (k, d) in enumerate(events)}
    assert position[("task_finished", "s_a")] < position[("task_started", "s_b")]
    assert [t["status"] for t in result["tasks"]] == ["completed", "completed"]


@pytest.mark.parametrize("path", [STREAM, QUERY])
async def test_disconnect_cancels_the_run(service: LiveService, path: str) -> None:
    """A task that would generate 1800 tokens (minutes here) stops when the client leaves."""
    plan = {
        "tasks": [
            {
                "id": "long",
                "agent": "coder",
                "description": "Write a very long essay about sorting.",
                "max_tokens": 1800,
                "extra": {"ignore_eos": True},
            }
        ]
    }
    request = {"query": "A long essay", "max_tasks": 1, "voice_mode": False, "plan": plan}
    async with client(service) as http:
        assert await limiter_load(http) == 0
        if path == STREAM:
            async with (
                client(service) as streaming,
                streaming.stream("POST", STREAM, json=request) as response,
            ):
                events = sse_events(response)  # keep a reference: closing it disconnects
                async for kind, _ in events:
                    if kind == "task_started":
                        break
                assert await limiter_load(http) >= 1
        else:
            await post_then_hang_up(service, QUERY, request, until=lambda: limiter_load(http))
        freed_after = await wait_idle(http, timeout_s=15, service=service)
        print(f"\n{path}: slots freed {freed_after:.2f} s after the client left")
        assert (await http.get("/healthz")).status_code == 200


async def test_concurrent_requests_are_isolated(service: LiveService) -> None:
    """20 runs at once: each sees only its own plan, tasks, dependencies and run id.

    Even requests all use the task ids ``a`` -> ``b`` (a registry keyed by task id alone
    would release one run's ``b`` when another run's ``a`` finished); odd ones run one
    task with an id of their own.
    """
    count = 20

    def ids(index: int) -> list[str]:
        return ["a", "b"] if index % 2 == 0 else [f"r{index:02d}_a"]

    async def one(http: httpx.AsyncClient, index: int) -> dict[str, Any]:
        plan = pinned_plan("", f"MARK{index:02d}Z")
        plan["tasks"] = plan["tasks"][: len(ids(index))]
        for offset, (task, task_id) in enumerate(zip(plan["tasks"], ids(index), strict=True)):
            task["id"] = task_id
            task["agent"] = SPREAD_AGENTS[(index + offset) % len(SPREAD_AGENTS)]
        if len(plan["tasks"]) == 2:
            plan["tasks"][1]["dependencies"] = ["a"]
        response = await http.post(QUERY, json=body(f"request {index}", plan))
        assert response.status_code == 200, response.text
        return response.json()

    started = time.perf_counter()
    async with client(service) as http:
        results = await asyncio.gather(*(one(http, i) for i in range(count)))
    wall = time.perf_counter() - started
    assert len({r["run_id"] for r in results}) == count
    for index, result in enumerate(results):
        assert [t["task_id"] for t in result["tasks"]] == ids(index)
        assert [t["id"] for t in result["plan"]["tasks"]] == ids(index)
        assert all(t["status"] == "completed" for t in result["tasks"]), result["tasks"]
        if len(result["tasks"]) == 2:
            first, second = result["tasks"]
            assert second["ready_at"] >= first["finished_at"], "another run's a released b"
        assert all(f"MARK{index:02d}Z" in t["description"] for t in result["plan"]["tasks"])
        text = json.dumps(result)
        others = [j for j in range(count) if j != index]
        assert not any(f"MARK{j:02d}Z" in text or f'"r{j:02d}_' in text for j in others)
        assert result["voice_summary"] is None
        assert result["metrics"]["tasks_total"] == len(ids(index))
    phases = {
        key: statistics.median(r["metrics"][key] for r in results)
        for key in ("wall_s", "execution_s", "synthesis_s")
    }
    print(
        f"\n{count} concurrent requests in {wall:.1f} s; per-run medians: "
        + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
    )


def _bad_requests() -> list[tuple[str, dict[str, Any], int, str | None]]:
    big_query = "x" * 1_000_000
    return [
        ("empty query", {"json": {"query": ""}}, 422, "query"),
        ("blank query", {"json": {"query": "  \n "}}, 422, "query"),
        ("1 MB query", {"json": {"query": big_query}}, 413, "body"),
        ("9000-char query", {"json": {"query": "y" * 9000}}, 422, "query"),
        ("query not a string", {"json": {"query": 7}}, 422, "query"),
        ("max_tasks not an int", {"json": {"query": "q", "max_tasks": "six"}}, 422, "max_tasks"),
        ("voice_mode not a bool", {"json": {"query": "q", "voice_mode": "yes"}}, 422, "voice_mode"),
        ("max_tasks 0", {"json": {"query": "q", "max_tasks": 0}}, 422, "max_tasks"),
        ("max_tasks 999", {"json": {"query": "q", "max_tasks": 999}}, 422, "max_tasks"),
        ("unknown field", {"json": {"query": "q", "fleet": "m3-ultra"}}, 422, "fleet"),
        (
            "invalid JSON",
            {"content": b'{"query": ', "headers": {"Content-Type": "application/json"}},
            400,
            "body",
        ),
        (
            "plan with unknown agent",
            {
                "json": {
                    "query": "q",
                    "plan": {"tasks": [{"id": "a", "agent": "ghost", "description": "d"}]},
                }
            },
            400,
            "plan",
        ),
    ]


async def test_bad_input_gets_4xx_naming_the_problem(service: LiveService) -> None:
    async def chunked_megabyte() -> AsyncIterator[bytes]:
        yield b'{"query": "'
        for _ in range(16):
            yield b"z" * 65_536
        yield b'"}'

    seen: list[str] = []
    async with client(service) as http, client(service, auth=False) as anonymous:
        for name, kwargs, status, field in _bad_requests():
            for path in (QUERY, STREAM):
                response = await http.post(path, **kwargs)
                assert response.status_code == status, (name, path, response.text)
                payload = response.json()
                assert payload["field"] == field, (name, payload)
                assert payload["error"] and "Traceback" not in response.text
                seen.append(name)
        chunked = await http.post(
            QUERY, content=chunked_megabyte(), headers={"Content-Type": "application/json"}
        )
        assert chunked.status_code == 413, chunked.text
        assert "limit" in chunked.json()["error"]

        missing = await anonymous.post(QUERY, json={"query": "q"})
        wrong = await anonymous.post(
            QUERY, json={"query": "q"}, headers={"Authorization": "Bearer nope"}
        )
        for response in (missing, wrong):
            assert response.status_code == 401
            assert response.json()["field"] == "Authorization"
        assert "missing" in missing.json()["error"] and "invalid" in wrong.json()["error"]
        assert (await anonymous.get("/api/endpoints")).status_code == 401
        assert (await anonymous.get("/openapi.json")).status_code == 401
        health = await anonymous.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}

        # The service keeps serving real runs afterwards.
        plan = pinned_plan("after", "AFTER")
        ok = await http.post(QUERY, json=body("still alive?", plan))
    assert ok.status_code == 200, ok.text
    assert [t["status"] for t in ok.json()["tasks"]] == ["completed", "completed"]
    assert len(seen) == 2 * len(_bad_requests())


async def test_hardening_answers_before_any_run(service: LiveService) -> None:
    """Real uvicorn: a foreign Host, a bad ``extra`` and an oversized ``max_tokens``."""
    async with client(service) as http:
        rebound = await http.get("/healthz", headers={"Host": "rebind.attacker.example"})
        local = await http.get("/healthz", headers={"Host": "localhost"})
        plan = pinned_plan("h", "HARD")
        plan["tasks"][0]["extra"] = {"stream": False}
        bad_extra = await http.post(QUERY, json=body("q", plan))
        plan = pinned_plan("h", "HARD", tokens=10**6)
        too_long = await http.post(STREAM, json=body("q", plan))
    assert rebound.status_code == 400 and rebound.json()["field"] == "Host"
    assert "--allowed-hosts" in rebound.json()["error"]
    assert local.status_code == 200
    assert bad_extra.status_code == 422, bad_extra.text
    assert bad_extra.json()["field"] == "plan.tasks.0.extra"
    assert "'stream'" in bad_extra.json()["error"]
    assert too_long.status_code == 422, too_long.text
    assert too_long.json()["field"] == "plan.tasks.0.max_tokens"


async def test_checkpointer_hook_saves_each_request_on_its_own_thread(
    embedded_fleet: FleetConfig,
) -> None:
    """In-process (ASGI, no socket): a service checkpointer gets every run's state."""
    from graph.persistence import make_checkpointer
    from kitty.service import ServiceSettings, create_app

    async with make_checkpointer("memory") as saver:
        settings = ServiceSettings(
            fleet="embedded",
            api_token=None,
            start_embedded=False,
            checkpointer=saver,
            context_overrides=SMALL_CAPS,
        )
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            responses = await asyncio.gather(
                *(
                    http.post(QUERY, json=body(f"saved {i}", pinned_plan(f"k{i}", f"K{i}")))
                    for i in range(2)
                ),
            )
        threads = []
        for response in responses:
            assert response.status_code == 200, response.text
            threads.append(response.json()["thread_id"])
        assert len(set(threads)) == 2 and all(threads)
        for index, thread_id in enumerate(threads):
            saved = await saver.aget_tuple({"configurable": {"thread_id": thread_id}})
            assert saved is not None
            assert saved.checkpoint["channel_values"]["goal"] == f"saved {index}"
