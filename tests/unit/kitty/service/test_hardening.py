"""Service hardening without a fleet: Host checks, admission, token caps, one error tree.

Runs are replaced by a fake ``astream_goal`` (the service's only seam to the graph), so
these tests exercise the HTTP layer alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

import kitty.service._runs
from endpoints import load_fleet
from graph import Plan, RunFinished, RunMetrics, RunResult, Task
from kitty.cli.main import app as cli_app
from kitty.errors import (
    CheckpointError,
    InternalError,
    NothingToResume,
    SettingsError,
    UserError,
)
from kitty.service import ServiceSettings, create_app
from kitty.service._errors import RequestError
from kitty.service._runs import RunSpec, stream_events
from tests.helpers import asgi_client

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUERY = "/api/query/parallel"
STREAM = f"{QUERY}/stream"


def fake_result(goal: str) -> RunResult:
    plan = Plan(tasks=[Task(id="a", agent="researcher", description="d")], source="given")
    return RunResult(
        goal=goal, answer="ok", plan=plan, tasks=[], metrics=RunMetrics(), run_id="run-1"
    )


class FakeRuns:
    """Stands in for ``graph.astream_goal``; runs can be held until released."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = 0
        self.in_flight = 0

    def hold(self) -> None:
        self.gate.clear()

    async def __call__(self, goal: str, **kwargs: Any) -> AsyncIterator[Any]:
        self.started += 1
        self.in_flight += 1
        try:
            await self.gate.wait()
            yield RunFinished(run_id="run-1", result=fake_result(goal))
        finally:
            self.in_flight -= 1


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRuns]:
    fake = FakeRuns()
    monkeypatch.setattr(kitty.service._runs, "astream_goal", fake)
    yield fake


def make_app(**overrides: Any) -> FastAPI:
    settings: dict[str, Any] = {"fleet": "embedded", "start_embedded": False, "api_token": TOKEN}
    settings.update(overrides)
    return create_app(ServiceSettings(**settings))


def plan_body(**task: Any) -> dict[str, Any]:
    base = {"id": "t1", "agent": "researcher", "description": "d"}
    return {"query": "q", "max_tasks": 1, "plan": {"tasks": [{**base, **task}]}}


# --- DNS rebinding: the Host header ---------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", QUERY, "/api/endpoints"])
async def test_loopback_service_refuses_a_foreign_host(runs: FakeRuns, path: str) -> None:
    app = make_app(api_token=None)
    async with asgi_client(app) as client:
        headers = {"Host": "attacker.example:8000"}
        if path == QUERY:
            response = await client.post(path, json={"query": "hi"}, headers=headers)
        else:
            response = await client.get(path, headers=headers)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["field"] == "Host"
    assert "attacker.example" in body["error"] and "--allowed-hosts" in body["error"]
    assert runs.started == 0


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8000", "127.0.0.1", "127.0.0.1:1", "[::1]", "[::1]:8000"]
)
async def test_loopback_names_are_accepted(host: str) -> None:
    async with asgi_client(make_app(api_token=None)) as client:
        response = await client.get("/healthz", headers={"Host": host})
    assert response.status_code == 200, response.text


async def test_allowed_hosts_admit_named_hosts_only() -> None:
    app = make_app(api_token=None, allowed_hosts=["kitty.lan", "*.example.org"])
    async with asgi_client(app) as client:
        named = await client.get("/healthz", headers={"Host": "KITTY.lan:8000"})
        wildcard = await client.get("/healthz", headers={"Host": "a.b.example.org"})
        local = await client.get("/healthz", headers={"Host": "localhost:8000"})
        other = await client.get("/healthz", headers={"Host": "example.org.evil.com"})
    assert [named.status_code, wildcard.status_code, local.status_code] == [200, 200, 200]
    assert other.status_code == 400 and "example.org.evil.com" in other.json()["error"]


async def test_exposed_service_with_token_keeps_any_host_until_allowed_hosts_is_set() -> None:
    async with asgi_client(make_app(host="0.0.0.0")) as client:
        open_ = await client.get("/healthz", headers={"Host": "brain.lan:8000"})
    async with asgi_client(make_app(host="0.0.0.0", allowed_hosts=["brain.lan"])) as client:
        named = await client.get("/healthz", headers={"Host": "brain.lan:8000"})
        foreign = await client.get("/healthz", headers={"Host": "rebound.example"})
    assert open_.status_code == 200 and named.status_code == 200
    assert foreign.status_code == 400


def test_allowed_hosts_must_be_host_names() -> None:
    with pytest.raises(ValueError, match="allowed host"):
        ServiceSettings(allowed_hosts=["http://kitty.lan/"])


# --- admission: --max-concurrent-runs -------------------------------------------------


async def test_runs_beyond_the_cap_get_429_with_retry_after(runs: FakeRuns) -> None:
    app = make_app(max_concurrent_runs=1)
    runs.hold()
    async with asgi_client(app) as client:
        first = asyncio.create_task(client.post(QUERY, json={"query": "hold"}, headers=AUTH))
        for _ in range(200):
            if runs.in_flight:
                break
            await asyncio.sleep(0.01)
        assert runs.in_flight == 1
        busy = [await client.post(p, json={"query": "more"}, headers=AUTH) for p in (QUERY, STREAM)]
        runs.gate.set()
        done = await first
        after = await client.post(QUERY, json={"query": "after"}, headers=AUTH)
    for response in busy:
        assert response.status_code == 429, response.text
        assert int(response.headers["retry-after"]) >= 1
        assert "--max-concurrent-runs" in response.json()["error"]
    assert done.status_code == 200 and after.status_code == 200
    assert runs.started == 2  # the refused requests never started a run


