"""The synthesizer (merges task results, names failures) and the voice summarizer."""

from __future__ import annotations

import logging
import time
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from endpoints.config import EndpointConfig, ThinkingLevel
from endpoints.pool import FleetRuntime, get_runtime
from graph import prompts
from graph.budget import PROMPT_MARGIN_TOKENS, estimate_tokens, trim_to_tokens
from graph.context import Context
from graph.events import (
    PhaseStarted,
)
from graph.executor import CallOutcome, call_model
from graph.nodes.common import (
    SUMMARY_TIERS,
    SYNTHESIS_TIERS,
    add_usage,
    context_of,
    emit,
    http_client,
    usable_tiers,
)
from graph.schemas import TaskResult
from graph.state import OrchestratorState

logger = logging.getLogger("kitty.graph")


def _results_in_plan_order(state: OrchestratorState) -> list[TaskResult]:
    plan = state.get("plan")
    results = state.get("results") or {}
    return [results[t.id] for t in plan.tasks if t.id in results] if plan else []


async def _phase_call(
    context: Context,
    fleet_runtime: FleetRuntime,
    tiers: list[str],
    messages: list[Any],
    phase: str,
    *,
    temperature: float,
    max_tokens: int,
    thinking: ThinkingLevel | None = None,
) -> CallOutcome:
    """One run-level model call (synthesis or summary) with the run's limits."""

    def build(endpoint: EndpointConfig) -> BaseChatModel:
        return fleet_runtime.chat_model(
            endpoint,
            temperature=temperature,
            max_tokens=max_tokens,
            thinking=thinking,
            timeout_s=context.task_timeout_s,
        )

    return await call_model(
        fleet_runtime,
        tiers,
        messages,
        build,
        config={"tags": [f"kitty:{phase}"]},
        slot_timeout_s=context.slot_timeout_s,
        call_timeout_s=context.task_timeout_s,
        busy_retries=context.busy_retries,
    )


async def synthesizer(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Merge the task results into one answer on the reasoning tier; name failures."""
    context = context_of(runtime)
    fleet_runtime = get_runtime(context.fleet)
    tiers = usable_tiers(fleet_runtime, SYNTHESIS_TIERS)
    primary = fleet_runtime.candidates(tiers)[0]
    emit(PhaseStarted(run_id=state["run_id"], phase="synthesizing", endpoint=primary.name))
    began = time.perf_counter()
    messages, _ = await synthesis_messages(state, context, primary.config)

    outcome = await _phase_call(
        context,
        fleet_runtime,
        tiers,
        messages,
        "synthesizer",
        temperature=0.5,
        max_tokens=context.synthesis_max_tokens,
        thinking=context.thinking,
    )
    if outcome.ok:
        answer = outcome.text
    else:
        answer = fallback_answer(state, outcome.error or "unknown error")
    timings = {**state.get("timings", {}), "synthesis_s": time.perf_counter() - began}
    usage = add_usage(state.get("usage", {}), outcome)
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
            output=await trim_to_tokens(r.output, share, endpoint, http_client()),
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


def route_after_synthesis(state: OrchestratorState, runtime: Runtime[Context]) -> str:
    """Go to the summarizer when voice output is on."""
    return "summarizer" if context_of(runtime).voice else "__end__"


async def summarizer(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Write a 2-3 sentence conversational summary of the answer for TTS."""
    context = context_of(runtime)
    fleet_runtime = get_runtime(context.fleet)
    tiers = usable_tiers(fleet_runtime, SUMMARY_TIERS)
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
    answer = await trim_to_tokens(state.get("answer", ""), budget, primary.config, http_client())
    messages = [
        SystemMessage(prompts.SUMMARY_SYSTEM),
        HumanMessage(prompts.SUMMARY_USER.format(answer=answer)),
    ]

    outcome = await _phase_call(
        context,
        fleet_runtime,
        tiers,
        messages,
        "summarizer",
        temperature=0.4,
        max_tokens=context.summary_max_tokens,
    )
    timings = {**state.get("timings", {}), "summary_s": time.perf_counter() - began}
    warnings = list(state.get("warnings", []))
    if not outcome.ok:
        warnings.append(f"voice summary failed: {outcome.error}")
    return {
        "voice_summary": outcome.text.strip() if outcome.ok else None,
        "timings": timings,
        "usage": add_usage(state.get("usage", {}), outcome),
        "warnings": warnings,
    }
