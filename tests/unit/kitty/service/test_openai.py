"""The OpenAI-compatible door over the fake fleet: requests, runs, chunks and errors.

Runs are real graph runs whose model calls the scripted fake answers; the HTTP layer is
called in process (``httpx.ASGITransport`` reads a streamed body to its end, so the
disconnect of a stream is tested on :func:`stream_chunks` itself and, live, in
``tests/integration/service/test_openai.py``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

import kitty.service._runs
from graph import Plan, RunFinished, RunMetrics, RunResult, Task
from kitty.service import ServiceSettings, create_app
from kitty.service._openai import ChatRun, ChunkWriter, stream_chunks
from kitty.service._runs import RunSpec
from kitty.service._schemas import QueryRequest
from tests.conftest import FakeFleet
from tests.fake_chat import FakeChat, Reply
from tests.helpers import asgi_client, offline_fleet, until

TOKEN = "door-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = "/v1/chat/completions"
MODEL = "kitty-orchestrator"


@pytest.fixture
def fake_fleet(tmp_path: Path, fresh_fleet_state: None) -> FakeFleet:
    """The shared fake fleet's shape with 8,192-token contexts.

    The fake has no tokenizer: counted by the safe bound (a token per byte), the
    planner's 2 KB prompt leaves a 2,048-token context no room for earlier turns.
    """
    path = str(offline_fleet(tmp_path, ctx=8192))
    return FakeFleet(path=path, chat=FakeChat().install(path))


def make_app(fleet: str, **overrides: Any) -> FastAPI:
    settings: dict[str, Any] = {"fleet": fleet, "start_embedded": False, "api_token": TOKEN}
    settings.update(overrides)
    return create_app(ServiceSettings(**settings))


def ask(goal: str = "Plan a picnic", **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": goal}], **fields}


async def post(app: FastAPI, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    async with asgi_client(app) as client:
        return await client.post(CHAT, json=body, headers=AUTH if headers is None else headers)


def chunks_of(response: httpx.Response) -> list[Any]:
    """The ``data:`` payloads of an SSE body (``[DONE]`` as the string)."""
    payloads = []
    for block in response.text.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        assert len(lines) == 1 and lines[0].startswith("data: "), block
        data = lines[0].removeprefix("data: ")
        payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


def assert_openai_error(response: httpx.Response, status: int, **expected: Any) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    for key, value in expected.items():
        assert error[key] == value, (key, error)
    return dict(error)


def png_url() -> str:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


# --- models ---------------------------------------------------------------------------


async def test_models_lists_the_service_fleet_and_each_configured_one(
    fake_fleet: FakeFleet,
) -> None:
    app = make_app(fake_fleet.path, models={"small": fake_fleet.path})
    async with asgi_client(app) as client:
        listed = await client.get("/v1/models", headers=AUTH)
        refused = await client.get("/v1/models")

    assert listed.status_code == 200
    body = listed.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [MODEL, "small"]
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in body["data"])
    assert_openai_error(refused, 401, code="invalid_api_key", param="Authorization")


# --- a run, not streamed ----------------------------------------------------------------


async def test_a_completion_has_the_answer_usage_and_the_thread_header(
    fake_fleet: FakeFleet,
) -> None:
    response = await post(make_app(fake_fleet.path), ask())

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "final answer"
    assert choice["finish_reason"] == "stop"
    assert "- task_1 researcher: Look up the facts" in choice["message"]["reasoning_content"]
    usage = body["usage"]
    calls = fake_fleet.chat.calls  # planner, task, synthesizer: the run's tokens
    assert usage["prompt_tokens"] == sum(
        sum(len(str(m.content).split()) for m in c.messages) for c in calls
    )
    assert usage["completion_tokens"] == sum(len(c.reply.text.split()) for c in calls)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    extra = body["x_kitty"]
    assert response.headers["x-kitty-thread-id"] == extra["thread_id"]
    assert response.headers["x-kitty-run-id"] == extra["run_id"]
    assert extra["voice_summary"] is None  # voice is off unless asked for


async def test_run_settings_come_from_metadata_and_top_level_keys(fake_fleet: FakeFleet) -> None:
    body = ask(
        max_tokens=77,
        metadata={"voice": "true", "max_tasks": "1"},  # OpenAI metadata values are strings
        thinking="high",
    )

    response = await post(make_app(fake_fleet.path), body)

    assert response.status_code == 200, response.text
    assert response.json()["x_kitty"]["voice_summary"] == "voice summary"
    (planner,) = fake_fleet.chat.calls_for(phase="planner")
    assert "into 1 or fewer specific subtasks" in planner.prompt
    (synthesizer,) = fake_fleet.chat.calls_for(phase="synthesizer")
    assert synthesizer.settings["max_tokens"] == 77
    assert synthesizer.settings["thinking"] == "high"


@pytest.mark.parametrize(
    ("fields", "thinking"),
    [
        ({"reasoning_effort": "minimal"}, "low"),
        ({"reasoning": {"effort": "medium"}}, "medium"),  # Open WebUI's spelling
        ({"reasoning_effort": "low", "metadata": {"thinking": "high"}}, "high"),
    ],
)
async def test_reasoning_effort_sets_the_synthesizers_thinking(
    fake_fleet: FakeFleet, fields: dict[str, Any], thinking: str
) -> None:
    response = await post(make_app(fake_fleet.path), ask(**fields))

    assert response.status_code == 200, response.text
    (synthesizer,) = fake_fleet.chat.calls_for(phase="synthesizer")
    assert synthesizer.settings["thinking"] == thinking


async def test_an_answer_cut_at_max_tokens_finishes_with_length(fake_fleet: FakeFleet) -> None:
    fake_fleet.chat.script(Reply("cut short", finish_reason="length"), phase="synthesizer")

    response = await post(make_app(fake_fleet.path), ask(max_completion_tokens=5))

    assert response.json()["choices"][0]["finish_reason"] == "length"


async def test_earlier_turns_reach_the_planner_as_quoted_data(fake_fleet: FakeFleet) -> None:
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": [{"type": "text", "text": "Plan a trip to Oslo."}]},
            {"role": "assistant", "content": "Day 1: the fjord. Day 2: museums."},
            {"role": "user", "content": "Make it cheaper"},
        ],
    }

    response = await post(make_app(fake_fleet.path), body)

    assert response.status_code == 200, response.text
    (planner,) = fake_fleet.chat.calls_for(phase="planner")
    quoted = planner.prompt.split("<conversation>", 1)[1].split("</conversation>", 1)[0]
    assert "[system] You answer briefly." in quoted
    assert "[user] Plan a trip to Oslo." in quoted
    assert "[assistant] Day 1: the fjord." in quoted
    assert planner.prompt.rstrip().endswith("Goal: Make it cheaper")


# --- streamed ---------------------------------------------------------------------------


async def test_a_stream_sends_progress_then_the_answer_then_usage(fake_fleet: FakeFleet) -> None:
    fake_fleet.chat.script(Reply("the merged answer in six words"), phase="synthesizer")

    response = await post(make_app(fake_fleet.path), ask(stream=True))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = chunks_of(response)
    assert chunks[-1] == "[DONE]"
    body = chunks[:-1]
    assert {c["object"] for c in body} == {"chat.completion.chunk"}
    assert len({c["id"] for c in body}) == 1 and {c["model"] for c in body} == {MODEL}
    assert body[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in body[1:-1]]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    content = [d["content"] for d in deltas if "content" in d]
    assert "Plan in " in reasoning and "- task_1 researcher: Look up the facts" in reasoning
    assert "task_1 researcher started on fake-tools #" in reasoning
    assert "task_1 researcher completed in " in reasoning and "0 tool calls" in reasoning
    assert len(content) > 1  # token by token
    # progress first, then the answer: no reasoning after the first piece of content
    first_content = next(i for i, d in enumerate(deltas) if "content" in d)
    assert not any("reasoning_content" in d for d in deltas[first_content:])
    last = body[-1]
    assert last["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]
    assert "".join(content) == last["x_kitty"]["answer"] == "the merged answer in six words"
    assert last["usage"]["total_tokens"] > 0
    assert response.headers["x-kitty-thread-id"] == last["x_kitty"]["thread_id"]
    assert all("usage" not in c for c in body[:-1])


async def test_include_usage_sends_it_in_a_last_chunk_without_choices(
    fake_fleet: FakeFleet,
) -> None:
    body = ask(stream=True, stream_options={"include_usage": True})

    chunks = chunks_of(await post(make_app(fake_fleet.path), body))

    finish, usage, done = chunks[-3:]
    assert finish["choices"][0]["finish_reason"] == "stop" and "usage" not in finish
    assert usage["choices"] == [] and usage["usage"]["prompt_tokens"] > 0
    assert usage["x_kitty"]["run_id"]
    assert done == "[DONE]"


async def test_a_failure_mid_stream_is_an_openai_error_chunk(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(goal: str, **kwargs: Any) -> AsyncIterator[Any]:
        raise RuntimeError("boom")
        yield  # pragma: no cover - makes this an async generator

    monkeypatch.setattr(kitty.service._runs, "astream_goal", broken)

    chunks = chunks_of(await post(make_app(fake_fleet.path), ask(stream=True)))

    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    error = chunks[-1]["error"]
    assert error["type"] == "server_error" and "error id" in error["message"]
    assert "boom" not in error["message"]  # no exception text leaves the service
    assert "[DONE]" not in chunks


class _HeldRun:
    """Stands in for ``astream_goal``: one event, then waits until cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, goal: str, **kwargs: Any) -> AsyncIterator[Any]:
        self.started.set()
        try:
            yield RunFinished(run_id="r", result=_result(goal))  # not the end: it holds
            await asyncio.Event().wait()
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.set()
            raise


