"""Graph nodes: planner, dispatch, agent task, synthesizer, summarizer.

Scheduling is dependency-driven: ``dispatch`` sends *every* task in one superstep and
each ``agent`` node waits only for its own dependencies (see :mod:`graph.registry`), then
for a slot on its endpoint. Agent nodes never raise: an exception in one ``Send`` task
would cancel its running siblings and discard their work.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
import time
import uuid
from typing import Any

import httpx
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime
from langgraph.types import Send

from agents.registry import DEFAULT_AGENTS, AgentSpec, validate_agents
from endpoints.config import EndpointConfig, FleetConfig
from endpoints.models import loop_http_client, make_chat_model
from endpoints.pool import EndpointHandle, FleetRuntime, get_runtime
from graph import prompts
from graph.budget import PROMPT_MARGIN_TOKENS, estimate_tokens, trim_to_tokens
from graph.context import Context
from graph.events import (
    PhaseStarted,
    PlanReady,
    TaskFallback,
    TaskFinished,
    TaskQueued,
    TaskStarted,
    TaskWaiting,
    _Event,
)
from graph.executor import CallOutcome, call_model
from graph.plan_validation import PlanError, check_given_plan, fallback_plan, repair_plan
from graph.registry import forget, persist_result, registry_for
from graph.schemas import Plan, Task, TaskResult
from graph.state import AgentInput, OrchestratorState

logger = logging.getLogger("kitty.graph")

PLANNER_TIER = "tools"
SYNTHESIS_TIERS = ["reasoning", "tools"]
SUMMARY_TIERS = ["summary", "tools"]


def _client() -> httpx.AsyncClient:
    """The running loop's shared HTTP client (tokenizer calls)."""
    return loop_http_client()


def emit(event: _Event) -> None:
    """Send a progress event on LangGraph's ``custom`` stream (no-op outside a run)."""
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return
    writer(event.model_dump(mode="json"))


def _context(runtime: Runtime[Context] | None) -> Context:
    context = getattr(runtime, "context", None)
    if isinstance(context, Context):
        return context
    if isinstance(context, dict):
        return Context(**context)
    return Context()


async def prepare_fleet(context: Context) -> FleetRuntime:
    """Load the fleet, start the embedded one if needed, size limiters from the servers."""
    from ops.embedded import ensure_embedded_fleet

    fleet_runtime = get_runtime(context.fleet)
    validate_agents(DEFAULT_AGENTS, fleet_runtime.fleet)
    if fleet_runtime.fleet.embedded:
        await asyncio.to_thread(ensure_embedded_fleet, fleet_runtime.fleet)
    clients = _client_modules(fleet_runtime.fleet)
    if not clients <= sys.modules.keys():
        await asyncio.to_thread(lambda: [importlib.import_module(m) for m in clients])
    await fleet_runtime.discover()
    return fleet_runtime


def _client_modules(fleet: FleetConfig) -> set[str]:
    """Chat client packages the fleet's endpoints need.

    Importing ``langchain_openai`` takes ~2 s; done lazily inside the first agent task it
    would hold the event loop, so every task dispatched beside it would start that late.
    """
    kinds = {e.kind for e in fleet.all_endpoints()}
    return {
        m
        for kind, m in (("llamacpp", "langchain_openai"), ("ollama", "langchain_ollama"))
        if kind in kinds
    }


def _tiers(fleet_runtime: FleetRuntime, tiers: list[str]) -> list[str]:
    known = [t for t in dict.fromkeys(tiers) if t in fleet_runtime.fleet.tiers]
    return known or [next(iter(fleet_runtime.fleet.tiers))]


