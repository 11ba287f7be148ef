"""Dispatch and the agent node: every task sent at once, each waiting for its own deps.

Scheduling is dependency-driven: ``dispatch`` sends *every* task in one superstep and
each ``agent`` node waits only for its own dependencies (see :mod:`graph.registry`), then
for a slot on its endpoint. Agent nodes never raise: an exception in one ``Send`` task
would cancel its running siblings and discard their work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import Send

from agents.registry import DEFAULT_AGENTS, AgentSpec
from endpoints.config import EndpointConfig
from endpoints.pool import EndpointHandle, FleetRuntime, get_runtime
from graph import prompts
from graph.budget import PROMPT_MARGIN_TOKENS, estimate_tokens, trim_to_tokens
from graph.context import Context
from graph.events import (
    TaskFallback,
    TaskFinished,
    TaskQueued,
    TaskStarted,
    TaskWaiting,
)
from graph.executor import call_model
from graph.nodes.common import (
    context_of,
    emit,
    http_client,
    usable_tiers,
)
from graph.registry import forget, persist_result, registry_for
from graph.schemas import Task, TaskResult
from graph.state import AgentInput, OrchestratorState

logger = logging.getLogger("kitty.graph")


def dispatch(state: OrchestratorState) -> list[Send]:
    """Send every task at once; each waits for its own dependencies inside ``agent``."""
    plan = state["plan"]
    assert plan is not None
    ids = [t.id for t in plan.tasks]
    return [
        Send(
            "agent",
            AgentInput(
                run_id=state["run_id"],
                goal=state.get("goal", ""),
                task=task,
                plan_ids=ids,
                extra={"started_at": state.get("timings", {}).get("started_at", time.time())},
            ),
        )
        for task in plan.tasks
    ]


class _TaskObserver:
    """Turns executor hooks into progress events for one task."""

    def __init__(self, run_id: str, task: Task) -> None:
        self.run_id = run_id
        self.task = task

    def queued(self, handle: EndpointHandle) -> None:
        emit(
            TaskQueued(
                run_id=self.run_id,
                task_id=self.task.id,
                agent=self.task.agent,
                endpoint=handle.name,
                tier=handle.tier,
            )
        )

    def started(self, handle: EndpointHandle, slot: int, fallback: bool) -> None:
        emit(
            TaskStarted(
                run_id=self.run_id,
                task_id=self.task.id,
                agent=self.task.agent,
                endpoint=handle.name,
                tier=handle.tier,
                slot=slot,
                fallback=fallback,
            )
        )

    def fell_back(self, handle: EndpointHandle, error: str, next_handle: EndpointHandle) -> None:
        emit(
            TaskFallback(
                run_id=self.run_id,
                task_id=self.task.id,
                failed_endpoint=handle.name,
                error=error,
                next_endpoint=next_handle.name,
            )
        )


async def _dependency_block(
    task: Task,
    deps: dict[str, TaskResult],
    endpoint: EndpointConfig,
    budget_tokens: int,
) -> str:
    if not deps:
        return ""
    share = max(budget_tokens // len(deps), 0)
    parts = [prompts.DEPENDENCY_HEADER]
    for dep_id in task.dependencies:
        result = deps[dep_id]
        if result.status == "completed":
            output = await trim_to_tokens(result.output, share, endpoint, http_client())
            parts.append(
                prompts.DEPENDENCY_OK.format(task_id=dep_id, agent=result.agent, output=output)
            )
        else:
            parts.append(
                prompts.DEPENDENCY_FAILED.format(
                    task_id=dep_id, agent=result.agent, error=result.error or result.status
                )
            )
    return "".join(parts)


async def run_task(
    task: Task,
    goal: str,
    deps: dict[str, TaskResult],
    context: Context,
    fleet_runtime: FleetRuntime,
    run_id: str,
    agents: dict[str, AgentSpec] = DEFAULT_AGENTS,
) -> TaskResult:
    """Build the task's messages and call its agent's model (with fallback)."""
    agent = agents[task.agent]
    tiers = usable_tiers(fleet_runtime, agent.tiers())
    max_tokens = task.max_tokens or agent.max_tokens
    primary = fleet_runtime.candidates(tiers)[0].config
    head = prompts.TASK_USER.format(
        goal=goal, task_id=task.id, description=task.description, dependencies=""
    )
    budget = (
        primary.ctx
        - max_tokens
        - estimate_tokens(agent.system_prompt + head)
        - PROMPT_MARGIN_TOKENS
    )
    dependency_text = await _dependency_block(task, deps, primary, budget)
    messages = [
        SystemMessage(agent.system_prompt),
        HumanMessage(
            prompts.TASK_USER.format(
                goal=goal,
                task_id=task.id,
                description=task.description,
                dependencies=dependency_text,
            )
        ),
    ]

    def build(endpoint: EndpointConfig):
        return fleet_runtime.chat_model(
            endpoint,
            temperature=agent.temperature,
            max_tokens=max_tokens,
            extra=task.extra or None,
            timeout_s=context.task_timeout_s,
        )

    outcome = await call_model(
        fleet_runtime,
        tiers,
        messages,
        build,
        observer=_TaskObserver(run_id, task),
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
    )
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
        queued_s=outcome.queued_s,
        latency_s=outcome.latency_s,
        started_at=outcome.started_at,
        finished_at=outcome.finished_at,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        reasoning=outcome.reasoning,
    )


def _failed(task: Task, error: str, status: str = "failed", **extra: Any) -> TaskResult:
    now = time.time()
    return TaskResult(
        task_id=task.id,
        status=status,
        error=error,  # type: ignore[arg-type]
        agent=task.agent,
        finished_at=now,
        **extra,
    )


async def agent(payload: AgentInput, runtime: Runtime[Context]) -> dict[str, Any]:
    """Run one task: wait for its dependencies, then a slot, then its model. Never raises."""
    from langgraph.config import get_config

    context = context_of(runtime)
    task, run_id = payload["task"], payload["run_id"]
    config = get_config()
    registry = await registry_for(run_id, config, payload["plan_ids"])
    result = registry.get(task.id)  # finished before an interruption: never run again
    if result is None:
        try:
            result = await _run_agent(payload, context, registry)
        except asyncio.CancelledError:
            forget(run_id)
            raise
        except Exception as exc:  # a bug or a setup error must not take the run down
            logger.exception("task %s crashed", task.id)
            result = _failed(task, f"internal error: {type(exc).__name__}: {exc}")
        await persist_result(config, result)  # durable before any dependent may start
    registry.complete(result)
    emit(TaskFinished(run_id=run_id, result=result))
    return {"results": {task.id: result}}


async def _run_agent(payload: AgentInput, context: Context, registry: Any) -> TaskResult:
    task, run_id = payload["task"], payload["run_id"]
    fleet_runtime = get_runtime(context.fleet)
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
    remaining = None if deadline is None else max(deadline - time.time(), 0.0)
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
                )
            result = await run_task(task, payload["goal"], deps, context, fleet_runtime, run_id)
    except TimeoutError:
        return _failed(
            task,
            f"run deadline of {context.run_deadline_s:g}s reached before this "
            "task finished; raise run_deadline_s to give it more time",
        )
    return result.model_copy(update={"ready_at": ready_at})
