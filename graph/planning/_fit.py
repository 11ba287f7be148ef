"""Completion caps that fit the context of the servers a task can run on.

A task (or its agent) may ask for more completion tokens than a slot's context holds:
llama.cpp would then stop the answer when the context is full, after the prompt took its
share, and the task would read as cut short. Before dispatch each cap is checked against
the largest context among the task's endpoints (primary tier, then fallback), leaving a
quarter of it (at least :data:`PROMPT_RESERVE_MIN` tokens) for the prompt; a cap beyond
that is lowered to fit, with a warning naming the task, the endpoint and the limit.
"""

from __future__ import annotations

from agents.registry import AgentSpec
from endpoints.config import FleetConfig
from graph.schemas import Plan

PROMPT_RESERVE_MIN = 256


def completion_limit(ctx: int) -> int:
    """The most completion tokens a slot of ``ctx`` tokens gives one answer."""
    return max(ctx - max(PROMPT_RESERVE_MIN, ctx // 4), 1)


def fit_caps_to_context(plan: Plan, agents: dict[str, AgentSpec], fleet: FleetConfig) -> Plan:
    """``plan`` with every cap that cannot fit lowered (warnings on ``plan.warnings``)."""
    tasks = []
    warnings: list[str] = []
    for task in plan.tasks:
        agent = agents.get(task.agent)
        if agent is None:
            tasks.append(task)
            continue
        cap = task.max_tokens or agent.max_tokens
        endpoints = [
            e for tier in agent.tiers() if tier in fleet.tiers for e in fleet.tier(tier).endpoints
        ]
        roomiest = max(endpoints, key=lambda e: e.ctx or 0, default=None)
        if roomiest is None or not roomiest.ctx or cap <= completion_limit(roomiest.ctx):
            tasks.append(task)
            continue
        limit = completion_limit(roomiest.ctx)
        source = "its max_tokens" if task.max_tokens else f"agent {agent.name}'s max_tokens"
        warnings.append(
            f"task {task.id}: {source} {cap} does not fit the {roomiest.ctx}-token context of "
            f"endpoint {roomiest.name} (its largest); lowered to {limit}, leaving room for "
            "the prompt. Give that tier a larger ctx for longer answers"
        )
        tasks.append(task.model_copy(update={"max_tokens": limit}))
    if not warnings:
        return plan
    return plan.model_copy(update={"tasks": tasks, "warnings": [*plan.warnings, *warnings]})


__all__ = ["completion_limit", "fit_caps_to_context"]
