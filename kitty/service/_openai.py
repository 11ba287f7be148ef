"""The OpenAI-compatible door: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Chat front ends (Open WebUI, LibreChat, Continue) and the ``openai`` client libraries
speak OpenAI's Chat Completions API; this door runs their messages as goals:

- The last message (a user's) is the goal; its ``image_url`` parts are the run's images.
  Earlier turns are the run's ``conversation``: the planner and the synthesizer quote them
  as data, cut to a token budget (:func:`graph.budgets.fit_conversation`).
- ``model`` picks a workflow: the service's fleet (:data:`DEFAULT_MODEL_ID`) or one of
  the fleets the operator named with ``--model NAME=FLEET``.
- ``stream: true``: the progress as ``delta.reasoning_content`` lines, the answer as
  ``delta.content`` token by token, then a last chunk with ``finish_reason``, ``usage``
  and ``x_kitty``. ``stream: false``: one ``chat.completion``.

Every run takes the same path as the service's own routes: the same checks
(:func:`kitty.service._routes.query_spec`), admission, observers (``run_events``) and
cancellation when the client leaves. Errors are in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sse_starlette import ServerSentEvent

from endpoints import load_fleet
from graph import (
    MAX_CONVERSATION_TURNS,
    AnswerDelta,
    RunFinished,
    RunResult,
    answer_was_cut,
)
from kitty.errors import UserError
from kitty.service._callers import caller_of
from kitty.service._errors import RequestError
from kitty.service._openai_errors import (
    internal_error_as_openai,
    user_error_as_openai,
)
from kitty.service._openai_progress import progress_line, result_lines
from kitty.service._openai_schemas import (
    REFUSED_OPTIONS,
    REQUEST_FIELDS,
    RUN_OPTION_NAMES,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    FinishReason,
    KittyExtra,
    ModelCard,
    ModelList,
    OpenAIErrorResponse,
    RunOptions,
    TextPart,
    Usage,
)
from kitty.service._routes import _AUTH, Service, _AdmittedStream, admitted_images, query_spec
from kitty.service._runs import _END, RunSpec, _Failed, _produce, run_unless_disconnected
from kitty.service._schemas import QueryRequest
from kitty.service._settings import DEFAULT_MODEL_ID

logger = logging.getLogger("kitty.service")

THREAD_HEADER = "x-kitty-thread-id"
RUN_HEADER = "x-kitty-run-id"

# reasoning_effort, OpenAI's name for it, read as the synthesizer's thinking level.
_EFFORT = {"none": None, "minimal": "low", "low": "low", "medium": "medium", "high": "high"}
# Content parts a run cannot use, and what to do instead.
_TOOLS_REFUSED = (
    "this service does not do function calling: its agents use the fleet's own tools. "
    "Leave out tools, tool_choice, functions and function_call"
)

_OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorResponse, "description": description}
    for status, description in {
        400: "A malformed request, an unknown parameter (named), or an unsupported feature.",
        401: "Missing or wrong bearer token (the service's KITTY_API_TOKEN).",
        404: "Unknown model (see GET /v1/models).",
        409: "The thread_id is already running.",
        413: "Request body (or an image) over the size limit.",
        415: "An image part that is not an image.",
        422: "The goal is too long, or too many images.",
        429: "Too many runs in flight; retry after the Retry-After seconds.",
        503: "The fleet cannot serve the run.",
    }.items()
}

_STREAM_DOC = """With `stream: true`: server-sent `data: {chat.completion.chunk}` lines.

The first chunk carries the role; then the run's progress as `delta.reasoning_content`
lines (plan, tasks started and finished, fallbacks, tool calls); then the answer as
`delta.content`, token by token as the synthesizer writes it; then a last chunk with
`finish_reason` (`stop`, or `length` when the answer stopped at its cap), `usage` and
`x_kitty` (`run_id`, `thread_id`, `voice_summary`, `warnings`, `answer`), and
`data: [DONE]`. With `stream_options.include_usage` the finish chunk comes first and the
usage in a last chunk with empty `choices`, as OpenAI sends it. Closing the connection
cancels the run and frees its slots."""


class OpenAIRequestError(RequestError):
    """A request the door refuses, with OpenAI's ``code`` besides the status and param."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, param, headers)
        self.code = code


