"""One request, one run: its own ``astream_goal`` run, cancelled when the client leaves.

Nothing here is shared between requests except what the graph shares on purpose (the
endpoint limiters, so slot caps hold across concurrent runs).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from sse_starlette import ServerSentEvent
from starlette.requests import Request

from agents import DEFAULT_AGENTS
from endpoints import FetchSettings
from graph import (
    Context,
    ImageError,
    ImageRecord,
    Plan,
    PlanApproval,
    RunFinished,
    RunResult,
    astream_goal,
    check_given_plan,
    final_result,
    load_images,
)
from kitty.errors import UserError
from kitty.service._errors import (
    RequestError,
    internal_error_body,
    log_internal_error,
    new_error_id,
    user_error_response,
)
from kitty.service._schemas import QueryRequest, QueryResponse

logger = logging.getLogger("kitty.service")

T = TypeVar("T")


class _ClientGone(Exception):
    """The client disconnected; its run was cancelled.

    Control flow between :func:`until_disconnect` and :func:`run_unless_disconnected`,
    never seen outside this module, so it stays out of the public error tree.
    """


RunOutcome = Literal["completed", "interrupted", "failed", "cancelled"]


class RunObserver(Protocol):
    """Sees every run of the service: its start, each event and how it ended.

    Observers (metrics, traces) must be quick and must not raise: they run inline on
    the run's stream.
    """

    def run_started(self, spec: RunSpec) -> None:
        """A run was admitted and starts now."""

    def run_event(self, spec: RunSpec, event: Any) -> None:
        """One item of :func:`graph.astream_goal`: a progress event or a plan approval."""

    def run_ended(self, spec: RunSpec, outcome: RunOutcome) -> None:
        """The run ended, with how.

        ``completed`` (a result), ``interrupted`` (a plan waits for approval), ``failed``
        (an error) or ``cancelled`` (the client left).
        """


@dataclass
class RunSpec:
    """Everything one run needs, built from a request and the service settings.

    Attributes:
        goal: The query (``None``: continue the thread in ``kwargs``).
        plan: The caller's plan, already checked (``None``: the planner plans).
        kwargs: Keyword arguments for :func:`graph.astream_goal`.
        observers: Who sees the run's events (the service's metrics and traces).
    """

    goal: str | None
    plan: Plan | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    observers: tuple[RunObserver, ...] = ()


async def run_events(spec: RunSpec) -> AsyncGenerator[Any, None]:
    """The run's :func:`graph.astream_goal` items, shown to ``spec.observers`` on the way.

    Every run of the service goes through here (plain, streamed, OpenAI-compatible,
    resumed), so the observers see every run exactly once, however it ends.
    """
    for observer in spec.observers:
        observer.run_started(spec)
    outcome: RunOutcome = "failed"
    last: Any = None
    try:
        async with aclosing(astream_goal(spec.goal, **spec.kwargs)) as events:
            async for event in events:
                last = event
                for observer in spec.observers:
                    observer.run_event(spec, event)
                yield event
        outcome = "completed" if isinstance(last, RunFinished) else "interrupted"
    except (asyncio.CancelledError, GeneratorExit):
        # A consumer that stops at a plan approval (final_result raises there) closes us.
        outcome = "interrupted" if isinstance(last, PlanApproval) else "cancelled"
        raise
    finally:
        for observer in spec.observers:
            observer.run_ended(spec, outcome)


def build_run(
    request: QueryRequest,
    *,
    fleet: str,
    max_query_chars: int,
    context_overrides: dict[str, Any],
    checkpointer: Any | None,
    max_task_tokens: int | None = None,
) -> RunSpec:
    """Check what a model cannot be asked to guess and assemble the run's arguments.

    Args:
        request: The request body.
        fleet: The service's fleet (profile name or path).
        max_query_chars: Longest query accepted.
        context_overrides: The service's default run settings.
        checkpointer: The service's checkpointer (``None``: no checkpoints).
        max_task_tokens: Largest ``max_tokens`` a given plan's task may ask for (the
            fleet's largest context); ``None``: not checked.

    Raises:
        RequestError: The query is too long, the plan has more tasks than ``max_tasks``
            or a task asks for more tokens than any endpoint's context holds.
        PlanError: The given plan is not usable (duplicate ids, unknown agent, cycle...).
    """
    if len(request.query) > max_query_chars:
        raise RequestError(
            422,
            f"field 'query' has {len(request.query)} characters; the limit is "
            f"{max_query_chars}. Shorten it or split the work into several queries",
            "query",
        )
    plan = None
    if request.plan is not None:
        if len(request.plan.tasks) > request.max_tasks:
            raise RequestError(
                422,
                f"field 'plan' has {len(request.plan.tasks)} tasks but max_tasks is "
                f"{request.max_tasks}; raise max_tasks (up to 20) or shorten the plan",
                "plan",
            )
        plan = check_given_plan(request.plan, agents=list(DEFAULT_AGENTS))
        if max_task_tokens is not None:
            _check_task_tokens(plan, max_task_tokens)
    kwargs: dict[str, Any] = {
        **context_overrides,
        "plan": plan,
        "max_tasks": request.max_tasks,
        "voice": request.voice_mode,
        "fleet": fleet,
        "checkpointer": checkpointer,
    }
    if request.thread_id is not None:
        if checkpointer is None:
            raise RequestError(
                422,
                "field 'thread_id' needs a service that saves checkpoints; start it with "
                "--checkpoint PATH|URL, or leave thread_id out",
                "thread_id",
            )
        kwargs["thread_id"] = request.thread_id
    return RunSpec(goal=request.query, plan=plan, kwargs=kwargs)


def build_resume(
    thread_id: str, *, fleet: str, context_overrides: dict[str, Any], checkpointer: Any | None
) -> RunSpec:
    """The arguments of a run that continues ``thread_id``'s unfinished work.

    The thread's saved settings are used; the service's ``context_overrides`` and fleet
    override single fields, as for a new run.

    Raises:
        RequestError: 503 when the service saves no checkpoints (nothing to resume from).
    """
    if checkpointer is None:
        raise RequestError(
            503,
            "this service saves no checkpoints, so it has no thread to continue; start it "
            "with --checkpoint PATH|URL",
            "thread_id",
        )
    kwargs: dict[str, Any] = {
        **context_overrides,
        "fleet": fleet,
        "checkpointer": checkpointer,
        "thread_id": thread_id,
    }
    return RunSpec(goal=None, plan=None, kwargs=kwargs)


# The status a refused image gets: too large is 413, not an image 415, the rest 422.
_IMAGE_STATUS = {"size": 413, "type": 415}
_IMAGE_SETTINGS = ("image_max_bytes", "max_images", "image_max_side", "image_max_pixels")


async def load_request_images(
    images: list[str], spec: RunSpec, fetch: FetchSettings
) -> list[ImageRecord]:
    """The request's images, checked and cleaned before the run is admitted.

    Only ``data:`` and ``http(s)`` URLs are taken (never a path on the service's disk);
    the caps are the run's settings (the service's ``context_overrides`` may change them).

    Raises:
        RequestError: 413 for an image over the size cap, 415 for one that is not an
            image by content, 422 for too many images or a URL that is refused.
    """
    if not images:
        return []
    limits = Context.build(
        **{k: spec.kwargs[k] for k in _IMAGE_SETTINGS if k in spec.kwargs}
    ).image_limits()
    try:
        return await load_images(images, limits, fetch, allow_paths=False)
    except ImageError as exc:
        field = "images" if exc.index is None else f"images.{exc.index}"
        raise RequestError(_IMAGE_STATUS.get(exc.problem, 422), str(exc), field) from None


def _check_task_tokens(plan: Plan, limit: int) -> None:
    for index, task in enumerate(plan.tasks):
        if task.max_tokens is not None and task.max_tokens > limit:
            raise RequestError(
                422,
                f"task {task.id!r} asks for max_tokens={task.max_tokens}, more than the "
                f"largest context of the service's fleet ({limit} tokens); lower it to "
                f"{limit} or less (less still leaves room for the prompt)",
                f"plan.tasks.{index}.max_tokens",
            )


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` but cancel it as soon as the client disconnects.

    ``work`` is cancelled at most once and always awaited to its end, even when the
    caller is cancelled meanwhile: a second cancellation would cut short LangGraph's own
    cleanup (cancelling and awaiting the node tasks), so node tasks would go on running,
    holding their endpoint slots, after the run reported itself cancelled.

    Raises:
        _ClientGone: The client went away first (``work`` was cancelled).
    """
    task = asyncio.ensure_future(work)
    stop = _StopOnce(task)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                stop.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        # asyncio.wait, not ``await task``: our own cancellation must not reach the run
        # as a second cancel; it is handled below, once.
        await asyncio.wait({task})
    except asyncio.CancelledError:
        stop.cancel()
        await _settle(task)
        raise
    finally:
        watcher.cancel()
    if task.cancelled() and stop.requested:
        raise _ClientGone
    return task.result()