def _result(goal: str) -> RunResult:
    plan = Plan(tasks=[Task(id="a", agent="researcher", description="d")], source="given")
    return RunResult(goal=goal, answer="ok", plan=plan, tasks=[], metrics=RunMetrics(), run_id="r")


async def test_a_stream_closed_early_cancels_its_run(monkeypatch: pytest.MonkeyPatch) -> None:
    held = _HeldRun()
    monkeypatch.setattr(kitty.service._runs, "astream_goal", held)
    run = ChatRun(
        RunSpec(goal="g", plan=None), MODEL, "thread", None, False, QueryRequest(query="g")
    )
    stream = stream_chunks(run, ChunkWriter(MODEL))

    await anext(stream)  # the role chunk
    await held.started.wait()
    await stream.aclose()  # the client went away

    await until(held.cancelled.is_set)


# --- refusals, by name ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"frobnicate": 1}, "frobnicate"),
        ({"metadata": {"max_tasks": "1", "colour": "red"}}, "metadata.colour"),
    ],
)
async def test_unknown_keys_get_400_naming_them(
    fake_fleet: FakeFleet, extra: dict[str, Any], param: str
) -> None:
    response = await post(make_app(fake_fleet.path), ask(**extra))

    error = assert_openai_error(response, 400, param=param, code="unknown_parameter")
    assert repr(param) in error["message"] and "max_tasks" in error["message"]
    assert fake_fleet.chat.calls == []


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"approve_plan": True}, "approve_plan", "plan decision"),
        ({"metadata": {"approve_plan": "true"}}, "metadata.approve_plan", "'metadata.approve_"),
        ({"n": 2}, "n", "n=1"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tools"),
        ({"logprobs": True}, "logprobs", "log probabilities"),
        ({"response_format": {"type": "json_object"}}, "response_format", "text"),
        ({"metadata": {"max_tasks": "99"}}, "metadata.max_tasks", "less than or equal"),
        ({"voice": "loud"}, "voice", "boolean"),
        ({"thread_id": "no spaces please"}, "thread_id", "pattern"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
    ],
)
async def test_what_a_run_cannot_honour_gets_a_clear_400(
    fake_fleet: FakeFleet, extra: dict[str, Any], param: str, words: str
) -> None:
    response = await post(make_app(fake_fleet.path), ask(**extra))

    error = assert_openai_error(response, 400, param=param)
    assert words in error["message"]