@dataclass
class ChatRun:
    """One chat completion, checked and ready to be admitted.

    Attributes:
        spec: The run (through ``run_events``, like every run of the service).
        model: The model id the client asked for (echoed in every answer).
        thread_id: The run's checkpoint thread (the client's, or a new one).
        client_thread: The thread the client named (admission refuses it while it runs).
        include_usage: ``stream_options.include_usage``: usage in a chunk of its own.
        query: The run as a query (its images are loaded once it is admitted).
    """

    spec: RunSpec
    model: str
    thread_id: str
    client_thread: str | None
    include_usage: bool
    query: QueryRequest


def workflows(service: Service) -> dict[str, Service]:
    """The door's models: the service's fleet, then each ``--model NAME=FLEET``.

    The extra fleets are loaded here, when the app is built, so a bad one fails the
    start with the fleet loader's error. They share the service's settings, admission
    and observers.
    """
    table = {DEFAULT_MODEL_ID: service}
    for name, fleet in service.settings.models.items():
        table[name] = Service.build(
            service.settings, load_fleet(fleet), service.admission, service.observers
        )
    return table


def _request_body(raw: Any) -> ChatCompletionRequest:
    """The request, validated; unknown parameters are refused by name.

    Raises:
        OpenAIRequestError: 400 naming the parameter at fault.
    """
    if not isinstance(raw, dict):
        raise OpenAIRequestError(
            400, "the request body must be a JSON object (OpenAI's chat completion request)"
        )
    unknown = sorted(key for key in raw if key not in REQUEST_FIELDS)
    if unknown:
        raise _unknown_parameters(unknown, where="")
    try:
        return ChatCompletionRequest.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(exc, prefix="") from None


def _unknown_parameters(names: list[str], *, where: str) -> OpenAIRequestError:
    refused = [name for name in names if name in REFUSED_OPTIONS]
    if refused:
        name = refused[0]
        return OpenAIRequestError(
            400,
            f"parameter {f'{where}{name}'!r} is not available here: {REFUSED_OPTIONS[name]}",
            f"{where}{name}",
            code="unsupported_parameter",
        )
    listed = ", ".join(repr(f"{where}{name}") for name in names)
    allowed = ", ".join(sorted(RUN_OPTION_NAMES))
    return OpenAIRequestError(
        400,
        f"unknown parameter{'s' if len(names) > 1 else ''} {listed}; remove "
        f"{'them' if len(names) > 1 else 'it'}. Run settings allowed in metadata or as "
        f"top-level keys: {allowed}",
        f"{where}{names[0]}",
        code="unknown_parameter",
    )


# Segments pydantic puts in an error's location for a branch of a union, not a field.
_TYPE_SEGMENTS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _invalid(exc: ValidationError, *, prefix: str) -> OpenAIRequestError:
    errors = exc.errors()
    # A content part of an unknown type fails both branches of "string or parts": the
    # parts branch says what is wrong.
    first = next((e for e in errors if e.get("type") == "union_tag_invalid"), errors[0])
    parts = [
        str(part)
        for part in first.get("loc", ())
        if not (isinstance(part, str) and ("[" in part or part in _TYPE_SEGMENTS))
    ]
    param = prefix + ".".join(parts)
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "union_tag_invalid":
        message += " (content parts may be text or image_url)"
    return OpenAIRequestError(
        400, f"parameter {param!r}: {message}", param or None, code="invalid_value"
    )


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    """Refuse what the door cannot honour, by name, instead of ignoring it silently."""
    refusals: list[tuple[str, str]] = []
    if body.n not in (None, 1):
        refusals.append(("n", "only one choice per request (n=1): a run makes one answer"))
    if body.tools or body.functions or body.function_call not in (None, "none"):
        refusals.append(("tools" if body.tools else "functions", _TOOLS_REFUSED))
    if body.tool_choice not in (None, "none", "auto"):
        refusals.append(("tool_choice", _TOOLS_REFUSED))
    if body.logprobs:
        refusals.append(("logprobs", "log probabilities are not available for a run"))
    if body.modalities not in (None, ["text"]) or body.audio is not None:
        refusals.append(("modalities", "only text answers are made (modalities ['text'])"))
    if body.response_format not in (None, {"type": "text"}):
        refusals.append(("response_format", "only text answers are made ({'type': 'text'})"))
    if body.prediction is not None:
        refusals.append(("prediction", "predicted outputs are not supported"))
    if refusals:
        param, reason = refusals[0]
        raise OpenAIRequestError(
            400, f"parameter {param!r}: {reason}", param, code="unsupported_parameter"
        )