@dataclass
class _StopOnce:
    """Cancels a run's task once, whoever asks first (the disconnect or our caller)."""

    task: asyncio.Future[Any]
    requested: bool = False

    def cancel(self) -> None:
        if not self.requested and not self.task.done():
            self.requested = True
            self.task.cancel()


# Most seconds a cancelled request waits for its run to finish cleaning up (LangGraph
# cancels and awaits the run's node tasks, which release their slots as they stop).
RUN_STOP_WAIT_S = 10.0


async def _settle(task: asyncio.Future[Any]) -> None:
    """Wait (bounded) for a cancelled run to end, ignoring further cancellations of ours.

    The caller re-raises its own cancellation afterwards, so none is lost.
    """
    deadline = asyncio.get_running_loop().time() + RUN_STOP_WAIT_S
    while not task.done():
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            logger.warning("run still stopping %.0fs after its cancellation", RUN_STOP_WAIT_S)
            return
        try:
            await asyncio.wait({task}, timeout=remaining)
        except asyncio.CancelledError:
            continue


async def run_unless_disconnected(request: Request, spec: RunSpec) -> RunResult | None:
    """Run to the end; ``None`` when the client left first (the run was cancelled)."""
    try:
        return await until_disconnect(request, final_result(run_events(spec)))
    except _ClientGone:
        return None


