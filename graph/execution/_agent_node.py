"""Dispatch and the agent node: every task sent at once, each waiting for its own deps.

Scheduling is dependency-driven: ``dispatch`` sends *every* task in one superstep and
each ``agent`` node waits only for its own dependencies (see
:mod:`graph.execution._completion_registry`), then
for a slot on its endpoint. Agent nodes never raise: an exception in one ``Send`` task
would cancel its running siblings and discard their work, so every error inside the
node becomes a failed :class:`TaskResult`; a cancelled node unpins its run's registry.

An empty answer is asked for once more, then fails the task; an answer cut at the
completion cap completes the task with ``truncated`` set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from langchain_core.messages import BaseMessage
from langgraph.runtime import Runtime
from langgraph.types import Send
from opentelemetry.trace import Span

from agents.registry import DEFAULT_AGENTS, AgentSpec
from endpoints.calls import (
    CallOutcome,
    MessageBuilder,
    ModelRequest,
    ModelSettings,
    call_tiers,
    process_tracing,
)
from endpoints.clients import llamacpp as engine
from endpoints.config import EndpointConfig
from endpoints.fleet import FleetRuntime, get_runtime
from graph import prompts
from graph._node_support import call_limits, context_of, emit, slot_order_of_run, usable_tiers
from graph._state import AgentInput, OrchestratorState
from graph.context import Context
from graph.dag import remaining_critical_path
from graph.events import (
    TaskFinished,
    TaskWaiting,
)
from graph.execution._completion_registry import (
    CompletionRegistry,
    forget,
    persist_result,
    registry_for,
)
from graph.execution._observer import TaskObserver
from graph.execution._task_messages import task_messages
from graph.images import (
    ImageRecord,
    images_for_task,
    needs_images,
    no_vision_error,
    seeing_endpoints,
)
from graph.persistence import current_checkpoint
from graph.schemas import Task, TaskResult, TaskStatus
from graph.tools import (
    LoopResult,
    Offer,
    ToolRunner,
    native_support,
    offered_tools,
    run_tool_loop,
)
from kitty.telemetry import finish_task_span, provider_name, task_span
from kitty.tools import OfferedTools

logger = logging.getLogger("kitty.graph")


def _own_tokens(task: Task) -> float:
    agent = DEFAULT_AGENTS.get(task.agent)
    return float(task.max_tokens or (agent.max_tokens if agent else 0))


def dispatch(state: OrchestratorState) -> list[Send]:
    """Send every task at once; each waits for its own dependencies inside ``agent``.

    Each carries its slot priority: the tokens on its remaining critical path, and a
    task that needs the run's images the hashes of them (the images stay in the state).
    """
    plan = state["plan"]
    assert plan is not None
    ids = [t.id for t in plan.tasks]
    priorities = remaining_critical_path(plan.tasks, _own_tokens)
    hashes = list(state.get("attachments") or {})
    started_at = state.get("timings", {}).get("started_at", time.time())
    sends: list[Send] = []
    for task in plan.tasks:
        payload = AgentInput(
            run_id=state["run_id"],
            goal=state.get("goal", ""),
            task=task,
            plan_ids=ids,
            extra={"started_at": started_at},
            priority=priorities[task.id],
        )
        if hashes and needs_images(task):
            payload["images"] = hashes
        sends.append(Send("agent", payload))
    if slot_order_of_run() == "priority":
        # Tasks are prepared one after another: the longest remaining path goes first, so
        # the head of a long chain reaches the slots before short tasks listed ahead of it.
        sends.sort(key=lambda send: -send.arg["priority"])
    return sends


def _combined(first: CallOutcome, then: CallOutcome) -> CallOutcome:
    """One outcome for two calls of a task (an empty answer asked again)."""
    then.attempts = first.attempts + then.attempts
    then.calls = first.calls + then.calls
    for name in ("prepare_s", "queued_s", "latency_s", "prompt_tokens", "completion_tokens"):
        setattr(then, name, getattr(first, name) + getattr(then, name))
    then.started_at = first.started_at or then.started_at
    return then


def _empty_answer_error(outcome: CallOutcome, max_tokens: int) -> str:
    """What to tell the user when a task's model answered with nothing, twice."""
    spent = (
        f" after {outcome.completion_tokens} completion tokens" if outcome.completion_tokens else ""
    )
    if outcome.reasoning:
        return (
            f"{outcome.endpoint}: the model returned nothing but reasoning, twice{spent}: it "
            f"spent its whole {max_tokens}-token cap thinking; raise max_tokens for this task "
            "or agent, or lower the thinking level"
        )
    return (
        f"{outcome.endpoint}: the model returned nothing, twice{spent}; raise max_tokens for "
        "this task or agent, or try another model on this tier"
    )


