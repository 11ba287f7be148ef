"""Validate and repair plans: the planner's output is a suggestion, the DAG is ours.

Planner output is repaired with a warning for each change (unknown agent, unknown or
self dependency, duplicate id, cycle, too many tasks). A plan given by a caller is
checked strictly: anything that would need guessing is rejected with a clear error.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from agents.fallback import fallback_steps
from agents.registry import DEFAULT_AGENT
from graph.dag import back_edges, find_cycle, topological_order
from graph.schemas import Plan, Task
from kitty.errors import PlanError, format_validation_error

MAX_GIVEN_TASKS = 1000


def _nearest_agent(name: str, agents: Iterable[str]) -> str | None:
    names = list(agents)
    lowered = {n.lower(): n for n in names}
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    if key in lowered:
        return lowered[key]
    for candidate in names:
        if key and (key in candidate or candidate in key):
            return candidate
    match = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    return match[0] if match else None


def _break_cycles(tasks: list[Task], warnings: list[str]) -> list[Task]:
    """Drop back edges (found by DFS in plan order) until the graph is acyclic."""
    removed: dict[str, set[str]] = {}
    for dep, path in back_edges(tasks):
        removed.setdefault(path[-1], set()).add(dep)
        warnings.append(f"dependency {path[-1]} -> {dep} closed a cycle; dropped it")
    if not removed:
        return tasks
    return [
        t.model_copy(
            update={"dependencies": [d for d in t.dependencies if d not in removed.get(t.id, ())]}
        )
        for t in tasks
    ]


def _coerce_task(raw: Any, index: int, warnings: list[str]) -> dict[str, Any] | None:
    if isinstance(raw, Task):
        return raw.model_dump()
    if not isinstance(raw, Mapping):
        warnings.append(f"task #{index + 1} is not an object; dropped it")
        return None
    item = dict(raw)
    if "agent" not in item and "assigned_to" in item:  # the seed's field name
        item["agent"] = item.pop("assigned_to")
    item["id"] = str(item.get("id") or "").strip()[:64]
    item["agent"] = str(item.get("agent") or "").strip()
    item["description"] = str(item.get("description") or "").strip()
    deps = item.get("dependencies") or []
    if isinstance(deps, str):
        deps = [deps]
    if not isinstance(deps, list | tuple):
        warnings.append(f"task #{index + 1}: dependencies were not a list; dropped them")
        deps = []
    # Cut like ids, so a dependency on a long id still names the task it meant.
    item["dependencies"] = [str(d).strip()[:64] for d in deps if str(d).strip()]
    known = {"id", "agent", "description", "dependencies", "max_tokens", "extra"}
    return {k: v for k, v in item.items() if k in known}


def _usable_extra(task_id: str, extra: Any, warnings: list[str]) -> dict[str, Any]:
    """``extra`` if :class:`Task` accepts it, else ``{}`` with a warning (never raises)."""
    if not extra:
        return {}
    try:
        return Task.model_validate(
            {"id": task_id, "agent": "-", "description": "-", "extra": extra}
        ).extra
    except ValidationError as exc:
        problem = format_validation_error(exc.errors(), limit=1)
        warnings.append(f"task {task_id}: dropped its engine parameters ({problem})")
        return {}


def _usable_max_tokens(task_id: str, value: Any, warnings: list[str]) -> int | None:
    """``value`` if it is a positive whole number, else ``None`` with a warning."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    warnings.append(
        f"task {task_id}: max_tokens {value!r} is not a positive whole number; "
        "used the agent's default"
    )
    return None


def _free_id(index: int, taken: set[str]) -> str:
    """A ``task_N`` id for a task without one that no other task uses or will use."""
    candidate = f"task_{index + 1}"
    suffix = 0
    while candidate in taken:
        suffix += 1
        candidate = f"task_{index + 1}_{suffix}"
    return candidate


