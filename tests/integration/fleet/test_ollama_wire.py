"""ChatOllama and the product's Ollama code against a fake server speaking Ollama's wire format.

A real Ollama daemon cannot run here; ``tests/fakes/ollama_server.py`` answers like one
(``docs/api.md``), so these tests check our requests (``think`` top-level, options) and our
handling of its answers, busy (503) and hanging servers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import BaseModel

from endpoints.clients import is_busy_error, is_endpoint_failure, make_chat_model
from endpoints.clients.probes import probe_endpoint
from endpoints.config import EndpointConfig
from tests.fakes import FakeOllama
from tests.fakes.ollama_server import BUSY_ERROR, DEFAULT_REPLY, DEFAULT_THINKING

MODEL = "gpt-oss:120b"


@pytest.fixture(scope="module")
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(model=MODEL) as server:
        yield server


@pytest.fixture
def fresh(ollama: FakeOllama) -> FakeOllama:
    ollama.reset()
    return ollama


def _endpoint(server: FakeOllama, **extra: object) -> EndpointConfig:
    return EndpointConfig(
        name="fake-ollama",
        kind="ollama",
        base_url=server.base_url,
        model=MODEL,
        slots=2,
        ctx=8192,
        **extra,
    )


async def test_invoke_with_reasoning_sends_think_top_level(fresh: FakeOllama) -> None:
    llm = make_chat_model(_endpoint(fresh, thinking="medium"), max_tokens=200)
    reply = await llm.ainvoke("Why is the sky blue?")
    assert reply.content == DEFAULT_REPLY
    assert reply.additional_kwargs["reasoning_content"] == DEFAULT_THINKING
    usage = reply.usage_metadata
    assert usage is not None
    assert usage["output_tokens"] == reply.response_metadata["eval_count"] > 0
    assert usage["input_tokens"] == reply.response_metadata["prompt_eval_count"] > 0
    assert reply.response_metadata["done_reason"] == "stop"
    body = fresh.chat_requests[-1]
    assert body["think"] == "medium"
    assert "think" not in body["options"]
    assert body["options"]["num_ctx"] == 8192
    assert body["options"]["num_predict"] == 200
    assert body["model"] == MODEL


async def test_astream_yields_content_and_usage(fresh: FakeOllama) -> None:
    llm = make_chat_model(_endpoint(fresh, thinking="low"))
    merged = None
    async for chunk in llm.astream("Hello"):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    assert merged.content == DEFAULT_REPLY
    assert merged.additional_kwargs["reasoning_content"] == DEFAULT_THINKING
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["output_tokens"] > 0
    assert fresh.chat_requests[-1]["stream"] is True
    assert fresh.chat_requests[-1]["think"] == "low"


async def test_no_thinking_unless_asked(fresh: FakeOllama) -> None:
    reply = await make_chat_model(_endpoint(fresh)).ainvoke("Hi")
    assert reply.content == DEFAULT_REPLY
    assert "reasoning_content" not in reply.additional_kwargs
    assert not fresh.chat_requests[-1].get("think")


async def test_num_predict_caps_the_reply(fresh: FakeOllama) -> None:
    reply = await make_chat_model(_endpoint(fresh), max_tokens=3).ainvoke("Hi")
    assert reply.response_metadata["done_reason"] == "length"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] == 3


class _Answer(BaseModel):
    answer: str
    confidence: float


async def test_structured_output_uses_format_schema(fresh: FakeOllama) -> None:
    llm = make_chat_model(_endpoint(fresh))
    result = await llm.with_structured_output(_Answer, method="json_schema").ainvoke("Q?")
    assert isinstance(result, _Answer)
    assert isinstance(fresh.chat_requests[-1]["format"], dict)


async def test_raw_wire_format(fresh: FakeOllama) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "think": True}
    async with httpx.AsyncClient(base_url=fresh.base_url, timeout=5) as client:
        single = (await client.post("/api/chat", json={**body, "stream": False})).json()
        lines = []
        async with client.stream("POST", "/api/chat", json=body) as response:
            assert response.headers["content-type"].startswith("application/x-ndjson")
            async for line in response.aiter_lines():
                if line:
                    lines.append(json.loads(line))
        version = (await client.get("/api/version")).json()
        tags = (await client.get("/api/tags")).json()
        running = (await client.get("/api/ps")).json()
    for key in ("model", "created_at", "message", "done", "done_reason", "total_duration"):
        assert key in single
    assert single["message"]["thinking"] == DEFAULT_THINKING
    assert single["prompt_eval_count"] > 0 and single["eval_count"] > 0
    assert all(not chunk["done"] for chunk in lines[:-1])
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["eval_count"] == len(lines) - 1
    assert "".join(c["message"]["content"] for c in lines) == DEFAULT_REPLY
    assert "".join(c["message"].get("thinking", "") for c in lines) == DEFAULT_THINKING
    assert version["version"]
    assert tags["models"][0]["name"] == MODEL
    assert running["models"][0]["model"] == MODEL


async def test_probe_sees_version_and_loaded_model(fresh: FakeOllama) -> None:
    status = await probe_endpoint(_endpoint(fresh))
    assert status.health == "ok"
    assert status.model == MODEL
    with FakeOllama(model=MODEL, loaded=False) as cold:
        status = await probe_endpoint(_endpoint(cold))
    assert status.health == "ok"
    assert status.model is None
    assert "not loaded" in status.detail


async def test_busy_first_n_answers_503_then_serves() -> None:
    with FakeOllama(model=MODEL, busy_first_n=2) as server:
        llm = make_chat_model(_endpoint(server))
        for _ in range(2):
            with pytest.raises(Exception) as caught:
                await llm.ainvoke("Hi")
            assert is_busy_error(caught.value)
            assert is_endpoint_failure(caught.value)
            assert BUSY_ERROR in str(caught.value)
        reply = await llm.ainvoke("Hi")
        assert reply.content == DEFAULT_REPLY
        assert server.busy_answered == 2
        assert len(server.chat_requests) == 3


async def test_hang_times_out_and_server_stops_quickly() -> None:
    server = FakeOllama(model=MODEL, hang=True).start()
    try:
        llm = make_chat_model(_endpoint(server), timeout_s=0.3)
        with pytest.raises(Exception) as caught:
            await llm.ainvoke("Hi")
        assert is_endpoint_failure(caught.value)
        assert not is_busy_error(caught.value)
        assert len(server.chat_requests) == 1
    finally:
        started = time.perf_counter()
        server.stop()
    assert time.perf_counter() - started < 3
