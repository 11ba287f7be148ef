"""Progress lines of the OpenAI door's ``reasoning_content``: one short line per step."""

from __future__ import annotations

from graph import (
    PhaseStarted,
    Plan,
    PlanReady,
    TaskFallback,
    TaskFinished,
    TaskQueued,
    TaskResult,
    TaskStarted,
    TaskToolCall,
    TaskWaiting,
)
from kitty.service._openai_progress import progress_line
from tests.helpers import simple_task


def test_the_plan_names_each_task_its_agent_and_what_it_waits_for() -> None:
    plan = Plan(tasks=[simple_task("a"), simple_task("b", "coder", deps=["a"])])

    text = progress_line(PlanReady(run_id="r", plan=plan, planner_s=1.25))

    assert text == (
        "Plan in 1.2 s: 2 tasks\n"
        "- a researcher: Do step a of the job.\n"
        "- b coder (after a): Do step b of the job.\n"
    )


def test_task_lines_say_where_how_long_and_how_it_ended() -> None:
    started = TaskStarted(
        run_id="r", task_id="a", agent="coder", endpoint="big", tier="coder", slot=2
    )
    done = TaskResult(
        task_id="a",
        agent="coder",
        status="completed",
        started_at=100.0,
        finished_at=103.5,
        completion_tokens=42,
        truncated=True,
    )
    failed = TaskResult(task_id="b", agent="analyst", status="failed", error="x" * 500)

    assert progress_line(started) == "a coder started on big #2\n"
    assert progress_line(TaskFinished(run_id="r", result=done)) == (
        "a coder completed in 3.5 s, 42 tokens, 0 tool calls, cut at its token cap\n"
    )
    line = progress_line(TaskFinished(run_id="r", result=failed))
    assert line is not None and line.startswith("b analyst failed: xxx")
    assert len(line) < 140 and line.endswith("...\n")  # a long error stays one short line


def test_fallbacks_and_tool_calls_get_a_line_each() -> None:
    fallback = TaskFallback(
        run_id="r", task_id="a", failed_endpoint="big", error="refused", next_endpoint="small"
    )
    call = {"run_id": "r", "task_id": "a", "agent": "researcher", "tool": "web_search"}

    assert progress_line(fallback) == "a: big failed (refused); trying small\n"
    assert progress_line(TaskToolCall(**call, phase="started")) == (
        "a researcher calls web_search\n"
    )
    assert progress_line(TaskToolCall(**call, phase="finished", ok=True, seconds=0.42)) == (
        "a web_search answered in 0.4 s\n"
    )
    assert progress_line(TaskToolCall(**call, phase="finished", error="timeout")) == (
        "a web_search failed: timeout\n"
    )
    refused = TaskToolCall(**call, phase="finished", refused=True, error="not offered")
    assert progress_line(refused) == "a web_search refused: not offered\n"


def test_waiting_queued_and_the_summary_phase_get_no_line() -> None:
    assert progress_line(TaskWaiting(run_id="r", task_id="a", agent="x", waiting_on=[])) is None
    queued = TaskQueued(run_id="r", task_id="a", agent="x", endpoint="e", tier="t")
    assert progress_line(queued) is None
    assert progress_line(PhaseStarted(run_id="r", phase="summarizing")) is None
    assert progress_line(PhaseStarted(run_id="r", phase="planning")) == "Planning...\n"