def _run_options(body: ChatCompletionRequest, raw: dict[str, Any]) -> RunOptions:
    """The run settings: ``metadata`` first, top-level keys over them.

    Raises:
        OpenAIRequestError: 400 for an unknown setting (named) or a bad value.
    """
    metadata = body.metadata or {}
    unknown = sorted(key for key in metadata if key not in RUN_OPTION_NAMES)
    if unknown:
        raise _unknown_parameters(unknown, where="metadata.")
    top = {key: raw[key] for key in RUN_OPTION_NAMES if raw.get(key) is not None}
    try:
        RunOptions.model_validate(metadata)  # each source names its own bad values
        return RunOptions.model_validate({**metadata, **top})
    except ValidationError as exc:
        bad = str(exc.errors()[0].get("loc", ("",))[0])
        raise _invalid(exc, prefix="" if bad in top else "metadata.") from None


def _messages(messages: list[ChatMessage]) -> tuple[str, list[str], list[dict[str, str]]]:
    """The goal, its images and the earlier conversation.

    Raises:
        OpenAIRequestError: 400 when the last message is not a user's with text, or a
            message is a tool call or a tool result.
    """
    for index, message in enumerate(messages):
        if message.role in ("tool", "function") or message.tool_calls or message.function_call:
            raise OpenAIRequestError(
                400,
                f"message {index} is a tool call or a tool result; {_TOOLS_REFUSED}",
                f"messages.{index}",
                code="unsupported_parameter",
            )
    last = messages[-1]
    where = f"messages.{len(messages) - 1}"
    if last.role != "user":
        raise OpenAIRequestError(
            400,
            f"the last message is a {last.role!r} message; end with the user's message: "
            "it is the goal the service runs",
            where,
            code="invalid_value",
        )
    goal = last.text().strip() if isinstance(last.content, str) else _text_parts(last)
    if not goal:
        raise OpenAIRequestError(
            400, "the last user message has no text; say what you want done", where
        )
    conversation = [
        {"role": "system" if m.role in ("system", "developer") else m.role, "content": text}
        for m in messages[:-1]
        if (text := m.text().strip())
    ]
    return goal, last.image_urls(), conversation[-MAX_CONVERSATION_TURNS:]


def _text_parts(message: ChatMessage) -> str:
    """The text parts of a message (its images are the run's images, not text)."""
    parts = message.content if isinstance(message.content, list) else []
    return "\n".join(p.text for p in parts if isinstance(p, TextPart)).strip()


def _as_openai(exc: RequestError) -> OpenAIRequestError:
    """A check of the service's own routes, told in the door's terms (params, codes)."""
    field = exc.field or ""
    message = exc.message.replace("field 'query'", "the last user message (the goal)")
    if field == "query":
        return OpenAIRequestError(
            exc.status, message, "messages", code="context_length_exceeded", headers=exc.headers
        )
    if field.startswith("images"):
        return OpenAIRequestError(
            exc.status, message, "messages", code="invalid_image", headers=exc.headers
        )
    return OpenAIRequestError(exc.status, message, field or None, headers=exc.headers)


async def _chat_run(
    models: Mapping[str, Service], request: Request, raw: Any
) -> tuple[ChatCompletionRequest, ChatRun, Service]:
    """Check a chat completion request and build its run (before admission).

    Raises:
        OpenAIRequestError: What is wrong with the request, in the door's terms.
    """
    body = _request_body(raw)
    _refuse_unsupported(body)
    options = _run_options(body, raw)
    workflow = models.get(body.model)
    if workflow is None:
        raise OpenAIRequestError(
            404,
            f"model {body.model!r} does not exist here; pick one of "
            f"{', '.join(sorted(models))} (GET /v1/models)",
            "model",
            code="model_not_found",
        )
    goal, images, conversation = _messages(body.messages)
    query = QueryRequest(
        query=goal,
        max_tasks=options.max_tasks or QueryRequest.model_fields["max_tasks"].default,
        voice_mode=bool(options.voice),
        images=images,
        thread_id=options.thread_id,
    )
    try:
        spec = await query_spec(
            workflow, request.app.state.checkpointer, query, caller_of(request), images=False
        )
    except RequestError as exc:
        raise _as_openai(exc) from None
    thread_id = options.thread_id or uuid.uuid4().hex
    settings: dict[str, Any] = {
        "conversation": conversation,
        "thread_id": thread_id,
        "thinking": options.thinking or _thinking(body) or spec.kwargs.get("thinking"),
        "synthesis_max_tokens": body.max_completion_tokens or body.max_tokens,
        "conversation_max_tokens": options.conversation_max_tokens,
        "stream_answer": body.stream,
    }
    spec.kwargs.update({key: value for key, value in settings.items() if value is not None})
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    run = ChatRun(spec, body.model, thread_id, options.thread_id, include_usage, query)
    return body, run, workflow


