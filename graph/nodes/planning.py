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


MAX_DEPENDENCIES = 3
"""Most dependencies a planned task may list: fewer edges, wider plans (issue: parallelism)."""


def _task_schema(position: int, agent_names: list[str], max_dependencies: int) -> dict[str, Any]:
    """Task ``position`` (1-based): id ``task_<position>``, dependencies on earlier ids only."""
    earlier = [f"task_{number}" for number in range(1, position)]
    dependencies: dict[str, Any] = {"type": "array", "maxItems": 0, "prefixItems": []}
    if earlier:
        dependencies = {
            "type": "array",
            "items": {"type": "string", "enum": earlier},
            "maxItems": min(max_dependencies, len(earlier)),
        }
    return {
        "type": "object",
        # The model writes what the task does before what it needs: dependencies chosen
        # after the description are the ones it uses (and the order is the grammar's).
        "properties": {
            "id": {"type": "string", "const": f"task_{position}"},
            "agent": {"type": "string", "enum": agent_names},
            "description": {"type": "string", "minLength": 8, "maxLength": 160},
            "dependencies": dependencies,
        },
        "required": ["id", "agent", "description", "dependencies"],
        "additionalProperties": False,
    }


def plan_json_schema(
    agent_names: list[str], max_tasks: int, *, max_dependencies: int = MAX_DEPENDENCIES
) -> dict[str, Any]:
    """JSON schema of a plan that is a valid DAG by construction (llama.cpp grammar).

    Task k has the id ``task_k`` and depends only on ``task_1 … task_{k-1}``: cycles,
    self or unknown dependencies and duplicate ids cannot be generated. llama.cpp turns
    ``prefixItems`` into a fixed-length tuple, so each plan length 1..``max_tasks`` is one
    ``anyOf`` branch over shared ``$defs`` tasks (the grammar stays linear in tasks).
    ``items`` is left out: llama.cpp answers ``"items": false`` with HTTP 400.
    ``uniqueItems`` is not enforced there, so repeated dependencies are deduplicated
    after parsing.
    """
    defs = {
        f"task_{k}": _task_schema(k, agent_names, max_dependencies) for k in range(1, max_tasks + 1)
    }
    lengths = [
        {
            "type": "array",
            "prefixItems": [{"$ref": f"#/$defs/task_{k}"} for k in range(1, count + 1)],
            "minItems": count,
            "maxItems": count,
        }
        for count in range(1, max_tasks + 1)
    ]
    return {
        "type": "object",
        "properties": {
            "tasks": {"type": "array", "minItems": 1, "maxItems": max_tasks, "anyOf": lengths}
        },
        "required": ["tasks"],
        "additionalProperties": False,
        "$defs": defs,
    }


def loose_plan_json_schema(agent_names: list[str], max_tasks: int) -> dict[str, Any]:
    """The plan schema for engines whose grammar may lack tuples (Ollama): repair follows."""
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
    fleet_runtime: FleetRuntime, agent_names: list[str], max_tasks: int, max_tokens: int
) -> ModelBuilder:
    def build(endpoint: EndpointConfig) -> Runnable[Any, Any]:
        model = fleet_runtime.chat_model(endpoint, temperature=0.3, max_tokens=max_tokens)
        schema = (
            loose_plan_json_schema(agent_names, max_tasks)
            if endpoint.kind == "ollama"
            else plan_json_schema(agent_names, max_tasks)
        )
        return constrain_to_json_schema(model, endpoint, schema, name="plan")

    return build


def _parse_plan_json(text: str) -> list[Any]:
    data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("tasks")
    if not isinstance(data, list):
        raise ValueError("expected an object with a 'tasks' list")
    for task in data:  # the grammar cannot enforce uniqueItems: drop repeats, keep order
        if isinstance(task, dict) and isinstance(task.get("dependencies"), list):
            deps = task["dependencies"]
            task["dependencies"] = [d for i, d in enumerate(deps) if d not in deps[:i]]
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
            _planner_model(fleet_runtime, names, context.max_tasks, context.planner_max_tokens),
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
