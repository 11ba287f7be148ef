"""Graph logic with a fake chat model: plans, dependencies, fallback, failures, events.

No server runs: the fleet's endpoints sit on loopback ports where nothing listens and
every model call is answered by :class:`tests.fake_chat.FakeChat` (the ``fake_fleet``
fixture). Endpoints are ``fake-<tier>`` with 2 slots; agents keep their real tiers
(researcher: tools -> reasoning, vision_analyst: vision only, ...).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import graph.execution._agent_node
from agents.registry import DEFAULT_AGENTS
from endpoints.fleet import get_runtime
from graph import Context, Plan, PlanError, Task, arun_goal
from graph.events import PhaseStarted, TaskFallback, TaskFinished, TaskStarted, TaskWaiting
from graph.planning import make_plan
from graph.prompts import agent_system
from tests.conftest import FakeFleet
from tests.fake_chat import FakeCall, Reply, http_error
from tests.helpers import collect_run, simple_task

FAST: dict[str, Any] = {"voice": False}


def only(calls: list[FakeCall]) -> FakeCall:
    assert len(calls) == 1, [(c.phase, c.task_id, c.endpoint.name) for c in calls]
    return calls[0]


def index_of(events: list[Any], kind: type, task_id: str | None = None) -> int:
    return next(
        i
        for i, e in enumerate(events)
        if isinstance(e, kind) and (task_id is None or getattr(e, "task_id", None) == task_id)
    )


# --------------------------------------------------------------------------- dependencies


async def test_a_dependent_is_sent_its_dependencies_outputs(fake_fleet: FakeFleet) -> None:
    chat = fake_fleet.chat
    chat.script(Reply("alpha facts", delay_s=0.05), task="a")
    chat.script(Reply("beta code", delay_s=0.1), task="b")
    plan = Plan(
        tasks=[
            simple_task("a"),
            simple_task("b", "coder"),
            simple_task("c", "reasoner", ["a", "b"]),
        ]
    )

    result = await arun_goal("Build a shelf", plan=plan, fleet=fake_fleet.path, **FAST)

    assert [r.status for r in result.tasks] == ["completed"] * 3
    a, b, c = (only(chat.calls_for(task=t)) for t in "abc")
    assert "### a (researcher)\nalpha facts" in c.prompt
    assert "### b (coder)\nbeta code" in c.prompt
    assert "Do step c of the job." in c.prompt and "Build a shelf" in c.prompt
    assert "alpha facts" not in b.prompt  # b does not depend on a
    assert a.finished_at is not None and b.finished_at is not None
    assert c.started_at >= max(a.finished_at, b.finished_at)
    assert result.result("c").output == "output of c"
    synthesis = only(chat.calls_for(phase="synthesizer"))
    for block in ("### a (researcher)\nalpha facts", "### c (reasoner)\noutput of c"):
        assert block in synthesis.prompt
    assert result.answer == "final answer"


async def test_a_task_runs_beside_a_slow_sibling_not_after_it(fake_fleet: FakeFleet) -> None:
    """No superstep barrier: a chain advances while an unrelated task still runs."""
    chat = fake_fleet.chat
    chat.script(Reply("long", delay_s=0.8), task="long")
    plan = Plan(
        tasks=[
            simple_task("long"),
            simple_task("a", "coder"),
            simple_task("b", "reasoner", ["a"]),
            simple_task("c", "analyst", ["b"]),
        ]
    )
    result = await arun_goal("Chain", plan=plan, fleet=fake_fleet.path, **FAST)

    assert [r.status for r in result.tasks] == ["completed"] * 4
    long_call = only(chat.calls_for(task="long"))
    assert long_call.finished_at is not None
    for step in "bc":
        assert only(chat.calls_for(task=step)).started_at < long_call.finished_at, step


async def test_the_slot_limiter_caps_calls_per_endpoint(fake_fleet: FakeFleet) -> None:
    fake_fleet.chat.script(Reply("done", delay_s=0.05), phase="task", repeat=True)
    plan = Plan(tasks=[simple_task(f"r{i}") for i in range(6)])  # all on fake-tools (2 slots)

    result = await arun_goal("Burst", plan=plan, fleet=fake_fleet.path, **FAST)

    assert [r.endpoint for r in result.tasks] == ["fake-tools"] * 6
    assert fake_fleet.chat.peak_in_flight["fake-tools"] == 2
    assert sum(r.queued_s > 0.02 for r in result.tasks) >= 3  # the rest waited for a slot
    assert {r.slot for r in result.tasks} == {0, 1}


async def test_agent_settings_and_usage_flow_through(fake_fleet: FakeFleet) -> None:
    chat = fake_fleet.chat
    chat.script(Reply("code", input_tokens=11, output_tokens=5), task="a")
    plan = Plan(
        tasks=[simple_task("a", "coder", extra={"top_k": 5}), simple_task("b", max_tokens=42)]
    )

    result = await arun_goal(
        "Settings",
        plan=plan,
        fleet=fake_fleet.path,
        task_timeout_s=7,
        thinking="high",
        synthesis_max_tokens=99,
        **FAST,
    )

    coder, researcher = DEFAULT_AGENTS["coder"], DEFAULT_AGENTS["researcher"]
    built_a = only(chat.calls_for(task="a"))
    assert built_a.endpoint.name == "fake-coder"
    assert built_a.settings == {
        "temperature": coder.temperature,
        "max_tokens": coder.max_tokens,
        "thinking": None,
        "extra": {"top_k": 5},
        "timeout_s": 7,
    }
    assert built_a.system == agent_system(coder.system_prompt, [])
    built_b = only(chat.calls_for(task="b"))
    assert (built_b.settings["temperature"], built_b.settings["max_tokens"]) == (
        researcher.temperature,
        42,
    )
    synthesis = only(chat.calls_for(phase="synthesizer"))
    assert synthesis.endpoint.name == "fake-reasoning"
    assert (synthesis.settings["thinking"], synthesis.settings["max_tokens"]) == ("high", 99)

    a = result.result("a")
    assert (a.prompt_tokens, a.completion_tokens) == (11, 5)
    assert (a.endpoint, a.model, a.attempts) == ("fake-coder", "smollm2-fake-coder", ["fake-coder"])
    assert result.metrics.completion_tokens >= 5 + result.result("b").completion_tokens


# --------------------------------------------------------------------------- failures


async def test_a_down_primary_falls_back_to_the_next_tier(fake_fleet: FakeFleet) -> None:
    fake_fleet.chat.fail(endpoint="fake-tools", phase="task")

    result, events = await collect_run(
        "Fallback", plan=Plan(tasks=[simple_task("r")]), fleet=fake_fleet.path, **FAST
    )

    r = result.result("r")
    assert r.status == "completed" and r.output == "output of r"
    assert r.fallback_used and r.endpoint == "fake-reasoning"
    assert r.attempts == ["fake-tools", "fake-reasoning"]
    (fallback,) = [e for e in events if isinstance(e, TaskFallback)]
    assert (fallback.failed_endpoint, fallback.next_endpoint) == ("fake-tools", "fake-reasoning")
    assert "cannot connect" in fallback.error
    starts = [(e.endpoint, e.fallback) for e in events if isinstance(e, TaskStarted)]
    assert starts == [("fake-tools", False), ("fake-reasoning", True)]
    assert result.metrics.fallbacks == 1


async def test_an_endpoint_that_keeps_failing_fails_only_its_task(
    fake_fleet: FakeFleet,
) -> None:
    chat = fake_fleet.chat
    chat.fail(endpoint="fake-vision")  # vision_analyst has no fallback tier
    plan = Plan(
        tasks=[
            simple_task("look", "vision_analyst"),
            simple_task("res"),
            simple_task("use", "analyst", ["look"]),
            simple_task("twin", "analyst"),
        ]
    )
    result = await arun_goal("Inspect", plan=plan, fleet=fake_fleet.path, **FAST)

    look = result.result("look")
    assert look.status == "failed" and look.output == ""
    assert look.error and "fake-vision" in look.error and "cannot connect" in look.error
    assert look.attempts == ["fake-vision"] and not look.fallback_used
    assert [result.result(t).status for t in ("res", "use", "twin")] == ["completed"] * 3
    # The dependent ran, told that its input failed and why.
    use = only(chat.calls_for(task="use"))
    assert f"### look (vision_analyst) FAILED: {look.error}" in use.prompt
    assert "FAILED" not in only(chat.calls_for(task="twin")).prompt
    # The synthesizer names the failed task; the answer is still written.
    synthesis = only(chat.calls_for(phase="synthesizer"))
    assert "## Failed tasks" in synthesis.prompt
    assert f"- look (vision_analyst) FAILED: {look.error}" in synthesis.prompt
    assert result.answer == "final answer"
    assert (result.metrics.tasks_completed, result.metrics.tasks_failed) == (3, 1)


@pytest.mark.parametrize(
    ("status", "attempts", "outcome"),
    [
        (400, ["fake-tools"], "failed"),  # another server would refuse it too
        (500, ["fake-tools", "fake-reasoning"], "completed"),
    ],
)
async def test_only_endpoint_failures_move_to_the_fallback_tier(
    fake_fleet: FakeFleet, status: int, attempts: list[str], outcome: str
) -> None:
    fake_fleet.chat.fail(endpoint="fake-tools", phase="task", error=http_error(status))

    result, events = await collect_run(
        "Errors", plan=Plan(tasks=[simple_task("r")]), fleet=fake_fleet.path, **FAST
    )

    r = result.result("r")
    assert (r.status, r.attempts) == (outcome, attempts)
    assert sum(isinstance(e, TaskFallback) for e in events) == len(attempts) - 1
    if outcome == "failed":
        assert r.error and "request rejected" in r.error


async def test_a_slow_endpoint_times_out_and_the_next_tier_answers(
    fake_fleet: FakeFleet,
) -> None:
    fake_fleet.chat.script(Reply("late", delay_s=30), endpoint="fake-tools", phase="task")
    started = time.perf_counter()

    result, events = await collect_run(
        "Slow",
        plan=Plan(tasks=[simple_task("r")]),
        fleet=fake_fleet.path,
        task_timeout_s=0.3,
        **FAST,
    )

    assert time.perf_counter() - started < 10
    r = result.result("r")
    assert r.status == "completed" and r.endpoint == "fake-reasoning" and r.output != "late"
    (fallback,) = [e for e in events if isinstance(e, TaskFallback)]
    assert "no answer within the timeout" in fallback.error


async def test_a_crash_inside_a_task_never_takes_down_the_run(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = graph.execution._agent_node.run_task

    async def crashing(current: Task, *args: Any, **kwargs: Any) -> Any:
        if current.id == "boom":
            raise RuntimeError("bug in the agent code")
        return await original(current, *args, **kwargs)

    monkeypatch.setattr(graph.execution._agent_node, "run_task", crashing)
    fake_fleet.chat.script(Reply("slow sibling", delay_s=0.2), task="sibling")
    plan = Plan(
        tasks=[
            simple_task("boom"),
            simple_task("sibling", "coder"),
            simple_task("after", deps=["boom"]),
        ]
    )

    result = await arun_goal("Crash", plan=plan, fleet=fake_fleet.path, **FAST)

    boom = result.result("boom")
    assert boom.status == "failed"
    assert boom.error == "internal error: RuntimeError: bug in the agent code"
    assert result.result("sibling").output == "slow sibling"  # not cancelled by the crash
    assert result.result("after").status == "completed"
    assert result.answer == "final answer"


async def test_a_failed_synthesis_still_answers_with_the_results(fake_fleet: FakeFleet) -> None:
    fake_fleet.chat.fail(phase="synthesizer")
    plan = Plan(tasks=[simple_task("a"), simple_task("b", "coder")])

    result = await arun_goal("Merge", plan=plan, fleet=fake_fleet.path, **FAST)

    assert result.answer.startswith("(Synthesis failed: all endpoints failed")
    assert "## a (researcher)\noutput of a" in result.answer
    assert "## b (coder)\noutput of b" in result.answer
    attempts = [c.endpoint.name for c in fake_fleet.chat.calls_for(phase="synthesizer")]
    assert attempts == ["fake-reasoning", "fake-tools"]
    assert any(w.startswith("synthesis failed:") for w in result.warnings)


# --------------------------------------------------------------------------- planner


def planner_context(fake_fleet: FakeFleet, max_tasks: int = 4) -> Context:
    return Context(fleet=fake_fleet.path, max_tasks=max_tasks, voice=False)


async def test_the_planner_call_is_schema_bound_and_its_json_repaired(
    fake_fleet: FakeFleet,
) -> None:
    raw = {
        "tasks": [
            {"id": "task_1", "agent": "web researcher", "description": "Find the facts.",
             "dependencies": ["task_9"]},
            {"id": "task_2", "agent": "analyst", "description": "Weigh the facts.",
             "dependencies": ["task_1"]},
        ]
    }  # fmt: skip
    fake_fleet.chat.script(json.dumps(raw), phase="planner")
    context = planner_context(fake_fleet)

    plan, outcome = await make_plan("Plan a trip", context, get_runtime(fake_fleet.path))

    assert [(t.id, t.agent, t.dependencies) for t in plan.tasks] == [
        ("task_1", "researcher", []),
        ("task_2", "analyst", ["task_1"]),
    ]
    assert any("unknown agent 'web researcher'" in w for w in plan.warnings)
    assert any("unknown dependency 'task_9'" in w for w in plan.warnings)
    assert outcome is not None and outcome.endpoint == "fake-tools"
    call = only(fake_fleet.chat.calls_for(phase="planner"))
    assert "Plan a trip" in call.prompt
    assert call.settings["max_tokens"] == context.planner_max_tokens
    response_format = call.bound["response_format"]
    assert response_format["type"] == "json_schema"  # llama.cpp's nested form
    schema = response_format["json_schema"]["schema"]
    assert schema["properties"]["tasks"]["maxItems"] == 4
    agent_enum = schema["$defs"]["task_1"]["properties"]["agent"]["enum"]
    assert agent_enum == list(DEFAULT_AGENTS)


async def test_unusable_planner_output_is_asked_again_then_an_error(
    fake_fleet: FakeFleet,
) -> None:
    chat = fake_fleet.chat
    runtime = get_runtime(fake_fleet.path)
    one_task = {"tasks": [{"id": "task_1", "agent": "coder", "description": "Write it.",
                           "dependencies": []}]}  # fmt: skip
    chat.script("Sure! First research, then design.", json.dumps(one_task), phase="planner")
    plan, _ = await make_plan("Code it", planner_context(fake_fleet), runtime)
    assert [t.agent for t in plan.tasks] == ["coder"]
    assert len(chat.calls_for(phase="planner")) == 2

    chat.script("not json", phase="planner", repeat=True)
    with pytest.raises(PlanError, match="unusable output twice"):
        await make_plan("Code it", planner_context(fake_fleet), runtime)
    assert len(chat.calls_for(phase="planner")) == 4


async def test_a_down_planner_endpoint_gives_the_keyword_plan(fake_fleet: FakeFleet) -> None:
    fake_fleet.chat.fail(phase="planner")

    plan, outcome = await make_plan(
        "Design a hook and print it", planner_context(fake_fleet), get_runtime(fake_fleet.path)
    )

    assert plan.source == "fallback"
    assert plan.warnings[0].startswith("planner endpoint failed")
    assert outcome is not None and outcome.attempts == ["fake-tools", "fake-reasoning"]


# --------------------------------------------------------------------------- events


async def test_events_of_a_planned_run_arrive_in_order(fake_fleet: FakeFleet) -> None:
    planned = {
        "tasks": [
            {"id": "task_1", "agent": "researcher", "description": "Find the facts.",
             "dependencies": []},
            {"id": "task_2", "agent": "coder", "description": "Write the code.",
             "dependencies": []},
            {"id": "task_3", "agent": "reasoner", "description": "Combine both results.",
             "dependencies": ["task_1", "task_2"]},
        ]
    }  # fmt: skip
    fake_fleet.chat.script(json.dumps(planned), phase="planner")

    result, events = await collect_run("Do it all", fleet=fake_fleet.path, voice=True)

    kinds = [e.kind for e in events]
    assert isinstance(events[0], PhaseStarted) and events[0].phase == "planning"
    assert kinds.count("plan_ready") == 1 and kinds.count("run_finished") == 1
    assert kinds[-1] == "run_finished"
    assert {e.run_id for e in events} == {result.run_id}
    plan_at = kinds.index("plan_ready")
    finished_at = {}
    for task_id in ("task_1", "task_2", "task_3"):
        started = index_of(events, TaskStarted, task_id)
        finished_at[task_id] = index_of(events, TaskFinished, task_id)
        assert plan_at < started < finished_at[task_id]
    assert index_of(events, TaskWaiting, "task_3") < finished_at["task_1"]
    assert index_of(events, TaskStarted, "task_3") > max(
        finished_at["task_1"], finished_at["task_2"]
    )
    phases = [e.phase for e in events if isinstance(e, PhaseStarted)]
    assert phases == ["planning", "synthesizing", "summarizing"]
    assert index_of(events, PhaseStarted, None) < plan_at
    synthesizing = next(
        i for i, e in enumerate(events) if isinstance(e, PhaseStarted) and e.phase == "synthesizing"
    )
    assert synthesizing > max(finished_at.values())
    assert result.plan.source == "planner"
    assert (result.answer, result.voice_summary) == ("final answer", "voice summary")
    summary = only(fake_fleet.chat.calls_for(phase="summarizer"))
    assert "final answer" in summary.prompt and summary.endpoint.name == "fake-summary"
