"""Direct chat calls: where nothing listens, llama.cpp is asked over httpx, not the SDK.

A fake llama.cpp (a streamed ``/v1/chat/completions``) records each request's body, its
``User-Agent`` (the OpenAI SDK's or httpx's) and its client port (one port = one
connection), and can answer with a tool call in pieces, an error status or a slow stream
that notices the client leaving. Each answer is compared with what ``ChatOpenAI`` itself
makes of the same stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast
from uuid import UUID

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    BaseMessageChunk,
    HumanMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk
from langchain_openai import ChatOpenAI
from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict

from endpoints.calls import describe_error
from endpoints.clients import is_busy_error, is_endpoint_failure, loop_http_client
from endpoints.clients._direct_chat import ainvoke_chat, direct_call, listened
from kitty.errors import EndpointHTTPError
from ops.simfleet._background import BackgroundServers
from tests.helpers import endpoint_spec

TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}


class FakeLlamaCpp:
    """A streamed chat endpoint; the last user message picks the answer."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.disconnected = asyncio.Event()
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self._chat)

    async def _chat(self, request: Request) -> Any:
        body = await request.json()
        self.requests.append(
            {
                "body": body,
                "agent": request.headers.get("user-agent", ""),
                "port": request.client.port if request.client else None,
            }
        )
        ask = body["messages"][-1]["content"]
        if ask == "too long":
            error = {"code": 400, "message": "the request exceeds the available context size"}
            return JSONResponse({"error": error}, status_code=400)
        if ask == "busy":
            return JSONResponse({"error": {"message": "server busy"}}, status_code=503)
        return StreamingResponse(self._stream(ask), media_type="text/event-stream")

    async def _stream(self, ask: str) -> AsyncIterator[str]:
        def chunk(**fields: Any) -> str:
            payload = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
            return f"data: {json.dumps(payload | fields)}\n\n"

        def delta(**fields: Any) -> str:
            return chunk(choices=[{"index": 0, "delta": fields, "finish_reason": None}])

        if ask == "slow":
            try:
                for _ in range(200):
                    yield delta(content="x")
                    await asyncio.sleep(0.05)
            finally:
                self.disconnected.set()
            return
        if ask == "fail late":
            yield delta(role="assistant", content="par")
            error = {"code": 500, "message": "failed to decode the batch", "type": "server_error"}
            yield f"data: {json.dumps({'error': error})}\n\n"
            return
        if ask == "tool":
            start = {"index": 0, "id": "call_1", "type": "function"}
            yield delta(role="assistant", content=None)
            yield delta(tool_calls=[start | {"function": {"name": "search", "arguments": ""}}])
            yield delta(tool_calls=[{"index": 0, "function": {"arguments": '{"q": '}}])
            yield delta(tool_calls=[{"index": 0, "function": {"arguments": '"kittens"}'}}])
            finish = "tool_calls"
        else:
            yield delta(role="assistant", reasoning_content="thinking")
            yield delta(content="Hello")
            yield delta(content=" world")
            finish = "stop"
        yield chunk(choices=[{"index": 0, "delta": {}, "finish_reason": finish}])
        usage = {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 9},
        }
        timings = {"cache_n": 9, "prompt_n": 3}
        yield chunk(choices=[], usage=usage, timings=timings)
        yield "data: [DONE]\n\n"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLlamaCpp]:
    fake = FakeLlamaCpp()
    background = BackgroundServers([(fake.app, "127.0.0.1", 0)], name="fake-llamacpp-direct")
    (fake.port,) = background.start()  # type: ignore[attr-defined]
    yield fake
    background.stop()


def model_of(server: FakeLlamaCpp) -> ChatOpenAI:
    """A chat model as the product builds it (its SDK client on this test's event loop)."""
    base = f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    return ChatOpenAI(
        base_url=f"{base}/v1",
        http_async_client=loop_http_client(base),
        api_key="sk-no-key-required",
        model="m",
        max_tokens=8,
        temperature=0.0,
        streaming=True,
        stream_usage=True,
        max_retries=0,
        timeout=10,
        extra_body={"id_slot": 1},
    )


class Listener(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str | list[str | dict[str, Any]]] = []

    async def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.tokens.append(token)


def ask(text: str) -> list[BaseMessage]:
    return [SystemMessage("You are terse."), HumanMessage(text)]


def same_answer(direct: BaseMessage, sdk: BaseMessage) -> None:
    assert isinstance(direct, AIMessage) and isinstance(sdk, AIMessage)
    assert direct.content == sdk.content
    assert direct.tool_calls == sdk.tool_calls
    assert direct.usage_metadata == sdk.usage_metadata
    for key in ("finish_reason", "model_name"):
        assert direct.response_metadata[key] == sdk.response_metadata[key]


async def test_without_a_listener_the_same_body_goes_out_over_httpx(
    server: FakeLlamaCpp,
) -> None:
    server.requests.clear()
    model = model_of(server)
    listener = Listener()
    sdk = await ainvoke_chat(model, ask("hello"), {"callbacks": [listener]})
    direct = await ainvoke_chat(model, ask("hello"))
    via_sdk, via_httpx = server.requests
    assert "OpenAI" in via_sdk["agent"] and "httpx" in via_httpx["agent"]
    assert listener.tokens  # the listener saw the tokens of its call
    assert via_httpx["body"] == via_sdk["body"]  # id_slot, max_completion_tokens, stream...
    assert via_httpx["body"]["id_slot"] == 1
    same_answer(direct, sdk)
    assert isinstance(direct, AIMessage) and direct.usage_metadata is not None  # for mypy
    assert direct.content == "Hello world"
    assert direct.usage_metadata["input_token_details"]["cache_read"] == 9
    assert direct.response_metadata["timings"]["cache_n"] == 9
    assert direct.additional_kwargs["reasoning_content"] == "thinking"