def plan_json_schema(agent_names: list[str], max_tasks: int) -> dict[str, Any]:
    """JSON schema the planner's output is constrained to (llama.cpp grammar-enforced)."""
    task_id = {"type": "string", "pattern": "^task_[1-9][0-9]?$"}
    return {
        "type": "object",
        "properties": {
            "tasks": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_tasks,
                "items": {
                    "type": "object",
                    "properties": {
                        "id": task_id,
                        "agent": {"type": "string", "enum": agent_names},
                        "description": {"type": "string", "minLength": 8, "maxLength": 160},
                        "dependencies": {
                            "type": "array",
                            "items": task_id,
                            "maxItems": max_tasks,
                        },
                    },
                    "required": ["id", "agent", "description", "dependencies"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["tasks"],
        "additionalProperties": False,
    }


def _planner_model(schema: dict[str, Any], max_tokens: int):
    def build(endpoint: EndpointConfig):
        model = make_chat_model(endpoint, temperature=0.3, max_tokens=max_tokens)
        if endpoint.kind == "ollama":
            return model.bind(format=schema)
        return model.bind(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "plan", "strict": True, "schema": schema},
            }
        )

    return build


def _parse_plan_json(text: str) -> list[Any]:
    data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("tasks")
    if not isinstance(data, list):
        raise ValueError("expected an object with a 'tasks' list")
    return data


async def make_plan(
    goal: str,
    context: Context,
    fleet_runtime: FleetRuntime,
    agents: dict[str, AgentSpec] = DEFAULT_AGENTS,
) -> tuple[Plan, CallOutcome | None]:
    """Ask the tools tier for a plan (schema-constrained), then validate and repair it.

    Returns:
        The plan and the planner call's outcome. When the planner endpoint itself fails,
        the keyword fallback plan is returned with a warning.

    Raises:
        PlanError: The planner answered twice with unusable output.
    """
    names = list(agents)
    schema = plan_json_schema(names, context.max_tasks)
    agent_lines = "\n".join(f"- {a.name}: {a.expertise}" for a in agents.values())
    messages = [
        SystemMessage(prompts.PLANNER_SYSTEM),
        HumanMessage(
            prompts.PLANNER_USER.format(max_tasks=context.max_tasks, goal=goal, agents=agent_lines)
        ),
    ]
    last_error = ""
    outcome: CallOutcome | None = None
    for _attempt in range(2):
        outcome = await call_model(
            fleet_runtime,
            _tiers(fleet_runtime, [PLANNER_TIER, "reasoning"]),
            messages,
            _planner_model(schema, context.planner_max_tokens),
            config={"tags": ["kitty:planner"]},
            slot_timeout_s=context.slot_timeout_s,
            call_timeout_s=context.task_timeout_s,
            busy_retries=context.busy_retries,
        )
        if not outcome.ok:
            plan = fallback_plan(goal, agents=names)
            plan.warnings.insert(
                0, f"planner endpoint failed ({outcome.error}); used the keyword fallback plan"
            )
            return plan, outcome
        try:
            raw = _parse_plan_json(outcome.text)
            return repair_plan(raw, agents=names, goal=goal, max_tasks=context.max_tasks), outcome
        except (ValueError, PlanError) as exc:
            last_error = str(exc)
            logger.warning("planner output unusable (%s); asking again", last_error)
    raise PlanError(
        f"the planner returned unusable output twice ({last_error}); "
        "pass a ready plan or use a stronger model on the tools tier"
    )


async def planner(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Plan the goal (or validate a given plan) and reset per-run state."""
    context = _context(runtime)
    run_id = uuid.uuid4().hex
    started_at = time.time()
    emit(PhaseStarted(run_id=run_id, phase="planning"))
    goal = (state.get("goal") or "").strip()
    given = state.get("plan")
    if not goal and not given:
        raise PlanError("the goal is empty; say what you want done")
    fleet_runtime = await prepare_fleet(context)
    began = time.perf_counter()
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    if given:
        plan = check_given_plan(given, agents=list(DEFAULT_AGENTS))
    else:
        plan, outcome = await make_plan(goal, context, fleet_runtime)
        if outcome is not None:
            usage = {
                "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens,
            }
    planner_s = time.perf_counter() - began
    emit(PlanReady(run_id=run_id, plan=plan, planner_s=planner_s))
    return {
        "run_id": run_id,
        "goal": goal,
        "plan": plan,
        "results": None,
        "answer": "",
        "voice_summary": None,
        "timings": {"started_at": started_at, "planner_s": planner_s},
        "usage": usage,
        "warnings": list(fleet_runtime.warnings) + list(plan.warnings),
    }


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
            output = await trim_to_tokens(result.output, share, endpoint, _client())
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
    tiers = _tiers(fleet_runtime, agent.tiers())
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
        return make_chat_model(
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

    context = _context(runtime)
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
    emit(
        TaskFinished(
            run_id=run_id,
            task_id=task.id,
            agent=task.agent,
            status=result.status,
            endpoint=result.endpoint,
            slot=result.slot,
            fallback=result.fallback_used,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            latency_s=result.latency_s,
            queued_s=result.queued_s,
            error=result.error,
            output=result.output,
        )
    )
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


def _results_in_plan_order(state: OrchestratorState) -> list[TaskResult]:
    plan = state.get("plan")
    results = state.get("results") or {}
    return [results[t.id] for t in plan.tasks if t.id in results] if plan else []


async def synthesizer(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Merge the task results into one answer on the reasoning tier; name failures."""
    context = _context(runtime)
    fleet_runtime = get_runtime(context.fleet)
    tiers = _tiers(fleet_runtime, SYNTHESIS_TIERS)
    primary = fleet_runtime.candidates(tiers)[0]
    emit(PhaseStarted(run_id=state["run_id"], phase="synthesizing", endpoint=primary.name))
    began = time.perf_counter()
    messages, _ = await synthesis_messages(state, context, primary.config)

    def build(endpoint: EndpointConfig):
        return make_chat_model(
            endpoint,
            temperature=0.5,
            max_tokens=context.synthesis_max_tokens,
            thinking=context.thinking,
            timeout_s=context.task_timeout_s,
        )

    outcome = await call_model(
        fleet_runtime,
        tiers,
        messages,
        build,
        config={"tags": ["kitty:synthesizer"]},
        slot_timeout_s=context.slot_timeout_s,
        call_timeout_s=context.task_timeout_s,
        busy_retries=context.busy_retries,
    )
    if outcome.ok:
        answer = outcome.text
    else:
        answer = fallback_answer(state, outcome.error or "unknown error")
    timings = {**state.get("timings", {}), "synthesis_s": time.perf_counter() - began}
    usage = _add_usage(state.get("usage", {}), outcome)
    warnings = list(state.get("warnings", []))
    if not outcome.ok:
        warnings.append(f"synthesis failed: {outcome.error}")
    return {"answer": answer, "timings": timings, "usage": usage, "warnings": warnings}


async def synthesis_messages(
    state: OrchestratorState, context: Context, endpoint: EndpointConfig
) -> tuple[list[Any], list[TaskResult]]:
    """The synthesizer's messages, results trimmed to its context; and the failed tasks."""
    results = _results_in_plan_order(state)
    done = [r for r in results if r.status == "completed"]
    failed = [r for r in results if r.status != "completed"]
    failures = ""
    if failed:
        items = "\n".join(
            prompts.SYNTHESIS_FAILURE_ITEM.format(
                task_id=r.task_id, agent=r.agent, status=r.status.upper(), error=r.error or ""
            )
            for r in failed
        )
        failures = prompts.SYNTHESIS_FAILURES.format(items=items)
    skeleton = prompts.SYNTHESIS_USER.format(
        goal=state.get("goal", ""), results="", failures=failures
    )
    budget = (
        endpoint.ctx
        - context.synthesis_max_tokens
        - estimate_tokens(skeleton)
        - PROMPT_MARGIN_TOKENS
    )
    share = max(budget // max(len(done), 1), 0)
    blocks = [
        prompts.SYNTHESIS_RESULT.format(
            task_id=r.task_id,
            agent=r.agent,
            output=await trim_to_tokens(r.output, share, endpoint, _client()),
        )
        for r in done
    ]
    user = prompts.SYNTHESIS_USER.format(
        goal=state.get("goal", ""),
        results="\n".join(blocks) or "(no task completed)\n",
        failures=failures,
    )
    return [SystemMessage(prompts.SYNTHESIS_SYSTEM), HumanMessage(user)], failed


def fallback_answer(state: OrchestratorState, error: str) -> str:
    """An answer assembled without a model when every synthesis endpoint failed."""
    lines = [f"(Synthesis failed: {error}. The task results follow unmerged.)", ""]
    for result in _results_in_plan_order(state):
        if result.status == "completed":
            lines += [f"## {result.task_id} ({result.agent})", result.output, ""]
        else:
            lines += [f"## {result.task_id} ({result.agent}) {result.status}: {result.error}", ""]
    return "\n".join(lines)


def _add_usage(usage: dict[str, int], outcome: CallOutcome) -> dict[str, int]:
    return {
        "prompt_tokens": usage.get("prompt_tokens", 0) + outcome.prompt_tokens,
        "completion_tokens": usage.get("completion_tokens", 0) + outcome.completion_tokens,
    }


def route_after_synthesis(state: OrchestratorState, runtime: Runtime[Context]) -> str:
    """Go to the summarizer when voice output is on."""
    return "summarizer" if _context(runtime).voice else "__end__"


async def summarizer(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Write a 2-3 sentence conversational summary of the answer for TTS."""
    context = _context(runtime)
    fleet_runtime = get_runtime(context.fleet)
    tiers = _tiers(fleet_runtime, SUMMARY_TIERS)
    primary = fleet_runtime.candidates(tiers)[0]
    emit(PhaseStarted(run_id=state["run_id"], phase="summarizing", endpoint=primary.name))
    began = time.perf_counter()
    skeleton = prompts.SUMMARY_USER.format(answer="")
    budget = (
        primary.config.ctx
        - context.summary_max_tokens
        - estimate_tokens(skeleton)
        - PROMPT_MARGIN_TOKENS
    )
    answer = await trim_to_tokens(state.get("answer", ""), budget, primary.config, _client())
    messages = [
        SystemMessage(prompts.SUMMARY_SYSTEM),
        HumanMessage(prompts.SUMMARY_USER.format(answer=answer)),
    ]

    def build(endpoint: EndpointConfig):
        return make_chat_model(
            endpoint,
            temperature=0.4,
            max_tokens=context.summary_max_tokens,
            timeout_s=context.task_timeout_s,
        )

    outcome = await call_model(
        fleet_runtime,
        tiers,
        messages,
        build,
        config={"tags": ["kitty:summarizer"]},
        slot_timeout_s=context.slot_timeout_s,
        call_timeout_s=context.task_timeout_s,
        busy_retries=context.busy_retries,
    )
    timings = {**state.get("timings", {}), "summary_s": time.perf_counter() - began}
    warnings = list(state.get("warnings", []))
    if not outcome.ok:
        warnings.append(f"voice summary failed: {outcome.error}")
    return {
        "voice_summary": outcome.text.strip() if outcome.ok else None,
        "timings": timings,
        "usage": _add_usage(state.get("usage", {}), outcome),
        "warnings": warnings,
    }
