"""The spans of a run, named and described by OpenTelemetry's GenAI semantic conventions.

* ``invoke_agent kitty-orchestrator``: one per run (the orchestrator), started by the
  Python API; the planner's, synthesizer's and summarizer's model calls are its children.
* ``invoke_agent {agent}``: one per task, a child of the run span, from the moment its
  dependencies are done; it links to the spans of the tasks it depended on.
* ``chat {model}``: one per request to one endpoint (a fallback is a failed ``chat`` span
  followed by another), a child of its task's span or of the run span.
* ``execute_tool {tool}``: one per tool call of a task, a child of the task's span.

Attribute names come from ``opentelemetry-semantic-conventions`` where it has them;
kitty's own are under ``kitty.*``. Goal text, prompts, answers, tool arguments and
tool output are never recorded: content capture is opt-in in the conventions, and kitty
does not offer it (LangSmith, through LangChain, records content when that is wanted).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, server_attributes
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

ORCHESTRATOR = "kitty-orchestrator"
"""``gen_ai.agent.name`` of the run span."""

OPERATION_NAME = gen_ai.GEN_AI_OPERATION_NAME
PROVIDER_NAME = gen_ai.GEN_AI_PROVIDER_NAME
AGENT_NAME = gen_ai.GEN_AI_AGENT_NAME
CONVERSATION_ID = gen_ai.GEN_AI_CONVERSATION_ID
REQUEST_MODEL = gen_ai.GEN_AI_REQUEST_MODEL
REQUEST_MAX_TOKENS = gen_ai.GEN_AI_REQUEST_MAX_TOKENS
REQUEST_TEMPERATURE = gen_ai.GEN_AI_REQUEST_TEMPERATURE
RESPONSE_MODEL = gen_ai.GEN_AI_RESPONSE_MODEL
RESPONSE_FINISH_REASONS = gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
INPUT_TOKENS = gen_ai.GEN_AI_USAGE_INPUT_TOKENS
OUTPUT_TOKENS = gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
CACHED_INPUT_TOKENS = gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
TOOL_NAME = gen_ai.GEN_AI_TOOL_NAME
TOOL_CALL_ID = gen_ai.GEN_AI_TOOL_CALL_ID
TOOL_TYPE = gen_ai.GEN_AI_TOOL_TYPE
SERVER_ADDRESS = server_attributes.SERVER_ADDRESS
SERVER_PORT = server_attributes.SERVER_PORT
ERROR_TYPE = error_attributes.ERROR_TYPE

INVOKE_AGENT = gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value
CHAT = gen_ai.GenAiOperationNameValues.CHAT.value
EXECUTE_TOOL = gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value

RUN_ID = "kitty.run_id"
THREAD_ID = "kitty.thread_id"
RESUMED = "kitty.resumed"
TASK_ID = "kitty.task.id"
TASK_STATUS = "kitty.task.status"
TASKS = "kitty.tasks"
TASKS_FAILED = "kitty.tasks.failed"
PHASE = "kitty.phase"
ENDPOINT = "kitty.endpoint"
TIER = "kitty.tier"
SLOT = "kitty.slot"
QUEUED_S = "kitty.queued_s"
FALLBACK = "kitty.fallback"
TOOL_CALLS = "kitty.tool_calls"

# Endpoint kinds of the fleet file -> ``gen_ai.provider.name`` (the conventions have no
# well-known value for local engines; these are the engines' own names).
_PROVIDERS = {"llamacpp": "llama.cpp", "ollama": "ollama", "openai": "openai"}
_DESCRIPTION_CHARS = 300

Attributes = Mapping[str, AttributeValue | None]


def provider_name(kind: str) -> str:
    """``gen_ai.provider.name`` of an endpoint kind (``llamacpp`` -> ``llama.cpp``)."""
    return _PROVIDERS.get(kind, kind)


def _set(span: Span, attributes: Attributes) -> None:
    span.set_attributes({k: v for k, v in attributes.items() if v is not None})


def error_type(exc: BaseException) -> str:
    """``error.type`` of an exception: ``cancelled``, a classified ``status``, or its class.

    An exception that carries a classified ``status`` string (the call layer's
    ``AttemptFailed``: ``slow``, ``down``, ``busy``, ``rejected``) is named by it.
    """
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    status = getattr(exc, "status", None)
    if isinstance(status, str) and status:
        return status
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def record_error(span: Span, kind: str, description: str | None = None) -> None:
    """Mark ``span`` failed: ``error.type`` = ``kind``, status ERROR (``description`` cut short)."""
    span.set_attribute(ERROR_TYPE, kind)
    text = (description or "").strip()[:_DESCRIPTION_CHARS] or None
    span.set_status(Status(StatusCode.ERROR, text))


@contextmanager
def _ended_on_error(span: Span, describe: bool) -> Iterator[Span]:
    try:
        yield span
    except BaseException as exc:
        record_error(span, error_type(exc), str(exc) if describe else None)
        raise


def _current(
    tracer: Tracer,
    name: str,
    attributes: Attributes,
    links: Sequence[SpanContext] = (),
    describe: bool = True,
) -> Iterator[Span]:
    with (
        tracer.start_as_current_span(
            name,
            attributes={k: v for k, v in attributes.items() if v is not None},
            links=[Link(context) for context in links if context.is_valid],
            record_exception=False,  # an exception's text may quote content
            set_status_on_exception=False,
        ) as span,
        _ended_on_error(span, describe),
    ):
        yield span


@contextmanager
def run_span(tracer: Tracer, *, thread_id: str | None, resumed: bool = False) -> Iterator[Span]:
    """The span of one run, *not* made current (see :func:`under_span`).

    The Python API streams a run from an async generator, and a context attached there
    would leak into its consumer between items; the graph's steps run under the span
    instead. An exception (or the consumer closing the stream) fails the span.
    """
    span = tracer.start_span(
        f"{INVOKE_AGENT} {ORCHESTRATOR}",
        attributes={
            OPERATION_NAME: INVOKE_AGENT,
            AGENT_NAME: ORCHESTRATOR,
            **({CONVERSATION_ID: thread_id, THREAD_ID: thread_id} if thread_id else {}),
            RESUMED: resumed,
        },
    )
    try:
        with _ended_on_error(span, describe=False):
            yield span
    finally:
        span.end()


def finish_run_span(
    span: Span,
    *,
    run_id: str,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int,
    tasks: int,
    tasks_failed: int,
) -> None:
    """What a finished run adds to its span: its id, token usage over all calls, tasks."""
    _set(
        span,
        {
            RUN_ID: run_id or None,
            INPUT_TOKENS: input_tokens,
            OUTPUT_TOKENS: output_tokens,
            CACHED_INPUT_TOKENS: cached_input_tokens,
            TASKS: tasks,
            TASKS_FAILED: tasks_failed,
        },
    )


@contextmanager
def task_span(
    tracer: Tracer,
    *,
    agent: str,
    task_id: str,
    run_id: str,
    depends_on: Sequence[SpanContext] = (),
) -> Iterator[Span]:
    """The current span of one agent task, linked to the spans of the tasks it waited for."""
    attributes: Attributes = {
        OPERATION_NAME: INVOKE_AGENT,
        AGENT_NAME: agent,
        TASK_ID: task_id,
        RUN_ID: run_id,
    }
    yield from _current(tracer, f"{INVOKE_AGENT} {agent}", attributes, depends_on)


def finish_task_span(
    span: Span,
    *,
    status: str,
    error: str | None,
    endpoint: str | None,
    tier: str | None,
    slot: int | None,
    provider: str | None,
    model: str | None,
    queued_s: float,
    fallback: bool,
    input_tokens: int,
    output_tokens: int,
    tool_calls: int,
) -> None:
    """What a task's result adds to its span; a task that did not complete fails it."""
    _set(
        span,
        {
            TASK_STATUS: status,
            ENDPOINT: endpoint,
            TIER: tier,
            SLOT: slot,
            PROVIDER_NAME: provider,
            RESPONSE_MODEL: model,
            QUEUED_S: round(queued_s, 6),
            FALLBACK: fallback,
            INPUT_TOKENS: input_tokens,
            OUTPUT_TOKENS: output_tokens,
            TOOL_CALLS: tool_calls,
        },
    )
    if status != "completed":
        record_error(span, status, error)


