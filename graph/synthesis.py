"""The synthesizer (merges task results, names failures) and the voice summarizer."""

from __future__ import annotations

import logging
import time
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from endpoints.calls import CallOutcome, MessageBuilder, ModelRequest, ModelSettings, call_tiers
from endpoints.config import EndpointConfig, ThinkingLevel
from endpoints.fleet import FleetRuntime, get_runtime
from graph import prompts
from graph._node_support import (
    add_usage,
    call_limits,
    context_of,
    emit,
    usable_tiers,
)
from graph._state import OrchestratorState
from graph.budgets import (
    fit_conversation,
    room_after,
    safe_token_bound,
    trim_to_tokens,
)
from graph.context import Context
from graph.events import (
    PhaseStarted,
)
from graph.schemas import RunResult, TaskResult

logger = logging.getLogger("kitty.graph")


def _results_in_plan_order(state: OrchestratorState) -> list[TaskResult]:
    plan = state.get("plan")
    results = state.get("results") or {}
    return [results[t.id] for t in plan.tasks if t.id in results] if plan else []


async def _phase_call(
    context: Context,
    fleet_runtime: FleetRuntime,
    tiers: list[str],
    messages: MessageBuilder,
    phase: str,
    *,
    run_id: str,
    temperature: float,
    max_tokens: int,
    thinking: ThinkingLevel | None = None,
) -> CallOutcome:
    """One run-level model call (synthesis or summary) with the run's limits.

    ``messages`` builds the prompt for each endpoint tried (budgets differ); ``run_id``
    counts its slot time to the run (least attained service across runs).
    """
    request = ModelRequest(
        tiers=tiers,
        model=ModelSettings(
            temperature=temperature,
            max_tokens=max_tokens,
            thinking=thinking,
            timeout_s=context.task_timeout_s,
        ),
        limits=call_limits(context),
        run_id=run_id,
        slot_order=context.slot_order,
        tags=[f"kitty:{phase}"],
    )
    return await call_tiers(fleet_runtime, request, messages)


SYNTHESIS_CUT_WARNING = "synthesis answer cut at synthesis_max_tokens"
"""How the warning of an answer cut at its completion cap begins (see :func:`answer_was_cut`)."""


def answer_was_cut(result: RunResult) -> bool:
    """True when the run's answer stopped at ``synthesis_max_tokens`` (it may be incomplete).

    The OpenAI-compatible door reports such an answer with ``finish_reason`` ``length``.
    """
    return any(warning.startswith(SYNTHESIS_CUT_WARNING) for warning in result.warnings)


def truncation_warnings(results: list[TaskResult]) -> list[str]:
    """One warning per task whose answer stopped at its completion cap."""
    return [
        f"task {r.task_id} ({r.agent}): answer cut at its max_tokens cap after "
        f"{r.completion_tokens} tokens and may be incomplete; raise max_tokens for the "
        "task or its agent"
        for r in results
        if r.status == "completed" and r.truncated
    ]


