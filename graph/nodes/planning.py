"""The planner node: a schema-constrained plan on the tools tier, validated and repaired."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import Runnable
from langgraph.runtime import Runtime

from agents.registry import DEFAULT_AGENTS, AgentSpec
from endpoints.config import EndpointConfig
from endpoints.models import constrain_to_json_schema
from endpoints.pool import FleetRuntime
from graph import prompts
from graph.agent_tools import available_tools, warn_unprovided
from graph.budget import check_goal_fits
from graph.context import Context
from graph.events import (
    PhaseStarted,
    PlanReady,
)
from graph.executor import CallOutcome, ModelBuilder, call_model
from graph.nodes.common import (
    context_of,
    emit,
    prepare_fleet,
    usable_tiers,
)
from graph.plan_validation import PlanError, check_given_plan, fallback_plan, repair_plan
from graph.schemas import Plan
from graph.state import OrchestratorState

logger = logging.getLogger("kitty.graph")


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


def _planner_model(
    fleet_runtime: FleetRuntime, schema: dict[str, Any], max_tokens: int
) -> ModelBuilder:
    def build(endpoint: EndpointConfig) -> Runnable[Any, Any]:
        model = fleet_runtime.chat_model(endpoint, temperature=0.3, max_tokens=max_tokens)
        return constrain_to_json_schema(model, endpoint, schema, name="plan")

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
    tools = await available_tools(agents, context, fleet_runtime.fleet)
    warn_unprovided(agents, context, fleet_runtime.fleet, tools)
    schema = plan_json_schema(names, context.max_tasks)
    messages = [
        SystemMessage(prompts.PLANNER_SYSTEM),
        HumanMessage(
            prompts.planner_user(
                goal,
                list(agents.values()),
                context.max_tasks,
                tools,
            )
        ),
    ]
    last_error = ""
    outcome: CallOutcome | None = None
    for _attempt in range(2):
        outcome = await call_model(
            fleet_runtime,
            usable_tiers(fleet_runtime, context.planner_tiers),
            messages,
            _planner_model(fleet_runtime, schema, context.planner_max_tokens),
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
    """Plan the goal (or validate a given plan) and reset per-run state.

    Raises:
        PlanError: The goal is empty, or too long for the fleet's smallest context.
    """
    context = context_of(runtime)
    run_id = uuid.uuid4().hex
    started_at = time.time()
    emit(PhaseStarted(run_id=run_id, phase="planning"))
    goal = (state.get("goal") or "").strip()
    given = state.get("plan")
    if not goal and not given:
        raise PlanError("the goal is empty; say what you want done")
    fleet_runtime = await prepare_fleet(context)
    if goal:  # every prompt of the run carries it: refuse it now, not in every call
        await check_goal_fits(goal, fleet_runtime)
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
