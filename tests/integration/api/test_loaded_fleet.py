"""A loaded FleetConfig works wherever a fleet is accepted (issue: "File name too long")."""

from __future__ import annotations

from pathlib import Path

import pytest

from endpoints.config import FleetConfig
from graph import Context, Plan, arun_goal
from graph.persistence import make_checkpointer
from tests.helpers import pinned_task

pytestmark = pytest.mark.integration

PLAN = Plan(tasks=[pinned_task("t1", tokens=4, description="Say one word about hooks.")])


async def test_arun_goal_takes_a_loaded_fleet(embedded_fleet: FleetConfig) -> None:
    in_memory = embedded_fleet.model_copy(update={"source": ""})  # nothing to re-read
    result = await arun_goal("Hooks", plan=PLAN, fleet=in_memory, voice=False)
    assert [r.status for r in result.tasks] == ["completed"]


async def test_a_durable_run_saves_a_loaded_fleet(
    embedded_fleet: FleetConfig, tmp_path: Path
) -> None:
    context = Context(fleet=embedded_fleet, voice=False, synthesis_max_tokens=8)
    async with make_checkpointer(f"sqlite:///{tmp_path / 'c.sqlite'}") as saver:
        result = await arun_goal("Hooks", plan=PLAN, context=context, checkpointer=saver)
    assert result.thread_id and [r.status for r in result.tasks] == ["completed"]
