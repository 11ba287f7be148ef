"""The schema-constrained planner on SmolLM2-135M: every goal gets a usable plan."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest

from agents.registry import DEFAULT_AGENTS
from endpoints.config import FleetConfig
from graph._node_support import prepare_fleet
from graph.context import Context
from graph.dag import find_cycle
from graph.planning import make_plan, plan_json_schema
from graph.schemas import Plan

pytestmark = pytest.mark.integration

# Four tasks keep plans (and the test) short; the schema caps the planner at this.
MAX_TASKS = 4

GOALS = [
    # fabrication / CAD
    "Design a wall hook for a 2 kg bag and plan its 3D print",
    "Make a parametric phone stand and choose a filament for it",
    "Print a replacement knob for my oven in heat-resistant material",
    "Model a cable organizer for a desk and estimate the print time",
    "Create a vase with an organic shape that prints without supports",
    # code
    "Write a Python script that renames photos by the date they were taken",
    "Implement a rate limiter in TypeScript with unit tests",
    "Write CadQuery code for a 40 mm cube with a 10 mm hole",
    "Refactor a slow SQL query and explain the index it needs",
    "Build a command-line tool that converts CSV files to JSON",
    # research / analysis
    "Compare heat pumps and gas boilers for a small flat",
    "Summarize the history of the printing press",
    "Explain how vaccines train the immune system",
    "Analyze the monthly costs of running a home 3D print farm",
    # vision
    "Look at this photo of a failed print and say what went wrong",
    "Inspect a CAD screenshot for walls that are too thin to print",
    "Check the camera snapshot of the printer bed for spaghetti failures",
    # mixed
    "Research PETG properties, design a bracket and write its OpenSCAD code",
    "Review a print failure photo, fix the model and reslice it",
    "Estimate the cost of a custom drone frame, design it and list the parts",
]


@pytest.fixture(scope="module")
def context(embedded_fleet: FleetConfig) -> Context:
    return Context(fleet="embedded", max_tasks=MAX_TASKS, voice=False)


REPAIR_KINDS = {
    "depended on itself": "self dependency",
    "unknown dependency": "unknown dependency",
    "closed a cycle": "cycle edge",
    "unknown agent": "unknown agent",
    "duplicate task id": "duplicate id",
    "over max_tasks": "over max_tasks",
    "no description": "no description",
}


def repair_kind(warning: str) -> str:
    return next((kind for key, kind in REPAIR_KINDS.items() if key in warning), "other")


def check_raw(text: str, schema: dict[str, Any]) -> list[str]:
    """Problems of the planner's raw JSON against its schema (empty list: valid)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is a dev dependency
        return _check_by_hand(data, schema)
    validator = jsonschema.Draft202012Validator(schema)
    return [e.message for e in validator.iter_errors(data)]


def _check_by_hand(data: Any, schema: dict[str, Any]) -> list[str]:
    items = schema["properties"]["tasks"]["items"]
    agents = set(items["properties"]["agent"]["enum"])
    if not isinstance(data, dict) or set(data) != {"tasks"} or not data["tasks"]:
        return ["expected {'tasks': [...]} with at least one task"]
    problems = []
    for task in data["tasks"]:
        if not isinstance(task, dict) or set(task) != set(items["required"]):
            problems.append(f"bad task keys: {task}")
        elif task["agent"] not in agents:
            problems.append(f"unknown agent {task['agent']}")
    return problems


# Every third goal (7 plans of ~150-300 tokens on one 4-slot server, about a minute under
# CI load): a spread of domains; `kitty-orch bench planner` runs the whole 30-goal set.
CI_GOALS = GOALS[::3]


@pytest.mark.timeout(900)
async def test_planner_plans_a_spread_of_goals(context: Context) -> None:
    fleet_runtime = await prepare_fleet(context)
    schema = plan_json_schema(list(DEFAULT_AGENTS), MAX_TASKS)
    outcomes = await asyncio.gather(*(make_plan(g, context, fleet_runtime) for g in CI_GOALS))

    invalid: list[str] = []
    sizes: list[int] = []
    repairs: list[str] = []
    for goal, (plan, outcome) in zip(CI_GOALS, outcomes, strict=True):
        assert isinstance(plan, Plan)
        assert outcome is not None and outcome.ok, f"{goal}: planner call failed"
        assert plan.source == "planner", f"{goal}: fell back ({plan.warnings})"
        problems = check_raw(outcome.text, schema)
        if problems:
            invalid.append(f"{goal}: {problems[:3]}")
        assert find_cycle(plan.tasks) is None
        assert 1 <= len(plan.tasks) <= MAX_TASKS
        assert {t.agent for t in plan.tasks} <= set(DEFAULT_AGENTS)
        ids = [t.id for t in plan.tasks]
        assert len(ids) == len(set(ids))
        seen: set[str] = set()
        for task in plan.tasks:  # topological: dependencies come first
            assert set(task.dependencies) <= seen
            seen.add(task.id)
        sizes.append(len(plan.tasks))
        repairs.extend(repair_kind(w) for w in plan.warnings)
    summary = (
        f"planner: {len(CI_GOALS)} goals, {len(CI_GOALS) - len(invalid)} schema-valid, "
        f"mean tasks {sum(sizes) / len(sizes):.2f}, repairs {len(repairs)} "
        f"{dict(Counter(repairs).most_common())}"
    )
    print(summary)
    assert not invalid, "raw planner output broke its schema:\n" + "\n".join(invalid)
