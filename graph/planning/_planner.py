"""The planner node: a schema-constrained plan on the tools tier, validated and repaired."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from agents.registry import DEFAULT_AGENTS, AgentSpec
from endpoints.calls import (
    CallOutcome,
    MessageBuilder,
    ModelRequest,
    ModelSettings,
    ResponseFormat,
    call_tiers,
)
from endpoints.config import EndpointConfig
from endpoints.fleet import FleetRuntime, get_runtime
from graph import prompts
from graph._node_support import (
    call_limits,
    context_of,
    emit,
    prepare_fleet,
    usable_tiers,
)
from graph._state import OrchestratorState
from graph.budgets import check_goal_fits, fit_conversation
from graph.context import Context
from graph.events import (
    PhaseStarted,
    PlanReady,
)
from graph.images import ImageRecord, load_images, with_vision_task
from graph.planning._fit import fit_caps_to_context
from graph.planning._salvage import RETRY_TOKEN_FACTOR, complete_tasks, retry_budget
from graph.planning._validation import PlanError, check_given_plan, fallback_plan, repair_plan
from graph.schemas import Plan
from graph.tools import available_tools, warn_unprovided

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


def _planner_request(
    tiers: list[str],
    context: Context,
    agent_names: list[str],
    max_tasks: int,
    max_tokens: int,
    run_id: str | None,
) -> ModelRequest:
    """The planner's call: a plan schema (looser where the grammar lacks tuples)."""
    return ModelRequest(
        tiers=tiers,
        model=ModelSettings(temperature=0.3, max_tokens=max_tokens),
        limits=call_limits(context),
        response_format=ResponseFormat(
            name="plan",
            schema=plan_json_schema(agent_names, max_tasks),
            loose_schema=loose_plan_json_schema(agent_names, max_tasks),
        ),
        run_id=run_id,
        slot_order=context.slot_order,
        tags=["kitty:planner"],
    )


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