def _thinking(body: ChatCompletionRequest) -> str | None:
    """The synthesizer's thinking from ``reasoning_effort`` or ``reasoning.effort``."""
    effort = body.reasoning_effort or (body.reasoning.effort if body.reasoning else None)
    return _EFFORT.get(effort or "")


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _extra(result: RunResult, thread_id: str) -> KittyExtra:
    return KittyExtra(
        run_id=result.run_id,
        thread_id=result.thread_id or thread_id,
        voice_summary=result.voice_summary,
        warnings=result.warnings,
        answer=result.answer,
    )


def _finish_reason(result: RunResult) -> FinishReason:
    return "length" if answer_was_cut(result) else "stop"


def completion(result: RunResult, run: ChatRun) -> ChatCompletion:
    """``stream: false``: the run as one ``chat.completion`` (progress told afterwards)."""
    return ChatCompletion(
        id=_completion_id(),
        created=int(time.time()),
        model=run.model,
        choices=[
            Choice(
                message=AssistantMessage(
                    content=result.answer, reasoning_content=result_lines(result)
                ),
                finish_reason=_finish_reason(result),
            )
        ],
        usage=Usage.from_metrics(result.metrics),
        x_kitty=_extra(result, run.thread_id),
    )


def _event(data: str) -> ServerSentEvent:
    """One ``data:`` line, ended by a blank line as OpenAI's are (LF, not sse's CRLF)."""
    return ServerSentEvent(data=data, sep="\n")


@dataclass
class ChunkWriter:
    """Writes the chunks of one streamed completion (same id, time and model in each)."""

    model: str
    id: str = ""
    created: int = 0

    def __post_init__(self) -> None:
        self.id = self.id or _completion_id()
        self.created = self.created or int(time.time())

    def _chunk(self, choices: list[ChunkChoice], **extra: Any) -> ServerSentEvent:
        chunk = ChatCompletionChunk(
            id=self.id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            choices=choices,
            **extra,
        )
        return _event(chunk.to_json())

    def delta(self, delta: Delta, finish_reason: FinishReason | None = None) -> ServerSentEvent:
        """A chunk with one choice adding ``delta``."""
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish_reason, logprobs=None)
        return self._chunk([choice])

    def ending(self, result: RunResult, run: ChatRun) -> list[ServerSentEvent]:
        """The last chunks: the finish reason with usage and ``x_kitty``, then ``[DONE]``.

        With ``include_usage`` the usage comes as OpenAI sends it: a chunk of its own,
        with no choices, after the finish chunk.
        """
        usage, extra = Usage.from_metrics(result.metrics), _extra(result, run.thread_id)
        finish = ChunkChoice(
            index=0, delta=Delta(), finish_reason=_finish_reason(result), logprobs=None
        )
        if run.include_usage:
            chunks = [self._chunk([finish]), self._chunk([], usage=usage, x_kitty=extra)]
        else:
            chunks = [self._chunk([finish], usage=usage, x_kitty=extra)]
        return [*chunks, _event("[DONE]")]


def _failure(error: Exception) -> ServerSentEvent:
    """An error in the middle of a stream, as OpenAI sends one: ``data: {"error": ...}``."""
    if isinstance(error, UserError):
        _status, body, _headers = user_error_as_openai(error)
    else:
        body = internal_error_as_openai(error, "streamed chat completion failed")
    return _event(json.dumps(body))