@dataclass
class _TaskCall:
    """How one task calls its agent's model: the prompt per endpoint, the request, the hooks.

    Attributes:
        fleet_runtime: The fleet the call runs on.
        request: The task's plain call (its first round's priority, its agent's cap).
        observer: The task's progress hooks.
        prompt: ``reserve -> builder`` of the task's messages per endpoint, leaving room
            for ``reserve`` (tool schemas and earlier rounds).
    """

    fleet_runtime: FleetRuntime
    request: ModelRequest
    observer: TaskObserver
    prompt: Callable[[str], MessageBuilder]

    async def plain(self) -> CallOutcome:
        """One call without tools."""
        return await call_tiers(
            self.fleet_runtime, self.request, self.prompt(""), observer=self.observer
        )

    async def base_messages(self, endpoint: EndpointConfig, reserve: str) -> list[BaseMessage]:
        """The task's prompt for ``endpoint``, its budget leaving room for ``reserve``."""
        return list(await self.prompt(reserve)(endpoint))

    async def round(
        self,
        native: dict[str, bool],
        messages: MessageBuilder,
        offer: Offer,
        cap: int,
        priority: float,
    ) -> CallOutcome:
        """One tool-loop round: ``offer`` bound, its own cap and slot priority."""
        request = replace(
            self.request,
            model=replace(self.request.model, max_tokens=cap),
            tools=offer.binding(native),
            # The loop asks 0 for a first round: that round waits with the task's priority.
            priority=priority or self.request.priority,
        )
        return await call_tiers(self.fleet_runtime, request, messages, observer=self.observer)


def _task_request(
    task: Task,
    agent: AgentSpec,
    tiers: list[str],
    context: Context,
    run_id: str,
    priority: float,
) -> ModelRequest:
    """The request of a task's plain call: its agent's settings, the run's limits."""
    return ModelRequest(
        tiers=tiers,
        model=ModelSettings(
            temperature=agent.temperature,
            max_tokens=task.max_tokens or agent.max_tokens,
            extra=task.extra or None,
            timeout_s=context.task_timeout_s,
        ),
        limits=call_limits(context),
        priority=priority,
        run_id=run_id,
        slot_order=context.slot_order,
        tags=["kitty:task", f"task:{task.id}"],
        metadata={"kitty_task_id": task.id, "kitty_agent": task.agent},
    )


async def _answer_with_tools(
    task: Task, offered: OfferedTools, call: _TaskCall, context: Context, run_id: str
) -> LoopResult:
    """The task's tool loop, each round one call.

    Endpoints found not to constrain tool calls are remembered as such.
    """
    endpoints = [h.config for h in call.fleet_runtime.candidates(list(call.request.tiers))]
    native = await native_support(endpoints)
    loop = await run_tool_loop(
        task,
        offered.tools,
        problems=offered.problems,
        rounds=context.tool_rounds,
        max_tokens=call.request.model.max_tokens or 0,
        native=native,
        base_messages=call.base_messages,
        call_round=partial(call.round, native),
        combine=_combined,
        runner=ToolRunner(run_id, task, context.tool_timeout_s, process_tracing().tracer()),
    )
    for endpoint in endpoints:
        if native.get(endpoint.name) is False:
            engine.mark_tool_calls_unconstrained(endpoint)
    return loop


async def _asked_again_if_empty(task: Task, call: _TaskCall, outcome: CallOutcome) -> CallOutcome:
    """An empty answer asked for once more; twice empty fails."""
    if not (outcome.ok and not outcome.text.strip()):
        return outcome
    logger.warning("task %s: empty answer from %s; asking once more", task.id, outcome.endpoint)
    outcome = _combined(outcome, await call.plain())
    if outcome.ok and not outcome.text.strip():
        max_tokens = call.request.model.max_tokens or 0
        outcome.ok, outcome.error = False, _empty_answer_error(outcome, max_tokens)
    return outcome