def _largest_cap(fleet_runtime: FleetRuntime, tiers: list[str], floor: int) -> int:
    """Half the smallest planner context: room for the prompt, whatever the cap."""
    contexts = [h.config.ctx for h in fleet_runtime.candidates(tiers) if h.config.ctx]
    return max(floor, min(contexts) // 2) if contexts else floor * RETRY_TOKEN_FACTOR


def _kept_whole_tasks(
    whole: list[dict[str, Any]], names: list[str], goal: str, context: Context, max_tokens: int
) -> Plan:
    plan = repair_plan(whole, agents=names, goal=goal, max_tasks=context.max_tasks)
    plan.warnings.append(
        f"the planner's answer was cut at its token cap twice (last cap {max_tokens}); "
        f"kept the {len(whole)} whole task(s) before the cut. Raise planner_max_tokens "
        "or lower max_tasks for a fuller plan"
    )
    return plan


async def make_plan(
    goal: str,
    context: Context,
    fleet_runtime: FleetRuntime,
    agents: dict[str, AgentSpec] = DEFAULT_AGENTS,
    images: list[ImageRecord] | None = None,
    run_id: str | None = None,
) -> tuple[Plan, CallOutcome | None]:
    """Ask the tools tier for a plan (schema-constrained), then validate and repair it.

    The planner is told about the attached ``images`` (count, hash prefix, type, size)
    and sees the run's earlier ``conversation`` as quoted context, cut to the room each
    endpoint leaves; its slot time counts to ``run_id`` (least attained service across
    runs).

    Returns:
        The plan and the planner call's outcome. When the planner endpoint itself fails,
        the keyword fallback plan is returned with a warning.

    Raises:
        PlanError: The planner answered twice with unusable output.
    """
    names = list(agents)
    tools = await available_tools(agents, context, fleet_runtime.fleet)
    warn_unprovided(agents, context, fleet_runtime.fleet, tools)
    tiers = usable_tiers(fleet_runtime, context.planner_tiers)

    def messages_for(max_tasks: int, conversation: str = "") -> list[BaseMessage]:
        return [
            SystemMessage(prompts.PLANNER_SYSTEM),
            HumanMessage(
                prompts.planner_user(
                    goal,
                    list(agents.values()),
                    max_tasks,
                    tools,
                    [image.describe() for image in images or []],
                    conversation,
                )
            ),
        ]

    def request_messages(max_tasks: int, max_tokens: int) -> list[BaseMessage] | MessageBuilder:
        if not context.conversation or not context.conversation_max_tokens:
            return messages_for(max_tasks)

        async def with_conversation(endpoint: EndpointConfig) -> list[BaseMessage]:
            # The earlier turns get the room this endpoint leaves (contexts differ).
            plain = messages_for(max_tasks)
            block = await fit_conversation(
                context.conversation,
                fixed_text="".join(str(m.content) for m in plain),
                endpoint=endpoint,
                max_tokens=max_tokens,
                cap_tokens=context.conversation_max_tokens,
            )
            return messages_for(max_tasks, block)

        return with_conversation

    max_tokens, max_tasks = context.planner_max_tokens, context.max_tasks
    last_error = ""
    outcome: CallOutcome | None = None
    whole: list[dict[str, Any]] = []  # tasks that fitted before a cut
    for attempt in range(2):
        outcome = await call_tiers(
            fleet_runtime,
            _planner_request(tiers, context, names, max_tasks, max_tokens, run_id),
            request_messages(max_tasks, max_tokens),
        )
        if not outcome.ok:
            if whole:
                return _kept_whole_tasks(whole, names, goal, context, max_tokens), outcome
            plan = fallback_plan(goal, agents=names)
            plan.warnings.insert(
                0, f"planner endpoint failed ({outcome.error}); used the keyword fallback plan"
            )
            return plan, outcome
        if outcome.truncated:
            whole = complete_tasks(outcome.text) or whole
            if attempt == 0:
                cut_at = max_tokens
                max_tokens, max_tasks = retry_budget(max_tokens, max_tasks, len(whole))
                max_tokens = min(max_tokens, _largest_cap(fleet_runtime, tiers, cut_at))
                logger.warning(
                    "planner answer cut at %d tokens (%d whole tasks); asking for %d tasks "
                    "within %d tokens",
                    cut_at,
                    len(whole),
                    max_tasks,
                    max_tokens,
                )
                continue
            if whole:
                return _kept_whole_tasks(whole, names, goal, context, max_tokens), outcome
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

    The goal's images (``images``: cleaned records from the API, or URLs from Studio) are
    checked and cleaned into ``attachments``, once by hash; ``images`` is emptied so the
    next goal on the thread starts without them.

    Raises:
        PlanError: The goal is empty, or too long for the fleet's smallest context.
        ImageError: An image is refused (type, size, count, URL).
    """
    context = context_of(runtime)
    run_id = uuid.uuid4().hex
    started_at = time.time()
    emit(PhaseStarted(run_id=run_id, phase="planning"))
    goal = (state.get("goal") or "").strip()
    given = state.get("plan")
    if not goal and not given:
        raise PlanError("the goal is empty; say what you want done")
    images = await load_images(
        state.get("images") or [],
        context.image_limits(),
        get_runtime(context.fleet).fleet.fetch,
        allow_paths=False,  # Studio input must not read the server's files
    )
    fleet_runtime = await prepare_fleet(context)
    if goal:  # every prompt of the run carries it: refuse it now, not in every call
        await check_goal_fits(goal, fleet_runtime)
    began = time.perf_counter()
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    if given:
        plan = check_given_plan(given, agents=list(DEFAULT_AGENTS))
    else:
        # With images, one task is kept free for a vision task should the planner not
        # give the images to anyone (a small model often does not).
        planning = context
        if images and context.max_tasks > 1:
            planning = context.model_copy(update={"max_tasks": context.max_tasks - 1})
        plan, outcome = await make_plan(goal, planning, fleet_runtime, images=images, run_id=run_id)
        if outcome is not None:
            usage = {
                "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens,
                "cached_prompt_tokens": outcome.cached_prompt_tokens,
            }
    plan, image_warning = with_vision_task(plan, len(images), context.max_tasks)
    plan = fit_caps_to_context(plan, DEFAULT_AGENTS, fleet_runtime.fleet)
    planner_s = time.perf_counter() - began
    emit(PlanReady(run_id=run_id, plan=plan, planner_s=planner_s))
    warnings = list(fleet_runtime.warnings) + list(plan.warnings)
    warnings += [image_warning] if image_warning else []
    return {
        "run_id": run_id,
        "goal": goal,
        "plan": plan,
        "results": None,
        "answer": "",
        "voice_summary": None,
        "timings": {"started_at": started_at, "planner_s": planner_s},
        "usage": usage,
        "warnings": warnings,
        "images": None,
        "attachments": {image.sha256: image for image in images},
    }
