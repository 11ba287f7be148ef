"""A plan asking for more tokens than a slot's context: the cap is lowered, with a warning."""

from __future__ import annotations

from pathlib import Path

from graph import Plan, Task, arun_goal
from tests.fake_chat import FakeChat
from tests.helpers import offline_fleet


async def test_a_cap_beyond_the_context_is_lowered_and_named(
    tmp_path: Path, fresh_fleet_state: None
) -> None:
    path = str(offline_fleet(tmp_path, ctx=2048))
    chat = FakeChat().install(path)
    plan = Plan(
        tasks=[
            Task(id="huge", agent="coder", description="Write it all", max_tokens=5000),
            Task(id="small", agent="coder", description="Write a line", max_tokens=64),
        ],
        source="given",
    )

    result = await arun_goal("Write code", plan=plan, fleet=path, voice=False)

    sent = {c.task_id: c.settings["max_tokens"] for c in chat.calls_for(phase="task")}
    assert sent == {"huge": 1536, "small": 64}
    (warning,) = [w for w in result.warnings if "does not fit" in w]
    assert "task huge" in warning and "5000" in warning and "2048-token" in warning
    assert "fake-coder" in warning and "lowered to 1536" in warning
    assert all(t.status == "completed" for t in result.tasks)


async def test_an_agents_own_cap_is_checked_too(tmp_path: Path, fresh_fleet_state: None) -> None:
    path = str(offline_fleet(tmp_path, ctx=1024))
    chat = FakeChat().install(path)
    plan = Plan(tasks=[Task(id="t", agent="coder", description="Write it")], source="given")

    result = await arun_goal("Write code", plan=plan, fleet=path, voice=False)

    (call,) = chat.calls_for(phase="task")
    assert call.settings["max_tokens"] == 768  # 1024 - a quarter for the prompt
    assert any("agent coder's max_tokens 1024" in w for w in result.warnings)
