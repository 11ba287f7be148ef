"""A scripted chat model, so graph logic is tested without an HTTP fleet.

Every node gets its chat models from ``FleetRuntime.chat_model``, which calls the
runtime's ``model_factory``. A :class:`FakeChat` is such a factory: install it on the
runtime of a fleet whose servers do not run, script the replies, run the graph, then read
what each call received::

    chat = FakeChat().install(fleet_path)
    chat.script("JSON plan text", phase="planner")
    chat.fail(endpoint="fake-tools")            # httpx.ConnectError: exercises fallback
    result = await arun_goal("goal", fleet=fleet_path)
    chat.calls_for(task="task_2")[0].prompt     # the messages that task was sent

A call is matched by phase (``planner``, ``task``, ``synthesizer``, ``summarizer``: from
the ``kitty:*`` tags the nodes put on their calls), task id and endpoint name. Rules are
tried in the order they were added; each holds replies used one per call, the last one
kept when ``repeat`` is set. Unmatched calls get :meth:`FakeChat.default_reply`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from endpoints.config import EndpointConfig, FleetConfig
from endpoints.fleet import get_runtime

ErrorFactory = Callable[[EndpointConfig], BaseException]

DEFAULT_PLAN = {
    "tasks": [
        {
            "id": "task_1",
            "agent": "researcher",
            "description": "Look up the facts the goal needs.",
            "dependencies": [],
        }
    ]
}


def connect_error(endpoint: EndpointConfig) -> BaseException:
    """What httpx raises when nothing listens on the endpoint's port."""
    request = httpx.Request("POST", f"{endpoint.base_url}/v1/chat/completions")
    return httpx.ConnectError("[Errno 111] Connection refused", request=request)


def http_error(status: int) -> ErrorFactory:
    """An error factory for an HTTP ``status`` answer (4xx: rejected, 5xx: server error)."""

    def make(endpoint: EndpointConfig) -> BaseException:
        request = httpx.Request("POST", f"{endpoint.base_url}/v1/chat/completions")
        response = httpx.Response(status, request=request, text=f"status {status}")
        return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)

    return make


@dataclass(frozen=True)
class Reply:
    """One scripted answer (or failure) of the fake model.

    Attributes:
        text: The answer's content.
        finish_reason: Reported in ``response_metadata`` (``stop``, ``length``...).
        input_tokens: Prompt tokens in ``usage_metadata`` (default: words sent).
        output_tokens: Completion tokens (default: words of ``text``).
        reasoning: ``reasoning_content`` of a thinking model.
        delay_s: Seconds the call takes (an asyncio sleep: calls overlap).
        error: Raised instead of answering, built per call from the endpoint.
        tool_calls: Tool calls of the answer (``{"name": ..., "args": {...}}``).
    """

    text: str = "ok"
    finish_reason: str = "stop"
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning: str | None = None
    delay_s: float = 0.0
    error: ErrorFactory | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ModelBuild:
    """One call of the factory: the endpoint and settings a chat model was built with."""

    endpoint: EndpointConfig
    settings: dict[str, Any]


def _text(message: BaseMessage) -> str:
    return message.content if isinstance(message.content, str) else str(message.content)


@dataclass
class FakeCall:
    """One model call the fake answered: what it was sent and how it went.

    Attributes:
        endpoint: The endpoint of the model that was called.
        settings: The model's build settings (temperature, max_tokens, thinking...).
        messages: The messages it received.
        bound: Keyword arguments bound with ``.bind`` (``response_format``, ``format``).
        tags: Run tags of the call (``kitty:task``, ``task:<id>``...).
        metadata: Run metadata (``kitty_task_id``, ``kitty_run_id``...).
        reply: The scripted reply it got.
        started_at: ``time.perf_counter()`` when the call began.
        finished_at: When it answered or failed (``None`` while running).
    """

    endpoint: EndpointConfig
    settings: dict[str, Any]
    messages: list[BaseMessage]
    bound: dict[str, Any]
    tags: list[str]
    metadata: dict[str, Any]
    reply: Reply = field(default_factory=Reply)
    started_at: float = field(default_factory=time.perf_counter)
    finished_at: float | None = None

    @property
    def phase(self) -> str | None:
        """``planner``, ``task``, ``synthesizer`` or ``summarizer`` (from the tags)."""
        return next((t.split(":", 1)[1] for t in self.tags if t.startswith("kitty:")), None)

    @property
    def task_id(self) -> str | None:
        """The agent task this call belongs to, if any."""
        task_id = self.metadata.get("kitty_task_id")
        return task_id if isinstance(task_id, str) else None

    @property
    def system(self) -> str:
        """Text of the system message."""
        return next((_text(m) for m in self.messages if isinstance(m, SystemMessage)), "")

    @property
    def prompt(self) -> str:
        """Text of the last message (the user prompt)."""
        return _text(self.messages[-1]) if self.messages else ""


