"""Python API: run a goal and get a :class:`~graph.schemas.RunResult`, or stream progress.

Runs are isolated: each has its own ``run_id`` and completion registry; concurrent runs
in one process share only the endpoint limiters (so slot caps hold across them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command, StreamMode
from opentelemetry.trace import INVALID_SPAN, Span

from endpoints.calls import process_tracing
from endpoints.runtime import RuntimeSlot, process_runtime
from graph._builder import OrchestratorGraph, build_graph
from graph._node_support import prepare_fleet
from graph.context import Context
from graph.events import AnswerDelta, ProgressEvent, RunFinished, parse_event
from graph.images import ImageRecord, ImageSource, load_images
from graph.metrics import compute_metrics
from graph.persistence import shared_memory_checkpointer, with_checkpointer
from graph.planning import (
    PlanApproval,
    PlanApprovalRequired,
    PlanDecision,
    PlanError,
    parse_decision,
    parse_plan,
)
from graph.schemas import Plan, RunResult, TaskResult
from kitty.errors import NothingToResume
from kitty.telemetry import finish_run_span, run_span, under_span

CONTEXT_METADATA_KEY = "kitty_context"

PlanCallback = Callable[[PlanApproval], "PlanDecision | dict[str, Any] | str | Awaitable[Any]"]

_COMPILED_GRAPH = RuntimeSlot("the orchestrator graph, compiled once", build_graph)


def graph_for(checkpointer: BaseCheckpointSaver | None = None) -> OrchestratorGraph:
    """The compiled graph, bound to ``checkpointer`` (compiled once per process, then copied).

    Copies are not cached, so a closed checkpointer is never kept alive or reused.
    """
    base = process_runtime().get(_COMPILED_GRAPH)
    if checkpointer is None:
        return base
    return with_checkpointer(base, checkpointer)


def make_context(*, context: Context | None = None, **settings: Any) -> Context:
    """A validated :class:`Context`: ``context`` (or the defaults) with ``settings`` on top.

    Raises:
        SettingsError: An unknown setting or a bad value; the message names each.
    """
    return Context.build(context, **settings)


def _as_plan(plan: Plan | dict[str, Any] | None) -> Plan | None:
    return None if plan is None else parse_plan(plan)


def build_result(
    values: dict[str, Any], *, goal: str, wall_s: float, thread_id: str | None
) -> RunResult:
    """Turn the graph's final state into a :class:`RunResult`."""
    plan = values.get("plan")
    plan = plan if isinstance(plan, Plan) else Plan.model_validate(plan)
    raw_results = values.get("results") or {}
    results = {
        k: v if isinstance(v, TaskResult) else TaskResult.model_validate(v)
        for k, v in raw_results.items()
    }
    metrics = compute_metrics(
        plan, results, values.get("timings") or {}, values.get("usage") or {}, wall_s
    )
    return RunResult(
        goal=values.get("goal") or goal,
        answer=values.get("answer") or "",
        voice_summary=values.get("voice_summary"),
        plan=plan,
        tasks=[results[t.id] for t in plan.tasks if t.id in results],
        metrics=metrics,
        thread_id=thread_id,
        run_id=values.get("run_id") or "",
        warnings=list(values.get("warnings") or []),
    )


def saved_context(metadata: dict[str, Any] | None) -> Context | None:
    """The settings a run on this thread started with (stored in checkpoint metadata)."""
    raw = (metadata or {}).get(CONTEXT_METADATA_KEY)
    if not isinstance(raw, str):
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    known = set(Context.setting_names())
    try:  # settings saved by another version keep what this one still knows
        return Context.model_validate({k: v for k, v in data.items() if k in known})
    except ValueError:
        return None


def _decision_input(
    decision: PlanDecision | dict[str, Any] | str, *, agents: list[str] | None = None
) -> Command:
    parse_decision(decision, agents=agents)  # bad input fails here, before resuming
    value = decision.model_dump() if isinstance(decision, PlanDecision) else decision
    return Command(resume=value)


async def _ask(on_plan: PlanCallback, approval: PlanApproval) -> Any:
    answer = on_plan(approval)
    return await answer if inspect.isawaitable(answer) else answer


@dataclass
class _Start:
    """Where a call to :func:`astream_goal` begins: a new run, or a thread to continue."""

    compiled: OrchestratorGraph
    config: RunnableConfig
    context: Context
    state_input: Any
    pending: PlanApproval | None
    checkpointer: BaseCheckpointSaver | None
    borrowed_checkpointer: bool
    resuming: bool


