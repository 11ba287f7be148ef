"""The planner's schema makes a valid DAG the only thing a grammar can produce."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from agents.registry import DEFAULT_AGENTS
from graph.planning._planner import (
    MAX_DEPENDENCIES,
    _parse_plan_json,
    loose_plan_json_schema,
    plan_json_schema,
)

AGENTS = list(DEFAULT_AGENTS)


def task(number: int, deps: list[str], task_id: str | None = None) -> dict[str, Any]:
    return {
        "id": task_id or f"task_{number}",
        "agent": AGENTS[0],
        "description": f"do part {number} of the goal",
        "dependencies": deps,
    }


def valid(plan: dict[str, Any], max_tasks: int = 4) -> bool:
    return jsonschema.Draft202012Validator(plan_json_schema(AGENTS, max_tasks)).is_valid(plan)


def test_positional_ids_and_earlier_dependencies_are_valid() -> None:
    plan = {"tasks": [task(1, []), task(2, []), task(3, ["task_1", "task_2"]), task(4, [])]}
    assert valid(plan)
    assert valid({"tasks": [task(1, [])]})


@pytest.mark.parametrize(
    "tasks",
    [
        [task(1, ["task_1"])],  # self dependency
        [task(1, []), task(2, ["task_3"]), task(3, [])],  # forward (could close a cycle)
        [task(1, ["task_2"]), task(2, ["task_1"])],  # cycle
        [task(1, []), task(2, ["task_9"])],  # unknown id
        [task(1, []), task(2, [], task_id="task_1")],  # duplicate id
        [task(1, []), task(3, [])],  # an id out of place
        [task(k, []) for k in range(1, 6)],  # over max_tasks
        [],  # no task
    ],
)
def test_what_repair_used_to_fix_cannot_match(tasks: list[dict[str, Any]]) -> None:
    assert not valid({"tasks": tasks})
    # The loose schema (Ollama) let all but the last two through: repair handled them.


def test_dependencies_per_task_are_capped() -> None:
    many = [f"task_{k}" for k in range(1, MAX_DEPENDENCIES + 2)]
    tasks = [task(k, []) for k in range(1, MAX_DEPENDENCIES + 2)]
    plan = {"tasks": [*tasks, task(MAX_DEPENDENCIES + 2, many)]}
    assert not valid(plan, max_tasks=MAX_DEPENDENCIES + 2)
    plan["tasks"][-1]["dependencies"] = many[:MAX_DEPENDENCIES]
    assert valid(plan, max_tasks=MAX_DEPENDENCIES + 2)


def test_schema_has_no_items_false_and_description_precedes_dependencies() -> None:
    schema = plan_json_schema(AGENTS, 6)
    text = json.dumps(schema)
    assert '"items": false' not in text  # llama.cpp answers it with HTTP 400
    assert "items" not in schema["properties"]["tasks"]
    order = list(schema["$defs"]["task_3"]["properties"])
    assert order.index("description") < order.index("dependencies")
    assert schema["$defs"]["task_1"]["properties"]["dependencies"]["maxItems"] == 0
    assert schema["$defs"]["task_3"]["properties"]["dependencies"]["items"]["enum"] == [
        "task_1",
        "task_2",
    ]


def test_loose_schema_still_lets_repairable_plans_through() -> None:
    loose = jsonschema.Draft202012Validator(loose_plan_json_schema(AGENTS, 4))
    assert loose.is_valid({"tasks": [task(1, ["task_1"])]})


def test_repeated_dependencies_are_dropped_after_parsing() -> None:
    raw = json.dumps({"tasks": [task(1, []), task(2, ["task_1", "task_1"])]})
    assert _parse_plan_json(raw)[1]["dependencies"] == ["task_1"]
