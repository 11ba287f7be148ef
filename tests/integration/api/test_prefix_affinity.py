"""Prefix-cache affinity on the embedded llama.cpp: a task returns to its agent's slot.

A chain researcher -> analyst -> researcher on the tools server (4 slots): the analyst
gets a slot no prefix used yet, the second researcher task goes back to the first one's
slot (``id_slot``), and the server serves the researcher's system prompt from that
slot's cache; the cached tokens are reported on the task's result and in the run metrics.
"""

from __future__ import annotations

import httpx
import pytest

from endpoints.config import FleetConfig
from graph import Plan, arun_goal
from graph.schemas import Task
from tests.helpers import FAST, pinned_task

pytestmark = pytest.mark.integration


def step(task_id: str, agent: str, deps: list[str] | None = None) -> Task:
    task = pinned_task(task_id, agent, deps, tokens=4, description=f"Step {task_id}: one word.")
    return task.model_copy(update={"tool_choice": "none"})


CHAIN = Plan(
    tasks=[step("a", "researcher"), step("b", "analyst", ["a"]), step("c", "researcher", ["b"])]
)


@pytest.mark.timeout(300)
async def test_a_task_returns_to_the_slot_that_holds_its_agents_prefix(
    embedded_fleet: FleetConfig, fresh_fleet_state: None
) -> None:
    result = await arun_goal("Name a bridge", plan=CHAIN, **FAST)
    a, b, c = (result.result(task_id) for task_id in ("a", "b", "c"))
    for r in (a, b, c):
        cached = f"cached {r.cached_prompt_tokens} of {r.prompt_tokens}"
        print(f"{r.task_id} {r.agent}: slot {r.slot}, {cached}")
    assert all(r.status == "completed" for r in (a, b, c)), result.tasks
    assert {r.endpoint for r in (a, b, c)} == {"embedded-tools"}
    assert a.slot == c.slot != b.slot

    # The server ran the last tools request on that very slot (our number is its id).
    tools_url = embedded_fleet.tiers["tools"].endpoints[0].base_url
    slots = httpx.get(f"{tools_url}/slots", timeout=5).json()
    latest = max((s for s in slots if s.get("id_task") is not None), key=lambda s: s["id_task"])
    assert latest["id"] == c.slot

    # The researcher's system prompt came from that slot's cache.
    assert c.cached_prompt_tokens > 20, c
    assert c.cached_prompt_tokens == sum(call.cached_prompt_tokens for call in c.calls)
    assert result.metrics.cached_prompt_tokens >= c.cached_prompt_tokens
    assert 0 < result.metrics.cached_prompt_share < 1
