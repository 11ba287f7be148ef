"""Plan validation: planner output is repaired with warnings, given plans checked strictly."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from agents.registry import DEFAULT_AGENTS
from graph.dag import critical_path_length, find_cycle, topological_order
from graph.planning._validation import (
    DEFAULT_AGENT,
    MAX_GIVEN_TASKS,
    PlanError,
    check_given_plan,
    fallback_plan,
    parse_plan,
    repair_plan,
)
from graph.schemas import Plan, Task

AGENTS = list(DEFAULT_AGENTS)


def raw(task_id: str, agent: str = "researcher", deps: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": task_id,
        "agent": agent,
        "description": f"do {task_id}",
        "dependencies": deps or [],
    }


def repair(tasks: list[Any], max_tasks: int = 6) -> Plan:
    return repair_plan(tasks, agents=AGENTS, goal="the goal", max_tasks=max_tasks)


def deps_of(plan: Plan) -> dict[str, list[str]]:
    return {t.id: t.dependencies for t in plan.tasks}


def assert_topological(plan: Plan) -> None:
    seen: set[str] = set()
    for task in plan.tasks:
        assert set(task.dependencies) <= seen, f"{task.id} runs before {task.dependencies}"
        seen.add(task.id)


# --- repair_plan (planner output) -------------------------------------------------


def test_valid_plan_passes_unchanged() -> None:
    plan = repair([raw("task_1"), raw("task_2", "coder"), raw("task_3", "reasoner", ["task_1"])])
    assert plan.warnings == []
    assert plan.source == "planner"
    assert deps_of(plan) == {"task_1": [], "task_2": [], "task_3": ["task_1"]}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Researcher", "researcher"),
        ("cad designer", "cad_designer"),
        ("cad-designer", "cad_designer"),
        ("research", "researcher"),
        ("fabricatr", "fabricator"),
        ("vision", "vision_analyst"),
    ],
)
def test_unknown_agent_maps_to_nearest(given: str, expected: str) -> None:
    plan = repair([raw("task_1", given)])
    assert plan.tasks[0].agent == expected
    assert any("unknown agent" in w and given in w for w in plan.warnings)


@pytest.mark.parametrize("given", ["xyzzy", "", "plumber"])
def test_unknown_agent_without_match_gets_default(given: str) -> None:
    plan = repair([raw("task_1", given)])
    assert plan.tasks[0].agent == DEFAULT_AGENT
    assert any("unknown agent" in w for w in plan.warnings)


def test_default_agent_missing_from_registry_uses_first_agent() -> None:
    plan = repair_plan([raw("task_1", "xyzzy")], agents=["coder", "analyst"], goal="g", max_tasks=3)
    assert plan.tasks[0].agent == "coder"


def test_unknown_and_self_dependencies_are_dropped() -> None:
    plan = repair([raw("task_1", deps=["task_1"]), raw("task_2", deps=["task_9", "task_1"])])
    assert deps_of(plan) == {"task_1": [], "task_2": ["task_1"]}
    assert any("task_1 depended on itself" in w for w in plan.warnings)
    assert any("unknown dependency 'task_9'" in w for w in plan.warnings)


def test_repeated_dependency_is_kept_once() -> None:
    plan = repair([raw("task_1"), raw("task_2", deps=["task_1", "task_1"])])
    assert deps_of(plan)["task_2"] == ["task_1"]


def test_duplicate_ids_are_renamed() -> None:
    plan = repair([raw("task_1"), raw("task_1", "coder"), raw("task_2", deps=["task_1"])])
    ids = [t.id for t in plan.tasks]
    assert len(ids) == len(set(ids)) == 3
    renamed = next(t for t in plan.tasks if t.agent == "coder")
    assert renamed.id != "task_1"
    # A dependency on the duplicated id refers to its first holder.
    assert deps_of(plan)["task_2"] == ["task_1"]
    assert any("duplicate task id 'task_1'" in w for w in plan.warnings)


def test_missing_id_and_description_are_filled() -> None:
    plan = repair([{"agent": "coder", "dependencies": []}])
    task = plan.tasks[0]
    assert task.id == "task_1"
    assert "the goal" in task.description
    assert len(plan.warnings) == 2


def test_non_object_tasks_are_dropped() -> None:
    plan = repair(["just a string", raw("task_2")])
    assert [t.id for t in plan.tasks] == ["task_2"]
    assert any("not an object" in w for w in plan.warnings)


def test_string_dependency_is_accepted() -> None:
    plan = repair([raw("task_1"), {**raw("task_2"), "dependencies": "task_1"}])
    assert deps_of(plan)["task_2"] == ["task_1"]


def test_two_task_cycle_is_broken_with_warning() -> None:
    plan = repair([raw("task_1", deps=["task_2"]), raw("task_2", deps=["task_1"])])
    assert find_cycle(plan.tasks) is None
    assert sum(len(d) for d in deps_of(plan).values()) == 1
    assert any("closed a cycle" in w for w in plan.warnings)
    assert_topological(plan)


def test_long_cycle_keeps_all_other_edges() -> None:
    tasks = [
        raw("a", deps=["c"]),
        raw("b", deps=["a"]),
        raw("c", deps=["b"]),
        raw("d", deps=["a", "c"]),
    ]
    plan = repair(tasks)
    assert find_cycle(plan.tasks) is None
    # Exactly one edge of the a->b->c loop is gone; d keeps both of its inputs.
    assert sum(len(d) for d in deps_of(plan).values()) == 4
    assert deps_of(plan)["d"] == ["a", "c"]
    assert sum("closed a cycle" in w for w in plan.warnings) == 1
    assert_topological(plan)


def test_over_max_tasks_is_capped() -> None:
    tasks = [
        raw("task_1"),
        raw("task_2", deps=["task_1"]),
        raw("task_3", deps=["task_2"]),
        raw("task_4"),
        raw("task_5", deps=["task_3", "task_4"]),
    ]
    plan = repair(tasks, max_tasks=3)
    assert len(plan.tasks) == 3
    kept = {t.id for t in plan.tasks}
    for task in plan.tasks:
        assert set(task.dependencies) <= kept
    assert any("over max_tasks=3" in w for w in plan.warnings)
    assert_topological(plan)


def test_result_is_in_topological_order() -> None:
    plan = repair(
        [raw("c", deps=["b"]), raw("b", deps=["a"]), raw("a"), raw("x")],
    )
    assert [t.id for t in plan.tasks] == ["a", "x", "b", "c"]
    assert plan.warnings == []


def test_seed_assigned_to_field_is_accepted() -> None:
    seed_task = {
        "id": "task_1",
        "description": "Research wall hooks",
        "assigned_to": "researcher",
        "dependencies": [],
        "priority": 1,
    }
    plan = repair([seed_task])
    assert plan.tasks[0].agent == "researcher"
    assert plan.warnings == []


def test_task_objects_are_accepted() -> None:
    plan = repair([Task(id="t", agent="coder", description="write it", max_tokens=7)])
    assert plan.tasks[0].max_tokens == 7


@pytest.mark.parametrize("tasks", [[], ["nope", 3, None]])
def test_nothing_usable_raises(tasks: list[Any]) -> None:
    with pytest.raises(PlanError, match="no usable tasks"):
        repair(tasks)


# --- check_given_plan (caller's plan, strict) -------------------------------------


def given(*tasks: Task) -> Plan:
    return Plan(tasks=list(tasks), source="given")


def t(task_id: str, agent: str = "researcher", deps: list[str] | None = None) -> Task:
    return Task(id=task_id, agent=agent, description=f"do {task_id}", dependencies=deps or [])


def test_given_plan_is_reordered_and_marked_given() -> None:
    plan = check_given_plan(given(t("b", deps=["a"]), t("a")), agents=AGENTS)
    assert [x.id for x in plan.tasks] == ["a", "b"]
    assert plan.source == "given"


def test_given_plan_as_dict_is_accepted() -> None:
    data = {"tasks": [raw("a"), raw("b", "coder", ["a"])]}
    plan = check_given_plan(data, agents=AGENTS)
    assert [x.id for x in plan.tasks] == ["a", "b"]


def test_given_duplicate_id_is_rejected() -> None:
    with pytest.raises(PlanError, match="'a' appears twice"):
        check_given_plan(given(t("a"), t("a", "coder")), agents=AGENTS)


def test_given_unknown_agent_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(PlanError, match=r"unknown agent 'plumber'.*researcher"):
        check_given_plan(given(t("a", "plumber")), agents=AGENTS)


def test_given_unknown_dependency_is_rejected() -> None:
    with pytest.raises(PlanError, match="depends on unknown task 'zz'"):
        check_given_plan(given(t("a", deps=["zz"])), agents=AGENTS)


def test_given_self_dependency_is_rejected() -> None:
    with pytest.raises(PlanError, match="depends on itself"):
        check_given_plan(given(t("a", deps=["a"])), agents=AGENTS)


def test_given_cycle_message_names_the_cycle() -> None:
    plan = given(t("a", deps=["c"]), t("b", deps=["a"]), t("c", deps=["b"]), t("d"))
    with pytest.raises(PlanError, match="dependency cycle") as info:
        check_given_plan(plan, agents=AGENTS)
    message = str(info.value)
    cycle = message.split("cycle: ")[1].split(";")[0].split(" -> ")
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_given_invalid_structure_is_a_plan_error_naming_the_field() -> None:
    with pytest.raises(PlanError, match="plan is not valid: tasks: List should have at least 1"):
        check_given_plan({"tasks": []}, agents=AGENTS)
    with pytest.raises(PlanError, match=r"tasks\.0\.agent: Field required") as info:
        check_given_plan({"tasks": [{"id": "a", "description": "x"}]}, agents=AGENTS)
    assert "A plan is" in str(info.value)  # and says what a plan looks like
    with pytest.raises(PlanError, match=r"tasks\.0\.assigned_to: Extra inputs"):
        parse_plan({"tasks": [{"id": "a", "agent": "coder", "assigned_to": "coder"}]})
    with pytest.raises(PlanError, match=r"\(top level\)"):
        parse_plan("task_1, task_2")  # type: ignore[arg-type]


def test_parse_plan_does_not_repair() -> None:
    plan = Plan(tasks=[t("b", deps=["zz"])])
    assert parse_plan(plan) is plan
    assert parse_plan(plan.model_dump()).tasks[0].dependencies == ["zz"]


def test_given_plan_over_the_limit_is_rejected() -> None:
    tasks = [t(f"t{i}") for i in range(MAX_GIVEN_TASKS + 1)]
    with pytest.raises(PlanError, match="limit"):
        check_given_plan(given(*tasks), agents=AGENTS)


def test_deep_given_chain_does_not_hit_the_recursion_limit() -> None:
    """A chain as long as the given-plan limit, checked from a deep call stack."""
    chain = [t(f"t{i}", deps=[f"t{i - 1}"] if i else []) for i in range(MAX_GIVEN_TASKS)]

    def nested(plan: Plan, depth: int = 150) -> Plan:
        return nested(plan, depth - 1) if depth else check_given_plan(plan, agents=AGENTS)

    assert sys.getrecursionlimit() < MAX_GIVEN_TASKS + 150  # deep enough to matter
    checked = nested(given(*reversed(chain)))
    assert [x.id for x in checked.tasks] == [f"t{i}" for i in range(MAX_GIVEN_TASKS)]
    assert critical_path_length(checked.tasks) == MAX_GIVEN_TASKS
    looped = given(*chain[1:], t("t0", deps=[f"t{MAX_GIVEN_TASKS - 1}"]))
    with pytest.raises(PlanError, match="cycle"):
        nested(looped)
    repaired = repair_plan(
        [x.model_dump() for x in looped.tasks], agents=AGENTS, goal="g", max_tasks=2
    )
    # The DFS from t1 drops t2 -> t1, the last edge of the loop it walks.
    assert deps_of(repaired) == {"t2": [], "t3": ["t2"]}
    assert any("t2 -> t1 closed a cycle" in w for w in repaired.warnings)


# --- helpers ------------------------------------------------------------------------


def test_topological_order_raises_on_cycle() -> None:
    with pytest.raises(PlanError, match="cycle"):
        topological_order([t("a", deps=["b"]), t("b", deps=["a"])])


def test_critical_path_length_counts_tasks_on_longest_chain() -> None:
    assert critical_path_length([t("a"), t("b"), t("c")]) == 1
    assert critical_path_length([t("a"), t("b", deps=["a"]), t("c", deps=["b"]), t("d")]) == 3


# --- fallback_plan -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("goal", "agents"),
    [
        ("Write a Python script that renames photos", ["researcher", "coder", "reasoner"]),
        ("Implement a ring buffer", ["researcher", "coder", "reasoner"]),
        ("Design a wall hook and print it in PETG", ["researcher", "cad_designer", "fabricator"]),
        ("Make a 3D model of a vase", ["researcher", "cad_designer", "fabricator"]),
        ("Compare heat pumps for a small flat", ["researcher", "analyst", "reasoner"]),
    ],
)
def test_fallback_plan_keyword_branches(goal: str, agents: list[str]) -> None:
    plan = fallback_plan(goal, agents=AGENTS)
    assert plan.source == "fallback"
    assert [x.agent for x in plan.tasks] == agents
    assert plan.warnings == []
    assert find_cycle(plan.tasks) is None
    assert_topological(plan)


def test_fallback_plan_code_branch_runs_research_and_code_in_parallel() -> None:
    plan = fallback_plan("write code to parse CSV", agents=AGENTS)
    assert deps_of(plan) == {"task_1": [], "task_2": [], "task_3": ["task_1", "task_2"]}


def test_fallback_plan_remaps_missing_agents() -> None:
    plan = fallback_plan("Design a bracket", agents=["researcher"])
    assert {x.agent for x in plan.tasks} == {"researcher"}
    assert sum("unknown agent" in w for w in plan.warnings) == 2