@dataclass
class _Rule:
    replies: list[Reply]
    repeat: bool
    phase: str | None
    task: str | None
    endpoint: str | None

    def matches(self, call: FakeCall) -> bool:
        return bool(self.replies) and all(
            wanted is None or wanted == actual
            for wanted, actual in (
                (self.phase, call.phase),
                (self.task, call.task_id),
                (self.endpoint, call.endpoint.name),
            )
        )

    def take(self) -> Reply:
        if self.repeat and len(self.replies) == 1:
            return self.replies[0]
        return self.replies.pop(0)


class FakeChat:
    """A chat-model factory (``make_chat_model``'s signature) with scripted replies.

    Attributes:
        builds: Every model built, in order.
        calls: Every call answered, in the order they started.
        peak_in_flight: Most calls running at once, per endpoint name.
    """

    def __init__(self) -> None:
        self.builds: list[ModelBuild] = []
        self.calls: list[FakeCall] = []
        self.peak_in_flight: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()

    def install(self, fleet: str | PathLike[str] | FleetConfig) -> FakeChat:
        """Make this the model factory of the fleet's process-wide runtime.

        A path and a config loaded from that file share one runtime; a config built in
        memory has a runtime of its own.
        """
        source = fleet if isinstance(fleet, FleetConfig) else str(fleet)
        get_runtime(source).model_factory = self
        return self

    def script(
        self,
        *replies: Reply | str,
        phase: str | None = None,
        task: str | None = None,
        endpoint: str | None = None,
        repeat: bool = False,
    ) -> FakeChat:
        """Answer calls matching every given criterion with ``replies``, one per call.

        Args:
            *replies: Replies in order (a string is ``Reply(text=...)``).
            phase: ``planner``, ``task``, ``synthesizer`` or ``summarizer``.
            task: An agent task id.
            endpoint: An endpoint name.
            repeat: Keep answering with the last reply once the others are used.
        """
        if not replies:
            raise ValueError("script() needs at least one reply")
        scripted = [Reply(text=r) if isinstance(r, str) else r for r in replies]
        with self._lock:
            self._rules.append(_Rule(scripted, repeat, phase, task, endpoint))
        return self

    def fail(
        self,
        *,
        error: ErrorFactory = connect_error,
        times: int | None = None,
        phase: str | None = None,
        task: str | None = None,
        endpoint: str | None = None,
    ) -> FakeChat:
        """Fail matching calls with ``error`` (default: connection refused).

        Args:
            error: Builds the exception from the endpoint called.
            times: Fail this many calls, then leave the rule (``None``: always).
            phase: As for :meth:`script`.
            task: As for :meth:`script`.
            endpoint: As for :meth:`script`.
        """
        failure = Reply(text="", error=error)
        replies = [failure] * (times or 1)
        return self.script(
            *replies, phase=phase, task=task, endpoint=endpoint, repeat=times is None
        )

    def default_reply(self, call: FakeCall) -> Reply:
        """The answer of an unscripted call: a one-task plan, or text naming the call."""
        if call.phase == "planner":
            return Reply(text=json.dumps(DEFAULT_PLAN))
        if call.phase == "task":
            return Reply(text=f"output of {call.task_id}")
        if call.phase == "synthesizer":
            return Reply(text="final answer")
        if call.phase == "summarizer":
            return Reply(text="voice summary")
        return Reply()

    def calls_for(
        self,
        *,
        phase: str | None = None,
        task: str | None = None,
        endpoint: str | None = None,
    ) -> list[FakeCall]:
        """The calls matching every given criterion, in the order they started."""
        return [
            c
            for c in self.calls
            if (phase is None or c.phase == phase)
            and (task is None or c.task_id == task)
            and (endpoint is None or c.endpoint.name == endpoint)
        ]

    def __call__(
        self,
        endpoint: EndpointConfig,
        *,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        thinking: str | None = None,
        extra: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> ScriptedChatModel:
        """Build a fake model for ``endpoint`` (records the settings)."""
        settings = {
            "temperature": temperature,
            "max_tokens": max_tokens,
            "thinking": thinking,
            "extra": extra,
            "timeout_s": timeout_s,
        }
        with self._lock:
            self.builds.append(ModelBuild(endpoint, settings))
        return ScriptedChatModel(chat=self, endpoint=endpoint, settings=settings)

    def _begin(
        self,
        model: ScriptedChatModel,
        messages: list[BaseMessage],
        bound: dict[str, Any],
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    ) -> FakeCall:
        call = FakeCall(
            endpoint=model.endpoint,
            settings=model.settings,
            messages=list(messages),
            bound=bound,
            tags=list(run_manager.tags) if run_manager else [],
            metadata=dict(run_manager.metadata) if run_manager else {},
        )
        name = model.endpoint.name
        with self._lock:
            rule = next((r for r in self._rules if r.matches(call)), None)
            call.reply = rule.take() if rule else self.default_reply(call)
            self.calls.append(call)
            self._in_flight[name] = self._in_flight.get(name, 0) + 1
            self.peak_in_flight[name] = max(self.peak_in_flight.get(name, 0), self._in_flight[name])
        return call

    def _end(self, call: FakeCall) -> None:
        with self._lock:
            call.finished_at = time.perf_counter()
            self._in_flight[call.endpoint.name] -= 1


_IMPLICIT_STREAM_MANAGER: ContextVar[
    CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None
] = ContextVar("kitty_fake_implicit_stream_manager", default=None)


class ScriptedChatModel(BaseChatModel):
    """A chat model whose answers come from its :class:`FakeChat`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chat: FakeChat = Field(exclude=True)
    endpoint: EndpointConfig
    settings: dict[str, Any]

    @property
    def _llm_type(self) -> str:
        return "kitty-fake-chat"

    def _message(self, call: FakeCall) -> AIMessage:
        reply = call.reply
        words_in = sum(len(_text(m).split()) for m in call.messages)
        tokens_in = reply.input_tokens if reply.input_tokens is not None else words_in
        tokens_out = (
            reply.output_tokens if reply.output_tokens is not None else len(reply.text.split())
        )
        return AIMessage(
            content=reply.text,
            tool_calls=[
                {"name": c["name"], "args": c.get("args", {}), "id": f"call_{i}"}
                for i, c in enumerate(reply.tool_calls)
            ],
            additional_kwargs={"reasoning_content": reply.reasoning} if reply.reasoning else {},
            response_metadata={
                "finish_reason": reply.finish_reason,
                "model_name": self.endpoint.model,
            },
            usage_metadata={
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            },
        )

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        """Record the offered tools (by name) and the choice as bound arguments."""
        names = [getattr(t, "name", None) or t["function"]["name"] for t in tools]
        return self.bind(tools=names, **kwargs)

    def _answer(self, call: FakeCall) -> ChatResult:
        if call.reply.error is not None:
            raise call.reply.error(self.endpoint)
        return ChatResult(generations=[ChatGeneration(message=self._message(call))])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self.chat._begin(self, messages, kwargs, run_manager)
        try:
            time.sleep(call.reply.delay_s)
            return self._answer(call)
        finally:
            self.chat._end(call)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self.chat._begin(self, messages, kwargs, run_manager)
        try:
            await asyncio.sleep(call.reply.delay_s)
            return self._answer(call)
        finally:
            self.chat._end(call)

    def _chunks(self, call: FakeCall) -> Iterator[ChatGenerationChunk]:
        """The reply word by word; the last chunk carries usage and finish reason."""
        message = self._answer(call).generations[0].message
        assert isinstance(message, AIMessage)
        if message.tool_calls:
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=message.content,
                    tool_call_chunks=[
                        {
                            "name": c["name"],
                            "args": json.dumps(c["args"]),
                            "id": c["id"],
                            "index": i,
                        }
                        for i, c in enumerate(message.tool_calls)
                    ],
                    response_metadata=message.response_metadata,
                    usage_metadata=message.usage_metadata,
                )
            )
            return
        words = call.reply.text.split(" ")
        for index, word in enumerate(words):
            last = index == len(words) - 1
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=word if last else word + " ",
                    response_metadata=message.response_metadata if last else {},
                    usage_metadata=message.usage_metadata if last else None,
                )
            )

    def _should_stream(
        self,
        *,
        async_api: bool,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> bool:
        # langchain-core streams an ``ainvoke`` for a listener (LangGraph's ``messages``
        # mode) by calling ``_astream`` without the run manager, whose tags say the phase.
        _IMPLICIT_STREAM_MANAGER.set(run_manager)
        return super()._should_stream(async_api=async_api, run_manager=run_manager, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self.chat._begin(
            self, messages, kwargs, run_manager or _IMPLICIT_STREAM_MANAGER.get()
        )
        try:
            await asyncio.sleep(call.reply.delay_s)
            for chunk in self._chunks(call):
                if run_manager is not None:
                    await run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
                yield chunk
        finally:
            self.chat._end(call)


__all__ = [
    "DEFAULT_PLAN",
    "FakeCall",
    "FakeChat",
    "ModelBuild",
    "Reply",
    "ScriptedChatModel",
    "connect_error",
    "http_error",
]