async def test_a_tool_call_streamed_in_pieces_is_put_together(server: FakeLlamaCpp) -> None:
    server.requests.clear()
    model = model_of(server).bind_tools([TOOL], tool_choice="required")
    sdk = await ainvoke_chat(model, ask("tool"), {"callbacks": [Listener()]})
    direct = await ainvoke_chat(model, ask("tool"))
    assert direct_call(model) is not None
    same_answer(direct, sdk)
    assert direct.tool_calls == [  # type: ignore[attr-defined]
        {"name": "search", "args": {"q": "kittens"}, "id": "call_1", "type": "tool_call"}
    ]
    bodies = [r["body"] for r in server.requests]
    assert bodies[0] == bodies[1] and bodies[1]["tools"][0]["function"]["name"] == "search"


async def test_a_langgraph_messages_stream_still_gets_the_tokens(server: FakeLlamaCpp) -> None:
    server.requests.clear()
    model = model_of(server)

    class State(TypedDict):
        answer: str

    async def node(state: State) -> dict[str, str]:
        message = await ainvoke_chat(model, ask("hello"), {"tags": ["kitty:task"]})
        return {"answer": str(message.content)}

    builder = StateGraph(State)
    builder.add_node("agent", node)
    builder.add_edge(START, "agent")
    graph = builder.compile()
    streamed: list[str] = []
    async for part in graph.astream({"answer": ""}, stream_mode="messages"):
        # The "messages" mode yields (message chunk, metadata) pairs.
        chunk, _ = cast(tuple[BaseMessageChunk, dict[str, Any]], part)
        if chunk.content:
            assert isinstance(chunk.content, str)  # the fake streams plain text
            streamed.append(chunk.content)
    assert "".join(streamed) == "Hello world"
    assert "OpenAI" in server.requests[-1]["agent"]
    result = await graph.ainvoke({"answer": ""})  # nothing listens: direct
    assert result["answer"] == "Hello world" and "httpx" in server.requests[-1]["agent"]


def test_who_listens() -> None:
    assert not listened(None)
    assert not listened({"tags": ["t"], "metadata": {"kitty_run_id": "r"}})
    assert listened({"callbacks": [Listener()]})


async def test_only_a_plain_streaming_chatopenai_goes_direct(server: FakeLlamaCpp) -> None:
    model = model_of(server)
    assert direct_call(model) is not None
    assert direct_call(model.bind(stop=["x"])) is not None
    assert direct_call(model.model_copy(update={"streaming": False})) is None
    assert direct_call(model.with_config(tags=["x"])) is None
    assert direct_call(model | (lambda message: message)) is None


async def test_error_statuses_read_like_the_sdks(server: FakeLlamaCpp) -> None:
    model = model_of(server)
    endpoint = _endpoint(server)
    with pytest.raises(EndpointHTTPError) as rejected:
        await ainvoke_chat(model, ask("too long"))
    assert rejected.value.status_code == 400
    assert "exceeds the available context size" in str(rejected.value)
    assert not is_endpoint_failure(rejected.value)
    assert describe_error(rejected.value, endpoint).startswith("srv: request rejected: Error")
    with pytest.raises(EndpointHTTPError) as busy:
        await ainvoke_chat(model, ask("busy"))
    assert busy.value.status_code == 503
    assert is_busy_error(busy.value) and is_endpoint_failure(busy.value)
    with pytest.raises(EndpointHTTPError) as late:  # an error event after the headers
        await ainvoke_chat(model, ask("fail late"))
    assert late.value.status_code == 500 and "failed to decode" in str(late.value)
    assert is_endpoint_failure(late.value)


async def test_calls_reuse_one_connection(server: FakeLlamaCpp) -> None:
    server.requests.clear()
    model = model_of(server)
    for _ in range(10):
        await ainvoke_chat(model, ask("hello"))
    assert len({r["port"] for r in server.requests}) == 1


async def test_a_cancelled_call_closes_its_connection(server: FakeLlamaCpp) -> None:
    server.disconnected.clear()
    call = asyncio.create_task(ainvoke_chat(model_of(server), ask("slow")))
    while not server.requests or server.requests[-1]["body"]["messages"][-1]["content"] != "slow":
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # the server stops streaming at its next write (every 50 ms), not after 10 s
    await asyncio.wait_for(server.disconnected.wait(), timeout=2.0)


async def test_each_server_has_its_own_client() -> None:
    first, second = loop_http_client("http://a:1"), loop_http_client("http://b:2")
    assert first is not second and loop_http_client("http://a:1") is first


def _endpoint(server: FakeLlamaCpp) -> Any:
    from endpoints.config import EndpointConfig

    return EndpointConfig.model_validate(endpoint_spec("srv", server.port))  # type: ignore[attr-defined]


async def test_a_connection_closed_without_an_answer_is_tried_once_more() -> None:
    """The server drops the first request unanswered (a keep-alive close race)."""
    seen: list[int] = []
    answer = (
        b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"ok"},'
        b'"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        seen.append(len(seen))
        if len(seen) > 1:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                + f"content-length: {len(answer)}\r\n\r\n".encode()
                + answer
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    model = ChatOpenAI(
        base_url=f"{base}/v1",
        http_async_client=loop_http_client(base),
        api_key="sk-no-key-required",
        model="m",
        streaming=True,
        max_retries=0,
    )
    async with server:
        message = await ainvoke_chat(model, ask("hello"))
    assert message.content == "ok" and len(seen) == 2
