"""A planner answer cut at its token cap: one retry with more room and fewer tasks, then the
whole tasks are kept (never a keyword plan or a PlanError)."""

from __future__ import annotations

import json

from endpoints.fleet import get_runtime
from graph import Context
from graph.planning import make_plan
from graph.planning._salvage import complete_tasks, retry_budget
from tests.conftest import FakeFleet
from tests.fake_chat import Reply

TASKS = [
    {"id": "task_1", "agent": "researcher", "description": "Find the facts.", "dependencies": []},
    {"id": "task_2", "agent": "coder", "description": "Write the code.", "dependencies": []},
    {
        "id": "task_3",
        "agent": "analyst",
        "description": "Compare both.",
        "dependencies": ["task_1", "task_2"],
    },
]


def cut(tasks: list[dict], keep_chars: int = 25) -> str:
    """The answer's JSON cut inside its last task, as a capped grammar answer is."""
    text = json.dumps({"tasks": tasks})
    last = json.dumps(tasks[-1])
    return text[: text.rindex(last) + keep_chars]


def test_complete_tasks_keeps_every_whole_task_before_the_cut() -> None:
    assert complete_tasks(cut(TASKS)) == TASKS[:2]
    assert complete_tasks(json.dumps({"tasks": TASKS})) == TASKS
    assert complete_tasks('{"tasks": [{"id": "task_1", "agent"') == []
    assert complete_tasks("") == []


def test_the_retry_doubles_the_cap_and_asks_for_what_fitted() -> None:
    assert retry_budget(1024, 6, 4) == (2048, 4)
    assert retry_budget(1024, 6, 0) == (2048, 2)  # still room to fan out
    assert retry_budget(512, 1, 0) == (1024, 1)


async def test_a_cut_plan_is_asked_again_with_more_room_and_fewer_tasks(
    fake_fleet: FakeFleet,
) -> None:
    chat = fake_fleet.chat
    whole = json.dumps({"tasks": TASKS[:2]})
    chat.script(Reply(cut(TASKS), finish_reason="length"), Reply(whole), phase="planner")
    context = Context(fleet=fake_fleet.path, max_tasks=6, voice=False, planner_max_tokens=300)

    plan, _ = await make_plan("Research and code it", context, get_runtime(fake_fleet.path))

    first, second = chat.calls_for(phase="planner")
    assert first.settings["max_tokens"] == 300
    assert second.settings["max_tokens"] == 600
    first_schema = first.bound["response_format"]["json_schema"]["schema"]
    second_schema = second.bound["response_format"]["json_schema"]["schema"]
    assert first_schema["properties"]["tasks"]["maxItems"] == 6
    assert second_schema["properties"]["tasks"]["maxItems"] == 2
    assert [t.id for t in plan.tasks] == ["task_1", "task_2"]
    assert plan.source == "planner"


async def test_cut_twice_keeps_the_whole_tasks_with_a_warning(fake_fleet: FakeFleet) -> None:
    chat = fake_fleet.chat
    chat.script(Reply(cut(TASKS), finish_reason="length"), phase="planner", repeat=True)
    context = Context(fleet=fake_fleet.path, max_tasks=6, voice=False, planner_max_tokens=300)

    plan, _ = await make_plan("Research and code it", context, get_runtime(fake_fleet.path))

    assert len(chat.calls_for(phase="planner")) == 2
    assert [(t.id, t.agent) for t in plan.tasks] == [("task_1", "researcher"), ("task_2", "coder")]
    assert plan.source == "planner"  # not the keyword fallback
    assert any("cut at its token cap twice" in w and "2 whole task" in w for w in plan.warnings)