async def synthesizer(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Merge the task results into one answer on the reasoning tier; name failures."""
    context = context_of(runtime)
    fleet_runtime = get_runtime(context.fleet)
    tiers = usable_tiers(fleet_runtime, context.synthesis_tiers)
    primary = fleet_runtime.candidates(tiers)[0]
    emit(PhaseStarted(run_id=state["run_id"], phase="synthesizing", endpoint=primary.name))
    began = time.perf_counter()

    async def messages(endpoint: EndpointConfig) -> list[BaseMessage]:
        return (await synthesis_messages(state, context, endpoint))[0]

    outcome = await _phase_call(
        context,
        fleet_runtime,
        tiers,
        messages,
        "synthesizer",
        run_id=state["run_id"],
        temperature=0.5,
        max_tokens=context.synthesis_max_tokens,
        thinking=context.thinking,
    )
    warnings = list(state.get("warnings", []))
    warnings += truncation_warnings(_results_in_plan_order(state))
    if outcome.ok and not outcome.text.strip():
        outcome.ok = False
        outcome.error = (
            f"{outcome.endpoint}: the model returned nothing; raise synthesis_max_tokens"
            + (" (it spent them reasoning)" if outcome.reasoning else "")
        )
    if outcome.ok:
        answer = outcome.text
        if outcome.truncated:
            warnings.append(
                f"{SYNTHESIS_CUT_WARNING} ({context.synthesis_max_tokens} tokens); raise "
                "synthesis_max_tokens for the whole answer"
            )
    else:
        answer = fallback_answer(state, outcome.error or "unknown error")
        warnings.append(f"synthesis failed: {outcome.error}")
    timings = {**state.get("timings", {}), "synthesis_s": time.perf_counter() - began}
    usage = add_usage(state.get("usage", {}), outcome)
    return {"answer": answer, "timings": timings, "usage": usage, "warnings": warnings}


async def synthesis_messages(
    state: OrchestratorState, context: Context, endpoint: EndpointConfig
) -> tuple[list[BaseMessage], list[TaskResult]]:
    """The synthesizer's messages for ``endpoint`` (results fit its context); failed tasks.

    The run's earlier conversation is quoted after the goal, in at most half the room
    the endpoint leaves (oldest turns dropped first), so the results keep the rest.

    Raises:
        PromptTooLong: The goal and the failure notes alone do not fit ``endpoint``.
    """
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
    goal = state.get("goal", "")
    # The earlier conversation first, from at most half the room: the results keep the rest.
    conversation = await fit_conversation(
        context.conversation,
        fixed_text=prompts.SYNTHESIS_SYSTEM
        + prompts.SYNTHESIS_USER.format(goal=goal, conversation="", results="", failures=failures),
        endpoint=endpoint,
        max_tokens=context.synthesis_max_tokens,
        cap_tokens=context.conversation_max_tokens,
        room_divisor=2 if done else 1,
    )
    skeleton = prompts.SYNTHESIS_USER.format(
        goal=goal, conversation=conversation, results="", failures=failures
    )
    shares = [
        prompts.SYNTHESIS_RESULT.format(
            output=r.output + _tool_evidence(r),
            task_id=r.task_id,
            agent=r.agent,
            note=prompts.SYNTHESIS_CUT_NOTE if r.truncated else "",
        )
        for r in done
    ]
    budget = await room_after(
        prompts.SYNTHESIS_SYSTEM + skeleton, endpoint, context.synthesis_max_tokens, shares=shares
    )
    share = max(budget // max(len(done), 1), 0)
    blocks = []
    for r in done:
        note = prompts.SYNTHESIS_CUT_NOTE if r.truncated else ""
        fields = {"task_id": r.task_id, "agent": r.agent, "note": note}
        # The block's own heading counts against the share too.
        room = share - safe_token_bound(prompts.SYNTHESIS_RESULT.format(output="", **fields))
        output = await trim_to_tokens(r.output + _tool_evidence(r), room, endpoint)
        blocks.append(prompts.SYNTHESIS_RESULT.format(output=output, **fields))
    user = prompts.SYNTHESIS_USER.format(
        goal=goal,
        conversation=conversation,
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
    tiers = usable_tiers(fleet_runtime, context.summary_tiers)
    primary = fleet_runtime.candidates(tiers)[0]
    emit(PhaseStarted(run_id=state["run_id"], phase="summarizing", endpoint=primary.name))
    began = time.perf_counter()

    async def messages(endpoint: EndpointConfig) -> list[BaseMessage]:
        skeleton = prompts.SUMMARY_SYSTEM + prompts.SUMMARY_USER.format(answer="")
        budget = await room_after(
            skeleton, endpoint, context.summary_max_tokens, shares=[state.get("answer", "")]
        )
        answer = await trim_to_tokens(state.get("answer", ""), budget, endpoint)
        return [
            SystemMessage(prompts.SUMMARY_SYSTEM),
            HumanMessage(prompts.SUMMARY_USER.format(answer=answer)),
        ]

    outcome = await _phase_call(
        context,
        fleet_runtime,
        tiers,
        messages,
        "summarizer",
        run_id=state["run_id"],
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


TOOL_EVIDENCE_CHARS = 400


def _tool_evidence(result: TaskResult) -> str:
    """What the task's tools answered: the synthesizer sees the evidence, not just prose."""
    answered = [c for c in result.tool_calls if c.ok]
    if not answered:
        return ""
    lines = [f"- {c.name}: {c.output[:TOOL_EVIDENCE_CHARS]}" for c in answered]
    return prompts.SYNTHESIS_TOOL_RESULTS.format(lines="\n".join(lines))
