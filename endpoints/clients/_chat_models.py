"""Chat-model factory and error classification for fleet endpoints.

llama.cpp is reached through ``ChatOpenAI`` (its ``/v1`` API), Ollama through
``ChatOllama`` (native API, so ``think`` is a top-level field). Retries are off in the
clients: retry, fallback and cooldown decisions are the orchestrator's.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import httpx
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable

from endpoints.config import EndpointConfig, ThinkingLevel
from endpoints.runtime import RuntimeSlot, process_runtime

PLACEHOLDER_API_KEY = "sk-no-key-required"

ChatRunnable = Runnable[LanguageModelInput, BaseMessage]
"""A chat model, bare or bound (e.g. to a JSON schema): messages in, one message out."""


_CACHE_LIMIT = 512
# llama.cpp's HTTP server (cpp-httplib) closes a keep-alive connection idle for 5 s, as
# long as httpx's default expiry: a request could go out on a connection being closed.
KEEPALIVE_EXPIRY_S = 2.0


class _LoopResources:
    """Chat models and the HTTP clients of one event loop.

    Pooled connections belong to the loop that opened them: a client reused on a later
    loop (a second ``asyncio.run``, a notebook cell) fails with "Event loop is closed".
    Each server gets its own client: httpcore checks every idle connection of a pool on
    each request (a ``poll`` and a ``getpeername`` each), so in one pool shared by the
    whole fleet that check was the largest per-task cost on fast endpoints. The idle
    limit stays well above what one server is ever sent at once (its slots plus probes),
    so connections are reused rather than closed and opened again.
    """

    def __init__(self) -> None:
        self.models: dict[tuple[Any, ...], BaseChatModel] = {}
        self.http: dict[str, httpx.AsyncClient] = {}

    def client(self, server: str = "") -> httpx.AsyncClient:
        http = self.http.get(server)
        if http is None or http.is_closed:
            http = self.http[server] = httpx.AsyncClient(
                limits=httpx.Limits(
                    max_connections=512,
                    max_keepalive_connections=128,
                    keepalive_expiry=KEEPALIVE_EXPIRY_S,
                ),
                timeout=None,
            )
        return http


def loop_http_client(server: str = "") -> httpx.AsyncClient:
    """The running event loop's HTTP client for ``server`` (a base URL; ``""``: shared).

    Raises:
        RuntimeError: No event loop is running.
    """
    resources = _loop_resources()
    if resources is None:
        raise RuntimeError("loop_http_client() needs a running event loop")
    return resources.client(server)


_LOOP_RESOURCES = RuntimeSlot("chat models and HTTP clients of an event loop", _LoopResources)


def _loop_resources() -> _LoopResources | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return process_runtime().for_loop(_LOOP_RESOURCES, loop)


class ChatModelFactory(Protocol):
    """Builds the chat model for one endpoint (:func:`make_chat_model`'s signature)."""

    def __call__(
        self,
        endpoint: EndpointConfig,
        *,
        temperature: float = ...,
        max_tokens: int | None = ...,
        thinking: ThinkingLevel | None = ...,
        extra: dict[str, Any] | None = ...,
        timeout_s: float | None = ...,
    ) -> BaseChatModel:
        """Return a chat model bound to ``endpoint``."""
        ...


def make_chat_model(
    endpoint: EndpointConfig,
    *,
    temperature: float = 0.7,
    max_tokens: int | None = None,
    thinking: ThinkingLevel | None = None,
    extra: dict[str, Any] | None = None,
    timeout_s: float | None = None,
) -> BaseChatModel:
    """Build a LangChain chat model bound to one endpoint.

    Args:
        endpoint: The server to talk to.
        temperature: Sampling temperature.
        max_tokens: Completion token cap.
        thinking: Reasoning effort; sent as Ollama's top-level ``think`` and as
            ``reasoning_effort`` to llama.cpp. ``None`` uses the endpoint's setting.
        extra: Engine parameters merged into the request body (llama.cpp ``ignore_eos``,
            ``top_k``...; Ollama options).
        timeout_s: Request timeout; defaults to the endpoint's ``timeout_s``.

    Returns:
        A ``ChatOpenAI`` (llama.cpp) or ``ChatOllama`` (Ollama) instance. Within an event
        loop, instances are cached per endpoint and settings (building one costs ~0.6 ms)
        and share one HTTP connection pool of that loop.
    """
    resources = _loop_resources()
    if resources is None:
        return _build_chat_model(endpoint, temperature, max_tokens, thinking, extra, timeout_s)
    key = (
        endpoint.model_dump_json(),
        temperature,
        max_tokens,
        thinking,
        json.dumps(extra, sort_keys=True, default=str) if extra else None,
        timeout_s,
    )
    cached = resources.models.get(key)
    if cached is not None:
        return cached
    if len(resources.models) >= _CACHE_LIMIT:
        resources.models.clear()
    model = _build_chat_model(
        endpoint,
        temperature,
        max_tokens,
        thinking,
        extra,
        timeout_s,
        resources.client(endpoint.base_url),
    )
    resources.models[key] = model
    return model


def _build_chat_model(
    endpoint: EndpointConfig,
    temperature: float,
    max_tokens: int | None,
    thinking: ThinkingLevel | None,
    extra: dict[str, Any] | None,
    timeout_s: float | None,
    http_client: httpx.AsyncClient | None = None,
) -> BaseChatModel:
    timeout = timeout_s or endpoint.timeout_s
    thinking = thinking or endpoint.thinking
    if endpoint.kind == "ollama":
        from langchain_ollama import ChatOllama

        unknown = set(extra or {}) - set(ChatOllama.model_fields)
        if unknown:
            raise ValueError(
                f"Ollama endpoint {endpoint.name!r} does not take {sorted(unknown)}; "
                f"use ChatOllama option names (num_predict, top_k, seed...)"
            )
        options = dict(extra or {})
        return ChatOllama(
            base_url=endpoint.base_url,
            model=endpoint.model,
            temperature=temperature,
            num_predict=max_tokens,
            num_ctx=endpoint.ctx,
            reasoning=thinking,
            keep_alive=endpoint.launch.keep_alive,
            client_kwargs={"timeout": timeout},
            **options,
        )
    from langchain_openai import ChatOpenAI

    body = dict(extra or {})
    if thinking and "reasoning_effort" not in body:
        body["reasoning_effort"] = thinking
    return ChatOpenAI(
        base_url=f"{endpoint.base_url}/v1",
        api_key=PLACEHOLDER_API_KEY,
        model=endpoint.model,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        max_retries=0,
        # Streamed: when a run is cancelled the server notices at its next token write
        # and frees the slot. A non-streamed request can keep generating after the client
        # left (the embedded llama.cpp misses the disconnect once it served another request).
        streaming=True,
        stream_usage=True,
        extra_body=body or None,
        http_async_client=http_client,
    )


def _status_code(exc: BaseException) -> int | None:
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def is_busy_error(exc: BaseException) -> bool:
    """True for "server busy, try later" answers (Ollama 503 when its queue is full)."""
    return _status_code(exc) == 503 or "server busy" in str(exc).lower()


def is_endpoint_failure(exc: BaseException) -> bool:
    """True when the endpoint itself failed: connection error, timeout or HTTP 5xx.

    Such failures justify the fallback tier and count towards an endpoint's cooldown;
    4xx answers (bad request, context too long) do not: another server would refuse too.
    """
    import openai

    if isinstance(
        exc,
        openai.APIConnectionError  # includes APITimeoutError
        | openai.InternalServerError
        | httpx.TransportError
        | ConnectionError
        | TimeoutError,
    ):
        return True
    status = _status_code(exc)
    if status is not None:
        return status >= 500
    name = type(exc).__name__
    return name in {"ConnectError", "ReadTimeout", "RemoteProtocolError"}


def constrain_to_json_schema(
    model: BaseChatModel, endpoint: EndpointConfig, schema: dict[str, Any], *, name: str
) -> ChatRunnable:
    """Bind ``model`` so its answer must match ``schema``, in the engine's own form.

    Ollama takes the schema as ``format``. llama.cpp takes OpenAI's nested
    ``response_format`` (``{"type": "json_schema", "json_schema": {"schema": ...}}``) and
    turns it into a grammar; the flat form is silently ignored.
    """
    if endpoint.kind == "ollama":
        return model.bind(format=schema)
    return model.bind(response_format=json_schema_format(schema, name))


def json_schema_format(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """OpenAI's nested ``response_format`` for ``schema`` (the form llama.cpp reads)."""
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}