def repair_plan(
    raw_tasks: Iterable[Any],
    *,
    agents: Iterable[str],
    goal: str,
    max_tasks: int,
    source: str = "planner",
) -> Plan:
    """Turn planner output into a valid plan, recording every repair as a warning.

    Args:
        raw_tasks: Task objects/dicts as the planner produced them.
        agents: Registered agent names.
        goal: The goal (used when a task has no description).
        max_tasks: Keep at most this many tasks.
        source: Recorded on the plan (``planner`` or ``fallback``).

    Returns:
        An acyclic plan in topological order.

    Raises:
        PlanError: Nothing usable was left (no tasks).
    """
    agent_names = list(agents)
    warnings: list[str] = []
    tasks: list[Task] = []
    seen: set[str] = set()
    renames: dict[str, str] = {}
    items = [(index, _coerce_task(raw, index, warnings)) for index, raw in enumerate(raw_tasks)]
    # Ids the planner gave are kept: a task without one must not take a real task's id
    # (dependencies on that real task would then point at the wrong one).
    given_ids = {item["id"] for _, item in items if item and item["id"]}
    for index, item in items:
        if item is None:
            continue
        original_id = item["id"]
        task_id = original_id or _free_id(index, given_ids | seen)
        if not original_id:
            warnings.append(f"task #{index + 1} had no id; named it {task_id}")
        if task_id in seen:
            new_id = f"{task_id}_{index + 1}"
            while new_id in seen:
                new_id += "_"
            warnings.append(f"duplicate task id {task_id!r}; renamed the later one {new_id!r}")
            task_id = new_id
        elif original_id:
            renames.setdefault(original_id, task_id)
        seen.add(task_id)
        agent = item["agent"]
        if agent not in agent_names:
            nearest = _nearest_agent(agent, agent_names) if agent else None
            chosen = nearest or (DEFAULT_AGENT if DEFAULT_AGENT in agent_names else agent_names[0])
            warnings.append(f"task {task_id}: unknown agent {agent!r}; assigned {chosen!r}")
            agent = chosen
        description = item["description"]
        if not description:
            description = f"Contribute to the goal as the {agent}: {goal}"
            warnings.append(f"task {task_id} had no description; used the goal")
        tasks.append(
            Task(
                id=task_id,
                agent=agent,
                description=description,
                dependencies=item["dependencies"],
                max_tokens=_usable_max_tokens(task_id, item.get("max_tokens"), warnings),
                extra=_usable_extra(task_id, item.get("extra"), warnings),
            )
        )
    if not tasks:
        raise PlanError("the plan has no usable tasks")

    ids = {t.id for t in tasks}
    cleaned: list[Task] = []
    for task in tasks:
        deps: list[str] = []
        for dep in task.dependencies:
            dep = renames.get(dep, dep)
            if dep == task.id:
                warnings.append(f"task {task.id} depended on itself; dropped that")
            elif dep not in ids:
                warnings.append(f"task {task.id}: unknown dependency {dep!r}; dropped it")
            elif dep not in deps:
                deps.append(dep)
        cleaned.append(task.model_copy(update={"dependencies": deps}))
    ordered = topological_order(_break_cycles(cleaned, warnings))

    if len(ordered) > max_tasks:
        kept = ordered[:max_tasks]
        kept_ids = {t.id for t in kept}
        dropped = [t.id for t in ordered[max_tasks:]]
        warnings.append(
            f"plan had {len(ordered)} tasks, over max_tasks={max_tasks}; "
            f"dropped {', '.join(dropped)}"
        )
        ordered = [
            t.model_copy(update={"dependencies": [d for d in t.dependencies if d in kept_ids]})
            for t in kept
        ]
    return Plan(tasks=ordered, warnings=warnings, source=source)


def _top_level_named(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Errors of the plan as a whole (not an object at all) are located at ``(top level)``."""
    return [{**e, "loc": e.get("loc") or ("(top level)",)} for e in errors]


def parse_plan(plan: Plan | Mapping[str, Any]) -> Plan:
    """Read a caller's plan (a :class:`Plan` or its dict form) without repairing it.

    Raises:
        PlanError: The structure is wrong; the message names each bad field.
    """
    if isinstance(plan, Plan):
        return plan
    try:
        return Plan.model_validate(plan)
    except ValidationError as exc:
        problems = format_validation_error(_top_level_named(exc.errors()))
        raise PlanError(
            f'plan is not valid: {problems}. A plan is {{"tasks": [{{"id", "agent", '
            f'"description", "dependencies"}}, ...]}} with at least one task'
        ) from None


def check_given_plan(plan: Plan | Mapping[str, Any], *, agents: Iterable[str]) -> Plan:
    """Validate a caller's plan strictly (no guessing): ids, agents, dependencies, cycles.

    Raises:
        PlanError: The first problem found, with what to change.
    """
    agent_names = list(agents)
    plan = parse_plan(plan)
    if len(plan.tasks) > MAX_GIVEN_TASKS:
        raise PlanError(f"plan has {len(plan.tasks)} tasks; the limit is {MAX_GIVEN_TASKS}")
    ids: set[str] = set()
    for task in plan.tasks:
        if task.id in ids:
            raise PlanError(f"task id {task.id!r} appears twice; give every task a unique id")
        ids.add(task.id)
        if task.agent not in agent_names:
            raise PlanError(
                f"task {task.id}: unknown agent {task.agent!r}; use one of {', '.join(agent_names)}"
            )
    for task in plan.tasks:
        for dep in task.dependencies:
            if dep == task.id:
                raise PlanError(f"task {task.id} depends on itself; remove that dependency")
            if dep not in ids:
                raise PlanError(
                    f"task {task.id} depends on unknown task {dep!r}; known ids: "
                    f"{', '.join(sorted(ids))}"
                )
    cycle = find_cycle(plan.tasks)
    if cycle:
        raise PlanError(f"plan has a dependency cycle: {' -> '.join(cycle)}; break it")
    return Plan(tasks=topological_order(plan.tasks), warnings=list(plan.warnings), source="given")


def fallback_plan(goal: str, *, agents: Iterable[str]) -> Plan:
    """A keyword plan for when the planner endpoint itself is unreachable.

    The plans are data (:data:`agents.fallback.FALLBACK_PLANS`); agents the registry
    lacks are remapped by repair, with a warning.

    Args:
        goal: The goal.
        agents: Registered agents.
    """
    tasks = [
        {
            "id": step.id,
            "agent": step.agent,
            "description": step.description.format(goal=goal),
            "dependencies": list(step.dependencies),
        }
        for step in fallback_steps(goal)
    ]
    return repair_plan(tasks, agents=agents, goal=goal, max_tasks=len(tasks), source="fallback")