async def test_accepted_openai_fields_are_ignored(fake_fleet: FakeFleet) -> None:
    body = ask(
        temperature=0.2,
        top_p=0.9,
        n=1,
        user="u-1",
        seed=7,
        stop=["\n\n"],
        presence_penalty=0.1,
        frequency_penalty=0.1,
        stream_options={"include_usage": False},
        tool_choice="none",
        response_format={"type": "text"},
    )

    response = await post(make_app(fake_fleet.path), body)

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("messages", "param", "words"),
    [
        ([{"role": "assistant", "content": "hi"}], "messages.0", "end with the user's message"),
        ([{"role": "user", "content": "   "}], "messages.0", "no text"),
        (
            [{"role": "user", "content": "a"}, {"role": "tool", "content": "x"}],
            "messages.1",
            "tool",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio"}]}],
            "messages.0.content.0",
            "text or image_url",
        ),
        ([], "messages", "at least 1"),
    ],
)
async def test_messages_must_end_with_a_user_goal(
    fake_fleet: FakeFleet, messages: list[dict[str, Any]], param: str, words: str
) -> None:
    response = await post(make_app(fake_fleet.path), {"model": MODEL, "messages": messages})

    error = assert_openai_error(response, 400)
    assert words in error["message"]
    if param is not None:
        assert error["param"] == param


async def test_an_unknown_model_is_404_model_not_found(fake_fleet: FakeFleet) -> None:
    response = await post(make_app(fake_fleet.path), {**ask(), "model": "gpt-4o"})

    error = assert_openai_error(response, 404, param="model", code="model_not_found")
    assert MODEL in error["message"]