async def test_a_finished_stream_gives_its_place_back(runs: FakeRuns) -> None:
    app = make_app(max_concurrent_runs=1)
    async with asgi_client(app) as client:
        streamed = await client.post(STREAM, json={"query": "s"}, headers=AUTH)
        again = await client.post(STREAM, json={"query": "t"}, headers=AUTH)
    assert streamed.status_code == 200 and "event: result" in streamed.text
    assert again.status_code == 200, again.text


def test_max_concurrent_runs_default_admits_a_burst() -> None:
    assert ServiceSettings().max_concurrent_runs >= 20


# --- plan task max_tokens against the fleet's context ---------------------------------


@pytest.mark.parametrize("path", [QUERY, STREAM])
async def test_task_max_tokens_over_the_largest_context_is_422(runs: FakeRuns, path: str) -> None:
    largest = max(e.ctx for e in load_fleet("embedded").all_endpoints())
    async with asgi_client(make_app()) as client:
        over = await client.post(path, json=plan_body(max_tokens=largest + 1), headers=AUTH)
        fits = await client.post(path, json=plan_body(max_tokens=largest), headers=AUTH)
    assert over.status_code == 422, over.text
    body = over.json()
    assert body["field"] == "plan.tasks.0.max_tokens"
    assert "t1" in body["error"] and str(largest) in body["error"]
    assert fits.status_code == 200, fits.text
    assert runs.started == 1


# --- one error tree --------------------------------------------------------------------


def test_request_error_is_a_user_error() -> None:
    assert issubclass(RequestError, UserError)
    assert RequestError(429, "busy").status == 429


def _app_raising(exc: Exception) -> FastAPI:
    app = make_app()

    @app.get("/raise")
    async def raise_it() -> None:
        raise exc

    return app


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (CheckpointError("checkpoint store is gone; restart with --checkpoint"), 503),
        (SettingsError("run setting x is out of range; use 1-5"), 422),
        (NothingToResume("thread t has nothing to resume; start a new run"), 409),
        (UserError("something the user can fix"), 400),
    ],
)
async def test_every_user_error_shows_its_text(exc: Exception, status: int) -> None:
    async with asgi_client(_app_raising(exc)) as client:
        response = await client.get("/raise", headers=AUTH)
    assert response.status_code == status, response.text
    assert str(exc) in response.json()["error"]


@pytest.mark.parametrize("exc", [ValueError("bad internals"), InternalError("a bug internals")])
async def test_other_errors_are_500_with_an_id(exc: Exception) -> None:
    async with asgi_client(_app_raising(exc)) as client:
        response = await client.get("/raise", headers=AUTH)
    assert response.status_code == 500
    body = response.json()
    assert body["error_id"] in body["error"] and "internals" not in response.text


async def test_streamed_user_errors_keep_their_text(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(goal: str, **kwargs: Any) -> AsyncIterator[Any]:
        raise CheckpointError("cannot open checkpoint file x.sqlite; pass --checkpoint")
        yield  # pragma: no cover

    monkeypatch.setattr(kitty.service._runs, "astream_goal", failing)
    stream = stream_events(RunSpec("g", None))
    # stream_events always sets data to a JSON string.
    events = [(e.event, json.loads(cast(str, e.data))) async for e in stream]
    assert [name for name, _ in events] == ["error"]
    assert events[0][1]["status"] == 503 and "x.sqlite" in events[0][1]["error"]


# --- CLI pass-through -----------------------------------------------------------------


def test_serve_passes_the_new_options(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: list[ServiceSettings] = []
    monkeypatch.setattr("kitty.service.serve", lambda settings, **_: captured.append(settings))
    result = CliRunner().invoke(
        cli_app,
        [
            "serve",
            "--port",
            "0",
            "--fleet",
            "m3-ultra",
            "--allowed-hosts",
            "kitty.lan, brain.local",
            "--max-concurrent-runs",
            "3",
            "--keep-days",
            "7",
            "--checkpoint",
            "memory",
        ],
    )
    assert result.exit_code == 0, result.output
    (settings,) = captured
    assert settings.allowed_hosts == ["kitty.lan", "brain.local"]
    assert settings.max_concurrent_runs == 3 and settings.keep_days == 7


def test_serve_help_names_the_new_options() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--allowed-hosts", "--max-concurrent-runs", "--keep-days"):
        assert option in result.output


# --- A goal too long for the fleet's smallest context -----------------------------------


@pytest.mark.parametrize("path", [QUERY, STREAM])
async def test_a_query_too_long_for_the_smallest_context_is_422(runs: FakeRuns, path: str) -> None:
    # 7,800 characters, under max_query_chars; digits are a token each in SmolLM2's
    # tokenizer, so this is over 2,048 tokens whether or not the fleet is up to count it.
    query = "12345 " * 1300
    async with asgi_client(make_app()) as client:
        response = await client.post(path, json={"query": query}, headers=AUTH)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "query"
    assert "smallest slot context is 2048 tokens" in body["error"]
    assert runs.started == 0