def _server(base_url: str) -> Attributes:
    parts = urlsplit(base_url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a malformed port: the address alone
        port = None
    return {SERVER_ADDRESS: parts.hostname, SERVER_PORT: port}


@dataclass(frozen=True)
class ChatTarget:
    """Where one model request goes, for its ``chat`` span.

    Attributes:
        model: The model the endpoint is asked for (its fleet-file ``model``).
        provider: ``gen_ai.provider.name`` (see :func:`provider_name`).
        base_url: The endpoint's URL (``server.address`` / ``server.port``).
        endpoint: The endpoint's name in the fleet file.
        tier: Its tier.
        slot: The slot the request holds.
        queued_s: Seconds the call waited for slots so far.
        fallback: The endpoint is not of the call's primary tier.
    """

    model: str
    provider: str
    base_url: str
    endpoint: str
    tier: str
    slot: int | None
    queued_s: float
    fallback: bool


@contextmanager
def chat_span(
    tracer: Tracer,
    target: ChatTarget,
    *,
    max_tokens: int | None,
    temperature: float | None,
    run_id: str | None,
    task_id: str | None,
    phase: str | None,
) -> Iterator[Span]:
    """The current span of one request to one endpoint's model.

    Args:
        tracer: The process's tracer.
        target: The endpoint, slot and model of the request.
        max_tokens: The completion cap, if any.
        temperature: The sampling temperature, if set.
        run_id: The run the call belongs to.
        task_id: The task, for a task's call.
        phase: ``planner``, ``task``, ``synthesizer``, ``summarizer``...
    """
    attributes: Attributes = {
        OPERATION_NAME: CHAT,
        PROVIDER_NAME: target.provider,
        REQUEST_MODEL: target.model,
        REQUEST_MAX_TOKENS: max_tokens,
        REQUEST_TEMPERATURE: temperature,
        **_server(target.base_url),
        ENDPOINT: target.endpoint,
        TIER: target.tier,
        SLOT: target.slot,
        QUEUED_S: round(target.queued_s, 6),
        FALLBACK: target.fallback,
        RUN_ID: run_id,
        TASK_ID: task_id,
        PHASE: phase,
    }
    yield from _current(tracer, f"{CHAT} {target.model}", attributes)


def finish_chat_span(
    span: Span,
    *,
    model: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    cached_input_tokens: int | None,
    finish_reason: str | None,
) -> None:
    """What an answer adds to its ``chat`` span: the model that answered, token usage."""
    _set(
        span,
        {
            RESPONSE_MODEL: model,
            INPUT_TOKENS: input_tokens,
            OUTPUT_TOKENS: output_tokens,
            CACHED_INPUT_TOKENS: cached_input_tokens,
            RESPONSE_FINISH_REASONS: [finish_reason] if finish_reason else None,
        },
    )


@contextmanager
def tool_span(
    tracer: Tracer, *, tool: str, call_id: str | None, task_id: str, run_id: str
) -> Iterator[Span]:
    """The current span of one tool call (no arguments or output on it; no error text)."""
    attributes: Attributes = {
        OPERATION_NAME: EXECUTE_TOOL,
        TOOL_NAME: tool,
        TOOL_CALL_ID: call_id,
        TOOL_TYPE: "function",
        TASK_ID: task_id,
        RUN_ID: run_id,
    }
    yield from _current(tracer, f"{EXECUTE_TOOL} {tool}", attributes, describe=False)


__all__ = [
    "AGENT_NAME",
    "CACHED_INPUT_TOKENS",
    "CHAT",
    "CONVERSATION_ID",
    "ENDPOINT",
    "ERROR_TYPE",
    "EXECUTE_TOOL",
    "FALLBACK",
    "INPUT_TOKENS",
    "INVOKE_AGENT",
    "OPERATION_NAME",
    "ORCHESTRATOR",
    "OUTPUT_TOKENS",
    "PHASE",
    "PROVIDER_NAME",
    "QUEUED_S",
    "REQUEST_MAX_TOKENS",
    "REQUEST_MODEL",
    "REQUEST_TEMPERATURE",
    "RESPONSE_FINISH_REASONS",
    "RESPONSE_MODEL",
    "RESUMED",
    "RUN_ID",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "SLOT",
    "TASKS",
    "TASKS_FAILED",
    "TASK_ID",
    "TASK_STATUS",
    "THREAD_ID",
    "TIER",
    "TOOL_CALLS",
    "TOOL_CALL_ID",
    "TOOL_NAME",
    "TOOL_TYPE",
    "ChatTarget",
    "chat_span",
    "error_type",
    "finish_chat_span",
    "finish_run_span",
    "finish_task_span",
    "provider_name",
    "record_error",
    "run_span",
    "task_span",
    "tool_span",
]