async def _resolve_start(
    goal: str | None,
    plan: Plan | dict[str, Any] | None,
    context: Context | None,
    settings: dict[str, Any],
    checkpointer: BaseCheckpointSaver | None,
    thread_id: str | None,
    plan_decision: Any | None,
    images: list[ImageSource | ImageRecord] | None = None,
) -> _Start:
    """Decide between a new run and a continued thread, and the settings it runs with.

    A new run's images are checked and cleaned here, before any work starts (a resumed
    run keeps the images it started with).
    """
    wants_approval = bool(settings.get("approve_plan")) or bool(context and context.approve_plan)
    borrowed = checkpointer is None and (wants_approval or plan_decision is not None)
    if borrowed:
        checkpointer = shared_memory_checkpointer()
    thread_id = thread_id or uuid.uuid4().hex
    compiled = graph_for(checkpointer)
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    pending: PlanApproval | None = None
    resuming = False
    base = context
    if checkpointer is not None:
        snapshot = await compiled.aget_state(config)
        resuming = bool(snapshot.next)
        if resuming:
            base = context or saved_context(dict(snapshot.metadata or {}))
            if snapshot.interrupts:
                pending = PlanApproval.from_interrupt(snapshot.interrupts[0].value, thread_id)
        elif goal is None:
            raise NothingToResume(
                f"thread {thread_id!r} has no unfinished work in this checkpoint store "
                "(it finished, or never ran here); start a new run with a goal"
            )
    elif goal is None:
        raise NothingToResume("continuing a run needs the checkpointer it was saved in")
    if plan_decision is not None and pending is None:
        raise PlanError(
            f"thread {thread_id!r} has no plan waiting for a decision; plan_decision only "
            "answers a run stopped by approve_plan (same thread_id and checkpointer)"
        )
    run_context = Context.build(base, **settings)
    if resuming:  # the planner (which brings the fleet up) already ran before
        await prepare_fleet(run_context)
    config["metadata"] = {CONTEXT_METADATA_KEY: run_context.model_dump_json()}
    state_input: dict[str, Any] | None = None
    if not resuming:
        records = await _run_images(images, run_context)
        state_input = {"goal": goal or "", "plan": _as_plan(plan), "images": records}
    return _Start(
        compiled=compiled,
        config=config,
        context=run_context,
        state_input=state_input,
        pending=pending,
        checkpointer=checkpointer,
        borrowed_checkpointer=borrowed,
        resuming=resuming,
    )


async def _run_images(
    images: list[ImageSource | ImageRecord] | None, context: Context
) -> list[ImageRecord]:
    """The run's images, checked and cleaned (URLs under the fleet's ``[fetch]`` rules)."""
    if not images:
        return []
    from endpoints.fleet import get_runtime

    fetch = get_runtime(context.fleet).fleet.fetch
    return await load_images(images, context.image_limits(), fetch)


async def _next_input(
    start: _Start, on_plan: PlanCallback | None, plan_decision: Any | None
) -> tuple[Any, Any | None] | None:
    """The input that answers a pending plan approval, or ``None`` to stop and ask."""
    assert start.pending is not None
    if plan_decision is not None:
        return _decision_input(plan_decision), None
    if on_plan is not None:
        return _decision_input(await _ask(on_plan, start.pending)), None
    return None


# The nodes whose model tokens become AnswerDelta events, and the phase each writes.
_ANSWER_NODES: dict[str, Literal["synthesizing", "summarizing"]] = {
    "synthesizer": "synthesizing",
    "summarizer": "summarizing",
}


def _answer_delta(chunk: Any, run_id: str) -> AnswerDelta | None:
    """The answer piece in a ``messages`` stream item, if it is one (content only)."""
    if not isinstance(chunk, tuple) or len(chunk) != 2:
        return None
    message, metadata = chunk
    phase = _ANSWER_NODES.get(str((metadata or {}).get("langgraph_node", "")))
    text = getattr(message, "content", None)
    if phase is None or not isinstance(text, str) or not text:
        return None
    return AnswerDelta(run_id=run_id, phase=phase, text=text)


