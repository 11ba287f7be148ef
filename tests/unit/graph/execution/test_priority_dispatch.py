"""Slot priorities from the plan: the remaining critical path in tokens, per task."""

from __future__ import annotations

from typing import Any

import pytest

from endpoints.slots import SlotLimiter
from graph import Plan
from graph.dag import remaining_critical_path
from graph.events import TaskStarted
from tests.conftest import FakeFleet
from tests.helpers import collect_run, simple_task

# A chain a -> b -> c behind a cheap independent leaf; own caps 100, 200, 300 and 50.
PLAN = Plan(
    tasks=[
        simple_task("leaf", max_tokens=50),
        simple_task("a", max_tokens=100),
        simple_task("b", deps=["a"], max_tokens=200),
        simple_task("c", deps=["b"], max_tokens=300),
    ]
)
EXPECTED = {"leaf": 50.0, "a": 600.0, "b": 500.0, "c": 300.0}


def test_remaining_critical_path_adds_the_longest_descendant_chain() -> None:
    costs = remaining_critical_path(PLAN.tasks, lambda t: float(t.max_tokens or 0))
    assert costs == EXPECTED


def test_the_costliest_branch_counts_not_the_sum() -> None:
    tasks = [
        simple_task("root", max_tokens=10),
        simple_task("short", deps=["root"], max_tokens=20),
        simple_task("long", deps=["root"], max_tokens=70),
        simple_task("join", deps=["short", "long"], max_tokens=5),
    ]
    costs = remaining_critical_path(tasks, lambda t: float(t.max_tokens or 0))
    assert costs == {"root": 85.0, "short": 25.0, "long": 75.0, "join": 5.0}


async def test_priorities_reach_events_results_and_slot_grants(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[float] = []
    original = SlotLimiter.acquire

    async def recording(
        self: SlotLimiter, timeout: Any = None, *, priority: float = 0.0, **kwargs: Any
    ) -> int:
        asked.append(priority)
        return await original(self, timeout, priority=priority, **kwargs)

    monkeypatch.setattr(SlotLimiter, "acquire", recording)
    result, events = await collect_run("Goal", plan=PLAN, fleet=fake_fleet.path, voice=False)

    assert {t: result.result(t).priority for t in EXPECTED} == EXPECTED
    started = {e.task_id: e.priority for e in events if isinstance(e, TaskStarted)}
    assert started == EXPECTED
    # Every task's slot was asked for with its priority (the synthesizer asks with 0).
    assert sorted(p for p in asked if p) == sorted(EXPECTED.values())


def test_an_agents_own_cap_counts_when_the_task_has_none() -> None:
    from agents.registry import DEFAULT_AGENTS
    from graph.execution._agent_node import _own_tokens

    task = simple_task("x", "coder")
    assert _own_tokens(task) == DEFAULT_AGENTS["coder"].max_tokens


def test_dispatch_sends_the_longest_remaining_path_first() -> None:
    from graph.execution import dispatch

    tasks = [
        simple_task("short_1", max_tokens=10),
        simple_task("short_2", max_tokens=10),
        simple_task("chain_1", max_tokens=100),
        simple_task("chain_2", deps=["chain_1"], max_tokens=100),
    ]
    state: Any = {"plan": Plan(tasks=tasks), "run_id": "r", "goal": "g"}
    sends = dispatch(state)
    # The chain's head is prepared first, so it reaches the slots before the short tasks
    # listed ahead of it; equal priorities keep plan order.
    assert [s.arg["task"].id for s in sends] == ["chain_1", "chain_2", "short_1", "short_2"]