def _task_result(
    task: Task,
    outcome: CallOutcome,
    answer: LoopResult,
    tools_offered: list[str],
    priority: float,
    images: list[ImageRecord],
    seeing: set[str],
) -> TaskResult:
    """The task's result from its calls' combined outcome."""
    return TaskResult(
        task_id=task.id,
        status="completed" if outcome.ok else "failed",
        output=outcome.text if outcome.ok else "",
        error=outcome.error,
        agent=task.agent,
        endpoint=outcome.endpoint,
        slot=outcome.slot,
        model=outcome.model,
        fallback_used=outcome.fallback_used,
        attempts=outcome.attempts,
        calls=outcome.calls,
        prepare_s=outcome.prepare_s,
        queued_s=outcome.queued_s,
        latency_s=outcome.latency_s,
        started_at=outcome.started_at,
        finished_at=outcome.finished_at,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        reasoning=outcome.reasoning,
        truncated=outcome.ok and outcome.truncated,
        tool_calls=answer.records,
        tools_offered=tools_offered,
        warnings=answer.warnings,
        priority=priority,
        # Only endpoints that can see were sent anything (the others were skipped).
        images_sent=len(images) if any(c.endpoint in seeing for c in outcome.calls) else 0,
    )


async def run_task(
    task: Task,
    goal: str,
    deps: dict[str, TaskResult],
    context: Context,
    fleet_runtime: FleetRuntime,
    run_id: str,
    agents: dict[str, AgentSpec] = DEFAULT_AGENTS,
    *,
    observer: TaskObserver | None = None,
    priority: float = 0.0,
    images: list[ImageRecord] | None = None,
) -> TaskResult:
    """Build the task's messages (per endpoint tried) and call its agent's model.

    An agent offered tools runs its tool loop (:mod:`graph.tools._tool_loop`). An empty
    answer is asked for once more; twice empty fails the task. ``priority`` is the slot
    priority of its first round (later tool rounds keep the tool loop's own). A task
    given ``images`` runs only on endpoints that can see them; with none it fails
    before any request (:mod:`graph.images._routing`).
    """
    agent = agents[task.agent]
    tiers = usable_tiers(fleet_runtime, agent.tiers())
    images = images or []
    seeing: set[str] = set()
    if images:
        chain = [h.config for h in fleet_runtime.candidates(tiers)]
        seeing = await seeing_endpoints(chain)
        if not seeing:
            return _failed(task, await no_vision_error(chain, len(images)), priority=priority)
    offered = OfferedTools()
    if task.tool_choice != "none":
        offered = await offered_tools(agent, context, fleet_runtime.fleet)
    names = sorted(offered.tools)
    request = _task_request(task, agent, tiers, context, run_id, priority)
    prompt = partial(
        task_messages,
        task,
        goal,
        deps,
        prompts.agent_system(agent.system_prompt, names),
        request.model.max_tokens or 0,
        images=images,
        seeing=seeing,
    )
    call = _TaskCall(
        fleet_runtime, request, observer or TaskObserver(run_id, task, priority), prompt
    )
    if offered.tools or task.tool_choice not in ("auto", "none"):
        answer = await _answer_with_tools(task, offered, call, context, run_id)
    else:
        warnings = [f"tool source unavailable: {p}" for p in offered.problems]
        answer = LoopResult(await call.plain(), warnings=warnings)
    if answer.outcome is None:
        return _failed(task, answer.error or "no tool loop", tools_offered=names)
    outcome = await _asked_again_if_empty(task, call, answer.outcome)
    return _task_result(task, outcome, answer, names, priority, images, seeing)


def _failed(task: Task, error: str, status: TaskStatus = "failed", **extra: Any) -> TaskResult:
    return TaskResult(
        task_id=task.id,
        status=status,
        error=error,
        agent=task.agent,
        finished_at=time.time(),
        **extra,
    )


def _crashed(task: Task, exc: Exception) -> TaskResult:
    logger.error("task %s crashed", task.id, exc_info=exc)
    return _failed(task, f"internal error: {type(exc).__name__}: {exc}")


async def agent(state: AgentInput, runtime: Runtime[Context]) -> dict[str, Any]:
    """Run one task: wait for its dependencies, then a slot, then its model. Never raises.

    ``state`` is the task's ``Send`` payload (LangGraph names a node's input ``state``).
    Every exception becomes a failed result that is returned (and handed to the task's
    dependents); cancellation at any point stops keeping the run's registry alive.
    """
    try:
        return await _agent(state, runtime)
    except asyncio.CancelledError:
        forget(state["run_id"])
        raise


