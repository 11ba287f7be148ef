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
from collections.abc import Awaitable
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langgraph.runtime import Runtime
from langgraph.types import Send

from agents.registry import DEFAULT_AGENTS, AgentSpec
from endpoints.clients import llamacpp as engine
from endpoints.config import EndpointConfig
from endpoints.fleet import FleetRuntime, get_runtime
from graph import prompts
from graph._node_support import context_of, emit, usable_tiers
from graph._state import AgentInput, OrchestratorState
from graph.calls import CallOutcome, MessageBuilder, ModelBuilder, call_model, slot_order_of_run
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
from graph.schemas import Task, TaskResult, TaskStatus, ToolCallRecord
from graph.tools import Offer, ToolRunner, bind_offer, native_support, offered_tools, run_tool_loop
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

    An agent offered tools runs its tool loop (:mod:`graph.tool_loop`). An empty answer
    is asked for once more; twice empty fails the task. ``priority`` is the slot
    priority of its first round (later tool rounds keep the tool loop's own). A task
    given ``images`` runs only on endpoints that can see them; with none it fails
    before any request (:mod:`graph.images._routing`).
    """
    agent = agents[task.agent]
    tiers = usable_tiers(fleet_runtime, agent.tiers())
    max_tokens = task.max_tokens or agent.max_tokens
    observer = observer or TaskObserver(run_id, task, priority)
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
    system = prompts.agent_system(agent.system_prompt, names)

    def messages_for(reserve: str = "") -> MessageBuilder:
        return task_messages(
            task, goal, deps, system, max_tokens, reserve, images=images, seeing=seeing
        )

    def model_for(endpoint: EndpointConfig, cap: int) -> BaseChatModel:
        return fleet_runtime.chat_model(
            endpoint,
            temperature=agent.temperature,
            max_tokens=cap,
            extra=task.extra or None,
            timeout_s=context.task_timeout_s,
        )

    async def call(
        messages: MessageBuilder, build: ModelBuilder, priority: float = 0.0
    ) -> CallOutcome:
        return await call_model(
            fleet_runtime,
            tiers,
            messages,
            build,
            observer=observer,
            config={
                "tags": ["kitty:task", f"task:{task.id}"],
                "metadata": {
                    "kitty_run_id": run_id,
                    "kitty_task_id": task.id,
                    "kitty_agent": task.agent,
                },
            },
            slot_timeout_s=context.slot_timeout_s,
            call_timeout_s=context.task_timeout_s,
            busy_retries=context.busy_retries,
            priority=priority,
        )

    def plain() -> Awaitable[CallOutcome]:
        return call(messages_for(), lambda endpoint: model_for(endpoint, max_tokens), priority)

    records: list[ToolCallRecord] = []
    warnings = [f"tool source unavailable: {p}" for p in offered.problems]
    if offered.tools or task.tool_choice not in ("auto", "none"):
        endpoints = [h.config for h in fleet_runtime.candidates(tiers)]
        native = await native_support(endpoints)

        async def base_messages(endpoint: EndpointConfig, reserve: str) -> list[BaseMessage]:
            return list(await messages_for(reserve)(endpoint))

        async def call_round(
            messages: MessageBuilder, offer: Offer, cap: int, round_priority: float
        ) -> CallOutcome:
            def build(endpoint: EndpointConfig) -> Any:
                model = model_for(endpoint, cap)
                return bind_offer(model, endpoint, offer, native.get(endpoint.name, False))

            # The loop asks 0 for a first round: that round waits with the task's priority.
            return await call(messages, build, round_priority or priority)

        loop = await run_tool_loop(
            task,
            offered.tools,
            problems=offered.problems,
            rounds=context.tool_rounds,
            max_tokens=max_tokens,
            native=native,
            base_messages=base_messages,
            call_round=call_round,
            combine=_combined,
            runner=ToolRunner(run_id, task, context.tool_timeout_s),
        )
        for endpoint in endpoints:
            if native.get(endpoint.name) is False:
                engine.mark_tool_calls_unconstrained(endpoint)
        if loop.outcome is None:
            return _failed(task, loop.error or "no tool loop", tools_offered=names)
        outcome, records, warnings = loop.outcome, loop.records, loop.warnings
    else:
        outcome = await plain()
    if outcome.ok and not outcome.text.strip():
        logger.warning("task %s: empty answer from %s; asking once more", task.id, outcome.endpoint)
        outcome = _combined(outcome, await plain())
        if outcome.ok and not outcome.text.strip():
            outcome.ok, outcome.error = False, _empty_answer_error(outcome, max_tokens)
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
        tool_calls=records,
        tools_offered=names,
        warnings=warnings,
        priority=priority,
        # Only endpoints that can see were sent anything (the others were skipped).
        images_sent=len(images) if any(c.endpoint in seeing for c in outcome.calls) else 0,
    )


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
            failed = [d for d, r in deps.items() if r.status != "completed"]
            if failed and context.skip_failed_dependents:
                return _failed(
                    task,
                    f"skipped: dependency {', '.join(failed)} did not complete",
                    status="skipped",
                    ready_at=ready_at,
                    priority=priority,
                )
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