async def test_bad_json_is_an_openai_400(fake_fleet: FakeFleet) -> None:
    async with asgi_client(make_app(fake_fleet.path)) as client:
        response = await client.post(
            CHAT, content=b"{not json", headers={**AUTH, "content-type": "application/json"}
        )

    assert_openai_error(response, 400, type="invalid_request_error")


# --- the service's own checks, in the door's terms -----------------------------------------


async def test_a_goal_over_the_query_limit_is_422_naming_messages(fake_fleet: FakeFleet) -> None:
    response = await post(make_app(fake_fleet.path, max_query_chars=10), ask("x" * 11))

    error = assert_openai_error(response, 422, param="messages", code="context_length_exceeded")
    assert "the last user message (the goal) has 11 characters" in error["message"]


async def test_image_parts_are_the_runs_images_under_its_caps(fake_fleet: FakeFleet) -> None:
    image = {"type": "image_url", "image_url": {"url": png_url()}}
    one = {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}
    two = {"role": "user", "content": [{"type": "text", "text": "And these?"}, image, image]}
    not_image = {
        "role": "user",
        "content": [
            {"type": "text", "text": "x"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}},
        ],
    }
    app = make_app(fake_fleet.path, context_overrides={"max_images": 1})

    ran = await post(app, {"model": MODEL, "messages": [one]})
    too_many = await post(app, {"model": MODEL, "messages": [two]})
    refused = await post(app, {"model": MODEL, "messages": [not_image]})

    assert ran.status_code == 200, ran.text
    (planner,) = fake_fleet.chat.calls_for(phase="planner")
    assert "1 image is attached to this goal" in planner.prompt
    error = assert_openai_error(too_many, 422, param="messages", code="invalid_image")
    assert "2 images attached" in error["message"] and "max_images" in error["message"]
    assert_openai_error(refused, 415, param="messages", code="invalid_image")


class _GatedRuns:
    """``astream_goal`` stand-in whose runs wait for ``gate``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.in_flight = 0

    async def __call__(self, goal: str, **kwargs: Any) -> AsyncIterator[Any]:
        self.in_flight += 1
        try:
            await self.gate.wait()
            yield RunFinished(run_id="r", result=_result(goal))
        finally:
            self.in_flight -= 1


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[_GatedRuns]:
    runs = _GatedRuns()
    monkeypatch.setattr(kitty.service._runs, "astream_goal", runs)
    yield runs


async def test_runs_beyond_the_cap_get_an_openai_429_with_retry_after(
    fake_fleet: FakeFleet, gated: _GatedRuns
) -> None:
    app = make_app(fake_fleet.path, max_concurrent_runs=1)
    async with asgi_client(app) as client:
        first = asyncio.create_task(client.post(CHAT, json=ask(), headers=AUTH))
        await until(lambda: gated.in_flight == 1)
        busy = await client.post(CHAT, json=ask(stream=True), headers=AUTH)
        gated.gate.set()
        done = await first

    error = assert_openai_error(busy, 429, type="rate_limit_error", code="rate_limit_exceeded")
    assert "--max-concurrent-runs" in error["message"]
    assert int(busy.headers["retry-after"]) >= 1
    assert done.status_code == 200, done.text


# --- the security layers answer /v1 in OpenAI's shape, the rest as before -----------------


async def test_middleware_errors_on_v1_are_openai_shaped(fake_fleet: FakeFleet) -> None:
    app = make_app(fake_fleet.path, max_body_bytes=2048)
    async with asgi_client(app) as client:
        wrong_key = await client.post(CHAT, json=ask(), headers={"Authorization": "Bearer nope"})
        too_big = await client.post(CHAT, json=ask("x" * 4000), headers=AUTH)
        foreign = await client.get("/v1/models", headers={**AUTH, "Host": "attacker.example:8000"})
        missing = await client.get("/v1/embeddings", headers=AUTH)
        service_route = await client.post(
            "/api/query/parallel", json={"query": "q"}, headers={"Authorization": "Bearer x"}
        )

    assert_openai_error(wrong_key, 401, type="invalid_request_error", code="invalid_api_key")
    assert wrong_key.headers["www-authenticate"] == "Bearer"
    assert_openai_error(too_big, 413, code="request_too_large", param="body")
    assert "attacker.example" in assert_openai_error(foreign, 400, param="Host")["message"]
    assert_openai_error(missing, 404)
    assert service_route.status_code == 401
    assert isinstance(service_route.json()["error"], str)  # the service's own shape
