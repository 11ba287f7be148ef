"""The streamed query gives its admission place back only once its run has stopped.

Security review finding 7: the stream cancelled its run but did not wait for it, so the
place (and the run's slots, still held by node tasks being cancelled) was given back
early; and with no send timeout a client that stopped reading held its place for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, MutableMapping
from typing import Any, cast

import pytest
from sse_starlette import ServerSentEvent
from sse_starlette.sse import SendTimeoutError

import kitty.service._routes
from endpoints.fleet import get_runtime
from graph import Plan, TaskStarted
from kitty.service._admission import RunAdmission
from kitty.service._routes import _AdmittedStream
from kitty.service._runs import RunSpec, stream_events
from tests.conftest import FakeFleet
from tests.fake_chat import Reply
from tests.helpers import simple_task


async def test_a_closed_stream_ends_only_after_its_run_freed_its_slots(
    fake_fleet: FakeFleet,
) -> None:
    fake_fleet.chat.script(Reply("never finished", delay_s=30), phase="task")
    plan = Plan(tasks=[simple_task("a", "coder")])
    spec = RunSpec(goal="Hold a slot", plan=plan, kwargs={"plan": plan, "fleet": fake_fleet.path})
    events = cast(AsyncGenerator[ServerSentEvent, None], stream_events(spec))
    async for event in events:
        if event.event == TaskStarted.model_fields["kind"].default:
            break  # the task holds its slot now; the client goes away
    await events.aclose()
    limiter = get_runtime(fake_fleet.path).limiters()["fake-coder"]
    assert limiter.stats().in_use == 0  # stopped before the stream ended, not later


async def test_a_client_that_stops_reading_is_dropped_and_its_place_given_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kitty.service._routes, "SEND_TIMEOUT_S", 0.2)  # 30 s in service
    admission = RunAdmission(1, 1)
    ticket = await admission.admit()

    async def forever() -> AsyncIterator[dict[str, Any]]:
        while True:
            yield {"event": "tick", "data": "x"}
            await asyncio.sleep(0.01)

    response = _AdmittedStream(forever(), ticket=ticket)  # the service's default timeout
    started = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never disconnects...
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            started.set()
            await asyncio.Event().wait()  # ...and never reads

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/query/parallel/stream",
        "headers": [],
        "asgi": {"version": "3.0", "spec_version": "2.4"},
    }
    async with asyncio.timeout(10):
        with contextlib.suppress(SendTimeoutError):
            await response(scope, receive, send)
    assert started.is_set()
    assert admission.in_flight == 0
    assert (await admission.admit()) is not None  # the place is free again