async def _agent(payload: AgentInput, runtime: Runtime[Context]) -> dict[str, Any]:
    task, run_id = payload["task"], payload["run_id"]
    registry: CompletionRegistry | None = None
    try:
        context = context_of(runtime)
        checkpoint = current_checkpoint()
        registry = await registry_for(run_id, checkpoint, payload["plan_ids"])
        result = registry.get(task.id)  # finished before an interruption: never run again
        if result is None:
            try:
                result = await _run_agent(payload, context, registry)
            except Exception as exc:  # a bug or a setup error must not take the run down
                result = _crashed(task, exc)
            await persist_result(checkpoint, result)  # durable before any dependent may start
    except Exception as exc:  # the registry or the checkpoint store failed
        result = _crashed(task, exc)
        registry = registry or await _registry_after_error(payload)
    if registry is not None:
        registry.complete(result)
    try:
        emit(TaskFinished(run_id=run_id, result=result))
    except Exception:  # a broken progress stream must not lose the result
        logger.warning("task %s: could not emit its TaskFinished event", task.id, exc_info=True)
    return {"results": {task.id: result}}


def _finish_span(
    span: Span, result: TaskResult, observer: TaskObserver, fleet_runtime: FleetRuntime
) -> None:
    """What the task's result adds to its span: where it ran, how long it queued, tokens."""
    kinds = {e.name: e.kind for e in fleet_runtime.fleet.all_endpoints()}
    endpoint = result.endpoint or observer.endpoint
    finish_task_span(
        span,
        status=result.status,
        error=result.error,
        endpoint=endpoint,
        tier=observer.tier,
        slot=result.slot,
        provider=provider_name(kinds[endpoint]) if endpoint in kinds else None,
        model=result.model,
        queued_s=result.queued_s,
        fallback=result.fallback_used,
        input_tokens=result.prompt_tokens,
        output_tokens=result.completion_tokens,
        tool_calls=len(result.tool_calls),
    )


async def _registry_after_error(payload: AgentInput) -> CompletionRegistry | None:
    """The run's registry after getting it failed (its seed read), for the dependents.

    The registry exists once its creation started, so asking again usually returns it.
    ``None`` when it still fails: the dependents then fail the same way, none waits.
    """
    try:
        return await registry_for(payload["run_id"], current_checkpoint(), payload["plan_ids"])
    except Exception:
        logger.warning("run %s: no completion registry", payload["run_id"], exc_info=True)
        return None


async def _run_agent(
    payload: AgentInput, context: Context, registry: CompletionRegistry
) -> TaskResult:
    task, run_id = payload["task"], payload["run_id"]
    fleet_runtime = get_runtime(context.fleet)
    priority = payload.get("priority", 0.0)
    observer = TaskObserver(run_id, task, priority)
    deadline = None
    if context.run_deadline_s:
        # From dispatch in this process: time spent waiting for plan approval or before
        # an interruption does not count against a resumed run.
        started = max(payload["extra"].get("started_at", 0.0), registry.created_at)
        deadline = started + context.run_deadline_s
    if task.dependencies:
        emit(
            TaskWaiting(
                run_id=run_id, task_id=task.id, agent=task.agent, waiting_on=list(task.dependencies)
            )
        )
    images, lost = await images_for_task(payload.get("images", []), current_checkpoint())
    if lost:
        return _failed(
            task,
            f"the run's images {', '.join(h[:12] for h in lost)} are no longer stored "
            "(a resumed run without its checkpoint?); start the run again with the images",
            priority=priority,
        )
    remaining = None if deadline is None else max(deadline - time.time(), 0.0)
    ready_at: float | None = None
    try:
        async with asyncio.timeout(remaining):
            deps = await registry.wait_for(task.dependencies)
            ready_at = time.time()
            # The task's span starts when its dependencies are done, linked to theirs; its
            # model calls and tool calls are its children (it is current meanwhile).
            with task_span(
                process_tracing().tracer(),
                agent=task.agent,
                task_id=task.id,
                run_id=run_id,
                depends_on=[registry.spans[d] for d in task.dependencies if d in registry.spans],
            ) as span:
                registry.spans[task.id] = span.get_span_context()
                failed = [d for d, r in deps.items() if r.status != "completed"]
                if failed and context.skip_failed_dependents:
                    result = _failed(
                        task,
                        f"skipped: dependency {', '.join(failed)} did not complete",
                        status="skipped",
                        ready_at=ready_at,
                        priority=priority,
                    )
                else:
                    result = await run_task(
                        task,
                        payload["goal"],
                        deps,
                        context,
                        fleet_runtime,
                        run_id,
                        observer=observer,
                        priority=priority,
                        images=images,
                    )
                _finish_span(span, result, observer, fleet_runtime)
    except TimeoutError:
        return _failed(
            task,
            f"run deadline of {context.run_deadline_s:g}s reached before this "
            "task finished; raise run_deadline_s to give it more time",
            ready_at=ready_at,
            priority=priority,
            **observer.so_far(),
        )
    return result.model_copy(update={"ready_at": ready_at})