async def _stream_graph(
    start: _Start, stream_answer: bool = False, span: Span = INVALID_SPAN
) -> AsyncGenerator[ProgressEvent | dict[str, Any], None]:
    """One pass of the graph: typed events, then the last full state (a plain dict).

    The graph's steps run under the run's ``span`` (its nodes' spans are its children).

    With ``stream_answer`` LangGraph's ``messages`` stream is on too, and the
    synthesizer's and summarizer's tokens come out as :class:`AnswerDelta` events. It is
    off by default: a listened model call goes through the LangChain SDK instead of the
    direct httpx path (see :mod:`endpoints.clients`), which costs a little per call.
    """
    stream_kwargs: dict[str, Any] = {"durability": "sync"} if start.checkpointer else {}
    values: dict[str, Any] = {}
    modes: list[StreamMode] = ["custom", "values"]
    if stream_answer:
        modes.append("messages")
    # Closed explicitly: a consumer that stops early (cancel, break) must cancel the
    # graph's tasks, and their slots, now rather than when the generator is collected.
    graph_stream = start.compiled.astream(
        start.state_input,
        start.config,
        context=start.context,
        stream_mode=modes,
        **stream_kwargs,
    )
    # typed AsyncIterator by LangGraph; it is an async generator
    graph_items = under_span(span, cast(AsyncGenerator[Any, None], graph_stream))
    async with aclosing(graph_items) as stream:
        async for mode, chunk in stream:
            if mode == "custom" and isinstance(chunk, dict) and "kind" in chunk:
                yield parse_event(chunk)
            elif mode == "values" and isinstance(chunk, dict) and "__interrupt__" not in chunk:
                values = chunk
            elif mode == "messages":
                delta = _answer_delta(chunk, str(values.get("run_id") or ""))
                if delta is not None:
                    yield delta
    yield values


async def astream_goal(
    goal: str | None,
    *,
    context: Context | None = None,
    plan: Plan | dict[str, Any] | None = None,
    checkpointer: BaseCheckpointSaver | None = None,
    thread_id: str | None = None,
    on_plan: PlanCallback | None = None,
    plan_decision: PlanDecision | dict[str, Any] | str | None = None,
    images: list[ImageSource | ImageRecord] | None = None,
    stream_answer: bool = False,
    **settings: Any,
) -> AsyncGenerator[ProgressEvent | PlanApproval, None]:
    """Run a goal, yielding typed progress events and finally :class:`RunFinished`.

    Settings come as one :class:`Context`; keyword settings (``fleet=``, ``max_tasks=``,
    ``voice=``, ``thinking=``...) are sugar that override single fields of it.

    Durable runs: with a ``checkpointer`` every step and every finished task is saved
    under ``thread_id`` (generated when not given; it is on the result). Calling again
    with a thread that has unfinished work (crash, kill, cancel, a plan waiting for
    approval) *continues* it: tasks that finished are not run again, ``goal`` and
    ``plan`` are ignored and the run's saved settings are used (``context=`` replaces
    them; keyword settings override single fields). A thread with no unfinished work
    runs ``goal`` as a new run on that thread.

    Plan approval (``approve_plan=True``): after planning the run stops for a decision
    (``{"action": "approve"}``, ``{"action": "edit", "plan": {...}}`` or
    ``{"action": "reject", "reason": "..."}``). With ``on_plan`` the callback (sync or
    async) gets a :class:`PlanApproval` and returns the decision, and the run goes on.
    Without it, the last event is the :class:`PlanApproval`; call again with the same
    ``thread_id`` and ``checkpointer`` and ``plan_decision=...``. Without a checkpointer
    a process-wide in-memory one is used.

    Args:
        goal: What to do, in plain words (``None`` only to continue a thread).
        context: The run's settings (defaults when not given).
        plan: A ready plan (skips the planner; validated strictly).
        checkpointer: LangGraph checkpointer for durable runs
            (see :func:`graph.make_checkpointer`).
        thread_id: Checkpoint thread: continue it, or name the new run's thread.
        on_plan: Plan approval callback: ``PlanApproval -> decision``.
        plan_decision: The decision for a thread whose plan waits for approval.
        images: Images for the goal: file paths, bytes, ``data:`` or ``http(s)`` URLs
            (fetched under the fleet's ``[fetch]`` host rules) or PIL images. Each is
            checked by content, cleaned of metadata, downscaled and stored once with the
            run; tasks that need them get them on a vision endpoint only (see
            :mod:`graph.images._routing`). Ignored when continuing a thread.
        stream_answer: Also yield :class:`AnswerDelta` events: the answer and the voice
            summary token by token as their models write them.
        **settings: :class:`Context` fields, applied on top of ``context``.

    Yields:
        Progress events; the last one is :class:`RunFinished` with the result, or a
        :class:`PlanApproval` when the plan waits for a decision.

    Raises:
        NothingToResume: ``goal`` is ``None`` and the thread has no unfinished work.
        PlanError: Bad goal, plan or plan decision; the message says what to fix.
        SettingsError: An unknown setting or a bad value.
        ImageError: An image is refused (not an image by content, too large, too many,
            a URL the host rules refuse); the message names it and the fix.
    """
    start = await _resolve_start(
        goal, plan, context, settings, checkpointer, thread_id, plan_decision, images
    )
    started = time.perf_counter()
    values: dict[str, Any] = {}
    thread = start.config["configurable"]["thread_id"]
    # Not made current: a context attached in this generator would leak to its consumer.
    # Ended before the last item is yielded: a consumer that stops there did not cancel.
    with run_span(process_tracing().tracer(), thread_id=thread, resumed=start.resuming) as span:
        while True:
            if start.pending is not None:
                answer = await _next_input(start, on_plan, plan_decision)
                if answer is None:
                    break  # the plan waits for a decision: asked below
                start.state_input, plan_decision = answer
                start.pending = None
            async with aclosing(_stream_graph(start, stream_answer, span)) as items:
                async for item in items:
                    if isinstance(item, dict):
                        values = item or values
                    else:
                        yield item
            if start.checkpointer is None:
                break
            snapshot = await start.compiled.aget_state(start.config)
            if not snapshot.interrupts:
                break
            start.pending = PlanApproval.from_interrupt(snapshot.interrupts[0].value, thread)
        if start.pending is None:
            if not values.get("plan"):
                values = dict((await start.compiled.aget_state(start.config)).values)
            result = build_result(
                values, goal=goal or "", wall_s=time.perf_counter() - started, thread_id=thread
            )
            if start.borrowed_checkpointer and start.checkpointer is not None:
                # the process-wide in-memory store keeps only runs still waiting
                await start.checkpointer.adelete_thread(thread)
            metrics = result.metrics
            finish_run_span(
                span,
                run_id=result.run_id,
                input_tokens=metrics.prompt_tokens,
                output_tokens=metrics.completion_tokens,
                cached_input_tokens=metrics.cached_prompt_tokens,
                tasks=metrics.tasks_total,
                tasks_failed=metrics.tasks_failed,
            )
    if start.pending is not None:
        yield start.pending
        return
    yield RunFinished(run_id=result.run_id, result=result)