def _error_event(status: int, body: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(event="error", data=json.dumps({**body, "status": status}))


async def _produce(spec: RunSpec, queue: asyncio.Queue[Any]) -> None:
    try:
        async with aclosing(run_events(spec)) as events:
            async for event in events:
                queue.put_nowait(event)
    except Exception as exc:
        queue.put_nowait(_Failed(exc))
    finally:
        queue.put_nowait(_END)


@dataclass
class _Failed:
    error: Exception


_END = object()


def _failure_event(exc: Exception) -> ServerSentEvent:
    if isinstance(exc, UserError):
        status, body, _headers = user_error_response(exc)
        return _error_event(status, body)
    error_id = new_error_id()
    log_internal_error(error_id, "streamed run failed", exc)
    return _error_event(500, internal_error_body(error_id))


async def stream_events(spec: RunSpec) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events of one run: progress events, then ``result`` (or ``error``).

    Each progress event's SSE name is its ``kind`` (``plan_ready``, ``task_started``...)
    and its data the event as JSON. The stream ends with ``result`` (data: the
    :class:`~kitty.service._schemas.QueryResponse`) or ``error`` (data: an error body with
    ``status``).

    The run lives in its own asyncio task, fed to the stream through a queue, so when
    the client goes away (the response's task group is cancelled) the run is cancelled
    outright and its slots are freed at once.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()
    run = asyncio.create_task(_produce(spec, queue))
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, _Failed):
                yield _failure_event(item.error)
            elif isinstance(item, RunFinished):
                response = QueryResponse.from_result(item.result)
                yield ServerSentEvent(event="result", data=response.model_dump_json())
            elif kind := getattr(item, "kind", None):
                yield ServerSentEvent(event=kind, data=item.model_dump_json())
    finally:
        if not run.done():
            run.cancel()
            logger.info("stream closed before the run ended; run cancelled")
            # Awaited (bounded), so the admission place is given back only once the run's
            # node tasks have stopped and freed their slots (security review finding 7).
            await _settle(run)