async def stream_chunks(run: ChatRun, writer: ChunkWriter) -> AsyncGenerator[ServerSentEvent, None]:
    """The chunks of one streamed run: role, progress, answer, ending.

    The answer's pieces are the synthesizer's tokens (``AnswerDelta``). A run whose
    synthesizer sent no piece (a fallback answer, or pieces not streamed) gets its
    final answer in one piece. When pieces were sent but the final answer differs (a
    synthesis call failed over to another endpoint and started again), nothing more is
    sent: text already shown cannot be taken back, and ``x_kitty.answer`` has the final
    answer.

    The run lives in its own task fed through a queue, so a client that leaves (the
    response's task group is cancelled) cancels the run and frees its slots at once.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.create_task(_produce(run.spec, queue))
    answered = False
    try:
        yield writer.delta(Delta(role="assistant", content=""))
        while (item := await queue.get()) is not _END:
            if isinstance(item, _Failed):
                yield _failure(item.error)
                return
            if isinstance(item, AnswerDelta):
                if item.phase == "synthesizing" and item.text:
                    answered = True
                    yield writer.delta(Delta(content=item.text))
            elif isinstance(item, RunFinished):
                if not answered and item.result.answer:
                    yield writer.delta(Delta(content=item.result.answer))
                for chunk in writer.ending(item.result, run):
                    yield chunk
            elif (line := progress_line(item)) is not None:
                yield writer.delta(Delta(reasoning_content=line))
    finally:
        if not task.done():
            task.cancel()
            logger.info("chat completion stream closed before the run ended; run cancelled")


def _run_headers(thread_id: str, run_id: str | None = None) -> dict[str, str]:
    headers = {THREAD_HEADER: thread_id}
    if run_id:
        headers[RUN_HEADER] = run_id
    return headers


async def _answer(models: Mapping[str, Service], request: Request) -> Response:
    try:
        raw = await request.json()
    except ValueError:
        raise OpenAIRequestError(
            400, "the request body is not valid JSON; send OpenAI's chat completion request"
        ) from None
    body, run, workflow = await _chat_run(models, request, raw)
    ticket = await workflow.admission.admit(run.client_thread)
    try:  # fetched and decoded only for an admitted run
        await admitted_images(workflow, run.spec, run.query, ticket)
    except RequestError as exc:
        raise _as_openai(exc) from None
    if body.stream:
        return _AdmittedStream(
            stream_chunks(run, ChunkWriter(run.model)),
            ping=15,
            sep="\n",
            ticket=ticket,
            headers=_run_headers(run.thread_id),
        )
    try:
        result = await run_unless_disconnected(request, run.spec)
    finally:
        await ticket.release()
    if result is None:
        logger.info("client disconnected; chat completion cancelled")
        return Response(status_code=499)
    return JSONResponse(
        completion(result, run).model_dump(mode="json"),
        headers=_run_headers(result.thread_id or run.thread_id, result.run_id),
    )


def _error_response(exc: Exception) -> Response:
    if isinstance(exc, UserError):
        status, body, headers = user_error_as_openai(exc)
        if isinstance(exc, OpenAIRequestError) and exc.code:
            body["error"]["code"] = exc.code
        return JSONResponse(body, status_code=status, headers=headers or None)
    return JSONResponse(internal_error_as_openai(exc, "chat completion failed"), status_code=500)


def openai_routes(service: Service) -> APIRouter:
    """``GET /v1/models`` and ``POST /v1/chat/completions`` over ``service``'s fleets."""
    router = APIRouter(tags=["openai"])
    models = workflows(service)
    created = int(time.time())

    @router.get(
        "/v1/models",
        response_model=ModelList,
        responses={401: _OPENAI_ERRORS[401]},
        dependencies=_AUTH,
        summary="The workflows a chat completion may pick (OpenAI's model list)",
    )
    async def list_models() -> ModelList:
        """The service's fleet (``kitty-orchestrator``) and each ``--model NAME=FLEET``."""
        return ModelList(data=[ModelCard(id=name, created=created) for name in models])

    @router.post(
        "/v1/chat/completions",
        responses={
            200: {
                "description": "A `chat.completion` object; " + _STREAM_DOC,
                "content": {
                    "application/json": {"schema": ChatCompletion.model_json_schema()},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            **_OPENAI_ERRORS,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": ChatCompletionRequest.model_json_schema()}
                },
            }
        },
        dependencies=_AUTH,
        summary="Run the last user message as a goal (OpenAI's Chat Completions API)",
    )
    async def chat_completions(request: Request) -> Response:
        """Run the last user message as a goal on the chosen model's fleet.

        Earlier messages are the conversation the planner and synthesizer see (quoted as
        data, oldest dropped first to fit); ``image_url`` parts of the last message are
        the run's images. Run settings (``max_tasks``, ``thinking``, ``voice``,
        ``thread_id``, ``conversation_max_tokens``) come in ``metadata`` or as top-level
        keys; unknown keys get 400. ``max_tokens`` caps the answer. The answer has the
        run's thread in the ``x-kitty-thread-id`` header and the run's id in
        ``x-kitty-run-id``.
        """
        try:
            return await _answer(models, request)
        except Exception as exc:  # every answer of the door is in OpenAI's shape
            return _error_response(exc)

    return router