async def arun_goal(goal: str | None, **kwargs: Any) -> RunResult:
    """Run a goal to the end and return its result (same arguments as :func:`astream_goal`).

    Task failures never raise: they are in ``result.tasks`` and named in the answer. Bad
    input raises ``ValueError`` subclasses (``PlanError``, ``FleetError``) with a message
    that says what to fix.

    Raises:
        PlanApprovalRequired: ``approve_plan`` is on and neither ``on_plan`` nor
            ``plan_decision`` was given; resume its ``approval.thread_id`` with one.
    """
    return await final_result(astream_goal(goal, **kwargs))


async def final_result(
    events: AsyncGenerator[ProgressEvent | PlanApproval, None],
) -> RunResult:
    """The result at the end of an :func:`astream_goal` stream, read to its end and closed.

    What :func:`arun_goal` returns; for a caller that starts the stream itself (the
    service wraps it to cancel the run when its client leaves).

    Raises:
        PlanApprovalRequired: The stream ended at a plan waiting for a decision.
    """
    result: RunResult | None = None
    async with aclosing(events) as stream:
        async for event in stream:
            if isinstance(event, RunFinished):
                result = event.result
            elif isinstance(event, PlanApproval):
                raise PlanApprovalRequired(event)
    if result is None:  # pragma: no cover - astream_goal always ends with RunFinished
        raise RuntimeError("the run's event stream ended without a result")
    return result


async def aresume(thread_id: str, *, checkpointer: BaseCheckpointSaver, **kwargs: Any) -> RunResult:
    """Continue an interrupted run on ``thread_id``; finished tasks are not run again.

    Args:
        thread_id: The run's thread (``RunResult.thread_id``, printed by the CLI).
        checkpointer: The checkpoint store the run was saved in.
        **kwargs: As for :func:`astream_goal` (``on_plan``, ``plan_decision``,
            ``context``...).

    Raises:
        NothingToResume: The thread has no unfinished work in this store.
    """
    return await arun_goal(None, thread_id=thread_id, checkpointer=checkpointer, **kwargs)


def run_goal(goal: str, **kwargs: Any) -> RunResult:
    """Synchronous :func:`arun_goal`; works where an event loop already runs (Jupyter).

    The async graph runs on a fresh event loop (in a worker thread when this thread
    already has a running loop), so agent tasks waiting on dependencies never hold a
    thread of their own.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun_goal(goal, **kwargs))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, arun_goal(goal, **kwargs)).result()
