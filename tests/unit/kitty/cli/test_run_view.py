"""``kitty-orch run`` pieces that need no server: plan files, settings, the live view."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from graph import (
    Plan,
    PlanReady,
    TaskFallback,
    TaskQueued,
    TaskStarted,
    TaskWaiting,
)
from kitty.cli._inputs import PlanFileError, load_plan_file, parse_settings
from kitty.cli._render import RunScreen
from kitty.cli._view import RunView
from tests.helpers import finished, simple_task

PLAN = Plan(
    tasks=[
        simple_task("task_1", "researcher"),
        simple_task("task_2", "coder"),
        simple_task("task_3", "reasoner", ["task_1", "task_2"]),
    ],
    source="given",
)
AGENTS = {task.id: task.agent for task in PLAN.tasks}


def queued(task_id: str, endpoint: str, tier: str, at: float) -> TaskQueued:
    """``task_id`` (of :data:`PLAN`) queued for ``endpoint``."""
    return TaskQueued(
        run_id="r", task_id=task_id, agent=AGENTS[task_id], endpoint=endpoint, tier=tier, at=at
    )


def started(task_id: str, endpoint: str, tier: str, slot: int, at: float) -> TaskStarted:
    """``task_id`` (of :data:`PLAN`) running on ``endpoint`` slot ``slot``."""
    return TaskStarted(
        run_id="r",
        task_id=task_id,
        agent=AGENTS[task_id],
        endpoint=endpoint,
        tier=tier,
        slot=slot,
        at=at,
    )


def render(view: RunView) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(RunScreen(view))
    return console.export_text()


def test_plan_file_with_goal(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    data = {"goal": "hook", "tasks": [t.model_dump() for t in PLAN.tasks]}
    path.write_text(json.dumps(data), encoding="utf-8")
    plan, goal = load_plan_file(path)
    assert goal == "hook"
    assert [t.id for t in plan.tasks] == ["task_1", "task_2", "task_3"]
    assert plan.source == "given"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[]", 'must hold a JSON object {"tasks": [...]}; found list'),
        ('{"task": []}', "found an object without a 'tasks' list"),
        ('{"tasks": [{"id": "a", "agent": "coder"}]}', "tasks.0.description: Field required"),
        ('{"tasks": [{"id": "a", "agent": "coder", "description": "d", "x": 1}]}', "tasks.0.x"),
        (
            '{"tasks": [{"id": "a", "agent": "coder", "description": "d", "dependencies": ["a"]}]}',
            "depends on itself",
        ),
        ("{oops", "is not valid JSON: Expecting property name"),
    ],
)
def test_plan_file_errors_name_the_file_and_the_problem(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PlanFileError) as caught:
        load_plan_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert problem in message
    assert "\n" not in message


def test_settings_are_typed_context_fields() -> None:
    assert parse_settings(["synthesis_max_tokens=32", "task-timeout-s=2.5"]) == {
        "synthesis_max_tokens": 32,
        "task_timeout_s": 2.5,
    }
    assert parse_settings(["run_deadline_s=none", "skip_failed_dependents=true"]) == {
        "run_deadline_s": None,
        "skip_failed_dependents": True,
    }


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ("synthesis_max_tokens", "write NAME=VALUE"),
        ("nope=1", "unknown setting"),
        ("fleet=x", "unknown setting"),  # has its own option
        ("approve_plan=true", "unknown setting"),  # would wait for an answer nobody gives
        ("synthesis_max_tokens=lots", "synthesis_max_tokens=lots: input should be a valid"),
    ],
)
def test_bad_settings_say_what_is_wrong(item: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        parse_settings([item])


def test_view_follows_the_events() -> None:
    view = RunView(goal="hook", started=1000.0)
    view.apply(PlanReady(run_id="r", plan=PLAN, planner_s=0.1, at=1000.5))
    view.apply(queued("task_1", "ep-a", "tools", at=1001))
    view.apply(started("task_1", "ep-a", "tools", slot=1, at=1001))
    view.apply(queued("task_2", "ep-b", "coder", at=1001))
    view.apply(
        TaskWaiting(
            run_id="r", task_id="task_3", agent="reasoner", waiting_on=["task_1", "task_2"], at=1001
        )
    )
    view.ended_at = 1003.0
    text = render(view)
    assert "running" in text and "ep-a #1" in text
    assert "queued" in text and "ep-b" in text
    assert "waiting on task_1, task_2" in text

    view.apply(
        finished(
            "task_1",
            "researcher",
            endpoint="ep-a",
            slot=1,
            prompt_tokens=10,
            completion_tokens=5,
            latency_s=2.0,
            at=1003,
        )
    )
    view.apply(
        TaskFallback(
            run_id="r",
            task_id="task_2",
            failed_endpoint="ep-b",
            error="down",
            next_endpoint="ep-a",
            at=1003,
        )
    )
    view.apply(queued("task_2", "ep-a", "tools", at=1003))
    text = render(view)
    assert "waiting on task_2" in text  # task_1 is done
    assert "fell back from ep-b" in text
    assert "10→5" in text
    assert "task tokens 10→5" in text
    assert view.warnings == ["task_2: ep-b failed (down); trying ep-a"]


def test_partial_result_after_cancel_keeps_finished_tasks() -> None:
    view = RunView(goal="hook", started=1000.0)
    view.apply(PlanReady(run_id="r", plan=PLAN, planner_s=0.1, at=1000.5))
    view.apply(started("task_1", "ep-a", "tools", slot=0, at=1001))
    view.apply(
        finished(
            "task_1",
            "researcher",
            endpoint="ep-a",
            slot=0,
            completion_tokens=5,
            latency_s=2.0,
            at=1003,
        )
    )
    view.apply(started("task_2", "ep-b", "coder", slot=0, at=1001))
    view.mark_cancelled()
    assert view.tasks["task_2"].state == "cancelled"
    result = view.partial_result()
    assert result is not None
    statuses = {t.task_id: (t.status, t.error) for t in result.tasks}
    assert statuses["task_1"] == ("completed", None)
    assert statuses["task_2"][0] == "failed"
    assert "cancelled" in (statuses["task_2"][1] or "")  # None would fail it too
    assert result.metrics.tasks_completed == 1
    assert "cancelled (Ctrl-C)" in render(view)


def test_no_partial_result_before_a_plan() -> None:
    assert RunView(goal="hook").partial_result() is None


def test_a_task_running_a_tool_shows_the_tool_and_holds_no_slot() -> None:
    from graph import TaskToolCall
    from kitty.cli._render import event_line

    view = RunView("hook")
    view.set_plan(PLAN, 0.0)
    view.apply(started("task_1", "tools-a", "tools", 0, 1.0))
    call = TaskToolCall(
        run_id="r",
        task_id="task_1",
        agent="researcher",
        tool="web_search",
        phase="started",
        args={"query": "hooks"},
        at=1.5,
    )
    view.apply(call)
    task = view.tasks["task_1"]
    assert task.state == "tool" and task.tool == "web_search" and task.slot is None
    assert "tool web_search" in render(view)
    assert 'tool web_search {"query": "hooks"}' in (event_line(view, call) or "")
    done = call.model_copy(update={"phase": "finished", "ok": True, "seconds": 0.4})
    view.apply(done)
    assert task.state == "queued" and task.tool is None and task.tool_calls == 1
    assert "web_search ok in 0.4 s" in (event_line(view, done) or "")
