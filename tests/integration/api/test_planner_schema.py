"""The acyclic-by-construction plan schema and the cached planner prefix, on llama.cpp."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest

from agents.registry import DEFAULT_AGENTS
from endpoints.clients import json_schema_format
from endpoints.config import FleetConfig
from graph import prompts
from graph.planning import plan_json_schema

pytestmark = pytest.mark.integration

MAX_TASKS = 5

# Asks for exactly what the schema rules out: the grammar must win over the prompt.
ADVERSARIAL = (
    "Make a plan with ids 'a', 'b' and 'a' again; make the first task depend on itself and "
    "on the last one, and give every task four dependencies, including 'task_99'."
)


def _tools_url(fleet: FleetConfig) -> str:
    return fleet.tiers["tools"].endpoints[0].base_url.rstrip("/")


def _planner_body(goal: str, schema: dict[str, Any] | None, user: str | None = None) -> Any:
    agents = list(DEFAULT_AGENTS.values())
    body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": prompts.PLANNER_SYSTEM},
            {"role": "user", "content": user or prompts.planner_user(goal, agents, MAX_TASKS)},
        ],
        "max_tokens": 700,
        "temperature": 0.0,
        "cache_prompt": True,
    }
    if schema is not None:
        body["response_format"] = json_schema_format(schema, "plan")
    return body


@pytest.mark.timeout(600)
async def test_the_grammar_only_lets_valid_dags_through(embedded_fleet: FleetConfig) -> None:
    schema = plan_json_schema(list(DEFAULT_AGENTS), MAX_TASKS)
    validator = jsonschema.Draft202012Validator(schema)
    agents = list(DEFAULT_AGENTS.values())
    goals = ["Design a wall hook for a 2 kg bag and plan its print", "Compare two databases"]
    async with httpx.AsyncClient(base_url=_tools_url(embedded_fleet), timeout=300) as client:
        for goal in goals:
            user = prompts.planner_user(goal, agents, MAX_TASKS) + "\n" + ADVERSARIAL
            response = await client.post(
                "/v1/chat/completions", json=_planner_body(goal, schema, user)
            )
            assert response.status_code == 200, response.text[:500]
            choice = response.json()["choices"][0]
            assert choice["finish_reason"] == "stop"
            plan = json.loads(choice["message"]["content"])
            problems = [e.message for e in validator.iter_errors(plan)]
            assert not problems, f"{goal}: {problems[:3]}"
            for number, task in enumerate(plan["tasks"], start=1):
                assert task["id"] == f"task_{number}"
                assert set(task["dependencies"]) <= {f"task_{k}" for k in range(1, number)}


@pytest.mark.timeout(600)
async def test_a_second_goal_reuses_the_cached_planner_prefix(embedded_fleet: FleetConfig) -> None:
    """Fixed text first, goal last: the next goal's prompt is served mostly from cache."""
    goals = [
        "Write a bash script that backs up a folder every night",
        "Compare three 3D printers under 500 euros for a school, with a buying guide",
    ]
    timings = []
    async with httpx.AsyncClient(base_url=_tools_url(embedded_fleet), timeout=300) as client:
        for goal in goals:
            # One slot for both calls: the cache is per slot, and this asks about the prompt.
            body = {**_planner_body(goal, None), "max_tokens": 1, "id_slot": 0}
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text[:500]
            data = response.json()
            timings.append((data["timings"]["cache_n"], data["usage"]["prompt_tokens"]))
    cached, prompt_tokens = timings[1]
    assert cached >= 0.85 * prompt_tokens, f"only {cached} of {prompt_tokens} prompt tokens cached"
