"""Progress events survive the trip through LangGraph's ``custom`` stream (plain JSON)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from graph.events import (
    PhaseStarted,
    PlanReady,
    RunFinished,
    TaskFallback,
    TaskQueued,
    TaskStarted,
    TaskWaiting,
    parse_event,
)
from graph.schemas import Plan, RunMetrics, RunResult, Task
from tests.helpers import finished, task_result

PLAN = Plan(
    tasks=[
        Task(id="a", agent="researcher", description="look it up"),
        Task(id="b", agent="coder", description="write it", dependencies=["a"], max_tokens=8),
    ],
    warnings=["unknown agent 'x'"],
)
RESULT = task_result(
    "a",
    "researcher",
    output="found",
    endpoint="ep",
    slot=1,
    started_at=1.0,
    finished_at=2.5,
    latency_s=1.5,
)

EVENTS = [
    PlanReady(run_id="r", plan=PLAN, planner_s=0.25),
    TaskWaiting(run_id="r", task_id="b", agent="coder", waiting_on=["a"]),
    TaskQueued(run_id="r", task_id="a", agent="researcher", endpoint="ep", tier="tools"),
    TaskStarted(run_id="r", task_id="a", agent="researcher", endpoint="ep", tier="tools", slot=1),
    TaskFallback(run_id="r", task_id="b", failed_endpoint="ep-c", error="down", next_endpoint="ep"),
    finished("a", "researcher", endpoint="ep", slot=1, completion_tokens=3, latency_s=1.5),
    finished("b", "coder", "failed", error="all down"),
    PhaseStarted(run_id="r", phase="synthesizing", endpoint="ep"),
    RunFinished(
        run_id="r",
        result=RunResult(
            goal="g",
            answer="the answer",
            plan=PLAN,
            tasks=[RESULT],
            metrics=RunMetrics(tasks_total=2, peak_concurrency=1),
            run_id="r",
        ),
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_event_round_trips_through_json(event: object) -> None:
    data = event.model_dump(mode="json")  # type: ignore[attr-defined]
    wire = json.loads(json.dumps(data))  # what a langgraph_sdk client receives
    parsed = parse_event(wire)
    assert type(parsed) is type(event)
    assert parsed == event


def test_every_event_carries_run_id_and_time() -> None:
    for event in EVENTS:
        data = event.model_dump(mode="json")
        assert data["run_id"] == "r"
        assert data["at"] > 0
        assert data["kind"]


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValidationError):
        parse_event({"kind": "task_exploded", "run_id": "r"})


def test_missing_field_is_rejected() -> None:
    with pytest.raises(ValidationError):
        parse_event({"kind": "task_started", "run_id": "r", "task_id": "a"})
