"""Chat calls to llama.cpp straight over httpx when nothing listens to the tokens.

A ``ChatOpenAI`` call pays per request for LangChain's callback machinery (serialising
the model for ``on_chat_model_start``, a run manager per token) and for the OpenAI SDK's
request transform and response models, a few milliseconds of CPU on a small machine:
more than the call itself costs on a fast server. When no callback handler would see
the call (no ``messages`` stream, no ``astream_events``, no tracer; :func:`listened`),
:func:`ainvoke_chat` sends the very request body ``ChatOpenAI`` would send (built by its
own ``_get_request_payload``, so bound tools, ``tool_choice``, ``response_format`` and
``extra_body`` such as ``id_slot`` are honoured), streams the answer (so a cancelled
call closes the connection and llama.cpp stops at its next token write) over the loop's
shared HTTP client, and turns it into an ``AIMessage`` with ``ChatOpenAI``'s own
``_create_chat_result``: the same content, tool calls, usage and metadata. llama.cpp's
``reasoning_content`` and ``timings`` are kept too (``additional_kwargs`` and
``response_metadata``).

Anything else (Ollama, a structured-output parser chain, a fake model, a listener such
as LangGraph Studio's ``messages`` stream) goes through ``model.ainvoke`` unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from langchain_core.callbacks.manager import AsyncCallbackManager
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.config import ensure_config

from endpoints.clients._chat_models import loop_http_client
from kitty.errors import EndpointHTTPError

_ERROR_BODY_CHARS = 300


@dataclass(frozen=True)
class DirectCall:
    """A ``ChatOpenAI`` and the keyword arguments its bindings add to a request."""

    model: Any  # langchain_openai.ChatOpenAI (imported lazily: it is slow to import)
    kwargs: dict[str, Any]


def listened(config: RunnableConfig | None) -> bool:
    """True when a callback handler would see a call made with ``config``.

    The handlers come from ``config``, from the enclosing graph step's config (LangGraph
    puts its ``messages`` stream handler there) and from tracing settings (LangSmith).
    """
    merged = ensure_config(config)
    manager = AsyncCallbackManager.configure(
        merged.get("callbacks"),
        None,
        inheritable_tags=merged.get("tags"),
        inheritable_metadata=merged.get("metadata"),
    )
    return bool(manager.handlers)


def direct_call(model: Runnable[Any, Any] | Any) -> DirectCall | None:
    """``model`` as a :class:`DirectCall`, or ``None`` when it is not a plain ChatOpenAI.

    Bindings (``bind``, ``bind_tools``) are unwrapped; an outer binding's arguments win,
    as in ``RunnableBinding.ainvoke``. A binding with its own config or a sequence (an
    output parser) is not unwrapped.
    """
    from langchain_openai import ChatOpenAI

    kwargs: dict[str, Any] = {}
    while isinstance(model, RunnableBinding):
        if model.config or model.config_factories:
            return None
        kwargs = {**model.kwargs, **kwargs}
        model = model.bound
    if type(model) is not ChatOpenAI or not model.streaming:
        return None
    if model.include_response_headers or model.openai_api_base is None:
        return None
    return DirectCall(model, kwargs)


async def ainvoke_chat(
    model: Runnable[Any, Any] | Any,
    messages: Sequence[BaseMessage],
    config: RunnableConfig | None = None,
) -> BaseMessage:
    """``model.ainvoke(messages, config)``, straight over httpx where nothing listens.

    Raises:
        EndpointHTTPError: The server answered the direct request with an error status.
        httpx.TransportError: The server could not be reached or dropped the connection.
    """
    direct = direct_call(model)
    if direct is None or listened(config):
        result: BaseMessage = await model.ainvoke(list(messages), config=config)
        return result
    return await _stream(direct, list(messages))


def request_body(direct: DirectCall, messages: list[BaseMessage]) -> dict[str, Any]:
    """The JSON body ``ChatOpenAI`` would send for ``messages``, streamed with usage."""
    payload = direct.model._get_request_payload(messages, **direct.kwargs)
    extra = payload.pop("extra_body", None) or {}
    payload["stream"] = True
    payload["stream_options"] = {"include_usage": True}
    return {**payload, **extra}


async def _stream(direct: DirectCall, messages: list[BaseMessage]) -> BaseMessage:
    model = direct.model
    body = request_body(direct, messages)
    key = model.openai_api_key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    headers.update(model.default_headers or {})
    timeout = model.request_timeout
    base_url = str(model.openai_api_base).rstrip("/")
    client = loop_http_client(base_url.removesuffix("/v1"))
    answer = _Answer()
    request = client.build_request(
        "POST",
        f"{base_url}/chat/completions",
        json=body,
        headers=headers,
        timeout=httpx.Timeout(timeout if isinstance(timeout, int | float) else None),
    )
    response = await _send(client, request)
    try:
        if response.status_code >= 400:
            text = (await response.aread()).decode(errors="replace")
            raise EndpointHTTPError(response.status_code, _error_message(text))
        # The whole stream at once: nothing here acts on a token as it comes, and a
        # cancelled read still closes the connection, so llama.cpp stops generating.
        events = await response.aread()
    finally:
        await response.aclose()
    for line in events.splitlines():
        if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
            answer.add(json.loads(line[5:]))
    return answer.message(model)


async def _send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send ``request``, once more if the server closed the connection without answering.

    A pooled keep-alive connection the server closes just as the request goes out ends
    with no response at all ("Server disconnected without sending a response"): the
    server never read the request, so sending it again on a new connection is safe.
    """
    try:
        return await client.send(request, stream=True)
    except httpx.RemoteProtocolError:
        return await client.send(request, stream=True)


def _error_message(text: str) -> str:
    """The server's own error message from an error body (llama.cpp: ``error.message``)."""
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:_ERROR_BODY_CHARS]
    return text.strip()[:_ERROR_BODY_CHARS]


class _Answer:
    """A streamed chat completion put back together as one non-streamed response."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.top: dict[str, Any] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        error = chunk.get("error")
        if error:  # llama.cpp reports a failure after the headers as an error event
            code = error.get("code") if isinstance(error, dict) else None
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
            raise EndpointHTTPError(status, _error_message(json.dumps(chunk)))
        for key in ("id", "model", "usage", "timings", "system_fingerprint"):
            if chunk.get(key):
                self.top[key] = chunk[key]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.content.append(delta["content"])
            if delta.get("reasoning_content"):
                self.reasoning.append(delta["reasoning_content"])
            for part in delta.get("tool_calls") or []:
                self._add_tool_call(part)
            self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def _add_tool_call(self, part: dict[str, Any]) -> None:
        call = self.tool_calls.setdefault(
            int(part.get("index") or 0),
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        call["id"] = part.get("id") or call["id"]
        function = part.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""

    def message(self, model: Any) -> BaseMessage:
        """The answer as ``ChatOpenAI`` returns it (one generation, metadata merged)."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        response = {
            **self.top,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
        }
        result = model._create_chat_result(response)
        generation = result.generations[0]
        answer: BaseMessage = generation.message
        answer.response_metadata = {
            **(result.llm_output or {}),
            **(generation.generation_info or {}),
            **answer.response_metadata,
        }
        if "timings" in self.top:
            answer.response_metadata["timings"] = self.top["timings"]
        if self.reasoning:
            answer.additional_kwargs["reasoning_content"] = "".join(self.reasoning)
        return answer


__all__ = ["DirectCall", "ainvoke_chat", "direct_call", "listened", "request_body"]
