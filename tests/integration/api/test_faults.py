"""The fault matrix: each fault is injected for real and the run's behaviour asserted.

Faults hit private servers (see ``_faultkit``), never the shared embedded fleet: a
llama.cpp server in a subprocess (SIGKILLed mid-run, or kept busy for timeouts and
cancellation), a socket that accepts and never answers, refused ports, and the fake
Ollama daemon (503 "server busy", planner output that is not JSON or not a DAG). Each
test prints its figure (``-s`` shows them).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.registry import DEFAULT_AGENTS
from endpoints.config import FleetConfig
from endpoints.fleet import get_runtime
from graph import Plan, PlanError, RunFinished, RunResult, Task, arun_goal, astream_goal
from graph.events import TaskFallback, TaskStarted
from graph.planning._validation import repair_plan
from tests.fakes import FakeOllama
from tests.fakes.ollama_server import _words
from tests.helpers import (
    FAST,
    ServerSampler,
    busy_slots,
    collect_run,
    free_port,
    wait_idle,
    write_fleet,
)
from tests.helpers import pinned_task as pinned
from tests.integration._faultkit import BlackHole, ServerProcess, dead_ports, endpoint

pytestmark = pytest.mark.integration

LONG = 1500  # tokens: far longer than any timeout here
OLLAMA_MODEL = "fake-smollm:1b"


def figure(name: str, text: str) -> None:
    print(f"\n[fault] {name}: {text}")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def private(
    embedded_fleet: FleetConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """A private llama.cpp server (2 slots) serving the vision tier of a fleet.

    Yields:
        (fleet path, server base URL).
    """
    folder = tmp_path_factory.mktemp("private")
    port = free_port()
    spec = endpoint("private-vision", port, launch=True)
    server = ServerProcess(
        write_fleet(folder / "server.toml", {"vision": [spec]}, embedded=True), port
    )
    spec.pop("launch")
    try:
        fleet = write_fleet(folder / "fleet.toml", {"vision": [spec]}, others_from="embedded")
        yield str(fleet), spec["base_url"]
    finally:
        server.kill()


# --------------------------------------------------------------------------- timeouts


async def test_per_task_timeout_fails_the_task_and_frees_the_slot(
    private: tuple[str, str],
) -> None:
    fleet, url = private
    plan = Plan(
        tasks=[pinned("slow", "vision_analyst", tokens=LONG), pinned("quick", "researcher")]
    )
    started = time.perf_counter()
    result = await arun_goal("timeout test", plan=plan, fleet=fleet, task_timeout_s=2, **FAST)
    slow = result.result("slow")
    assert slow.status == "failed" and "no answer within the timeout" in (slow.error or "")
    assert result.result("quick").status == "completed"
    assert result.answer.strip()
    limiter = get_runtime(fleet).limiters()["private-vision"]
    assert limiter.stats().in_use == 0
    idle_s = wait_idle(url)
    figure(
        "per-task timeout (2 s)",
        f"slow task failed after {slow.latency_s:.1f}s, run {time.perf_counter() - started:.1f}s, "
        f"server slot idle {idle_s:.1f}s later, limiter in_use 0",
    )


async def test_run_deadline_ends_unfinished_tasks(private: tuple[str, str]) -> None:
    fleet, url = private
    plan = Plan(
        tasks=[
            pinned("quick", "researcher"),
            pinned("slow", "vision_analyst", tokens=LONG),
            pinned("after", "analyst", ["slow"]),
        ]
    )
    result = await arun_goal("deadline test", plan=plan, fleet=fleet, run_deadline_s=5, **FAST)
    assert result.result("quick").status == "completed"
    for task_id in ("slow", "after"):
        assert "run deadline of 5s reached" in (result.result(task_id).error or "")
    assert result.answer.strip() and not any("synthesis failed" in w for w in result.warnings)
    idle_s = wait_idle(url)
    starts = [r.started_at for r in result.tasks if r.started_at]
    ends = [r.finished_at for r in result.tasks if r.finished_at]
    figure(
        "run deadline (5 s)",
        f"task phase ended {max(ends) - min(starts):.1f}s after the first task started; "
        f"2 unfinished tasks failed with the deadline error; slot idle {idle_s:.1f}s later",
    )


async def test_cancelling_a_run_cancels_requests_and_frees_slots(
    private: tuple[str, str],
) -> None:
    fleet, url = private
    plan = Plan(
        tasks=[
            pinned("v1", "vision_analyst", tokens=LONG),
            pinned("v2", "vision_analyst", tokens=LONG),
        ]
    )
    started: set[str] = set()
    both_running = asyncio.Event()

    async def run() -> None:
        async for event in astream_goal("cancel test", plan=plan, fleet=fleet, **FAST):
            if isinstance(event, TaskStarted):
                started.add(event.task_id)
                if len(started) == 2:
                    both_running.set()

    task = asyncio.create_task(run())
    await asyncio.wait_for(both_running.wait(), 120)
    await asyncio.sleep(1.0)
    assert await asyncio.to_thread(busy_slots, url) == 2
    cancelled_at = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    limiter = get_runtime(fleet).limiters()["private-vision"]
    assert limiter.stats().in_use == 0 and limiter.stats().queued == 0
    idle_s = await asyncio.to_thread(wait_idle, url, 10.0)
    figure(
        "cancel a run",
        f"limiter in_use 0 at once; server /slots idle {time.perf_counter() - cancelled_at:.2f}s "
        f"after cancel (poll {idle_s:.2f}s); 2 in-flight requests cancelled",
    )


# --------------------------------------------------------------------------- endpoint faults


async def test_endpoint_killed_mid_run_falls_back(
    embedded_fleet: FleetConfig, tmp_path: Path
) -> None:
    port = free_port()
    spec = endpoint("victim", port, launch=True)
    server = ServerProcess(
        write_fleet(tmp_path / "victim.toml", {"tools": [spec]}, embedded=True), port
    )
    spec.pop("launch")
    fleet = write_fleet(tmp_path / "fleet.toml", {"tools": [spec]}, others_from="embedded")
    plan = Plan(
        tasks=[pinned("r1", "researcher", tokens=96), pinned("r2", "researcher", tokens=96)]
    )
    killed_at: float | None = None
    fallback_started: list[float] = []
    events: list[Any] = []
    try:
        async for event in astream_goal("kill test", plan=plan, fleet=fleet, **FAST):
            events.append(event)
            if isinstance(event, TaskStarted):
                if event.endpoint == "victim" and killed_at is None:
                    if (
                        sum(isinstance(e, TaskStarted) and e.endpoint == "victim" for e in events)
                        == 2
                    ):
                        await asyncio.sleep(0.5)
                        server.kill()
                        killed_at = time.perf_counter()
                elif event.fallback:
                    fallback_started.append(time.perf_counter())
    finally:
        server.kill()
    result = events[-1].result
    assert killed_at is not None
    for task in result.tasks:
        assert task.status == "completed", task.error
        assert task.fallback_used and task.endpoint == "embedded-reasoning"
        assert task.attempts == ["victim", "embedded-reasoning"]
    assert result.metrics.fallbacks == 2
    assert sum(isinstance(e, TaskFallback) for e in events) == 2
    figure(
        "endpoint process killed",
        f"both tasks restarted on the fallback tier {max(fallback_started) - killed_at:.2f}s "
        f"after SIGKILL; run done {time.perf_counter() - killed_at:.1f}s after; requests lost 0",
    )


async def test_endpoint_that_never_answers_times_out_and_falls_back(
    embedded_fleet: FleetConfig, tmp_path: Path
) -> None:
    hole = BlackHole()
    try:
        fleet = write_fleet(
            tmp_path / "fleet.toml",
            {"tools": [endpoint("black-hole", hole.port)]},
            others_from="embedded",
        )
        plan = Plan(tasks=[pinned("r1", "researcher"), pinned("r2", "researcher")])
        started = time.perf_counter()
        result, events = await collect_run(
            "black hole test", plan=plan, fleet=fleet, task_timeout_s=2, **FAST
        )
        wall = time.perf_counter() - started
    finally:
        hole.close()
    assert hole.accepted >= 2
    for task in result.tasks:
        assert task.status == "completed" and task.fallback_used
        assert task.attempts == ["black-hole", "embedded-reasoning"]
    errors = [e.error for e in events if isinstance(e, TaskFallback)]
    assert errors and all("no answer within the timeout" in e for e in errors)
    waited = max(r.latency_s for r in result.tasks)
    figure(
        "endpoint accepts, never answers (task_timeout_s=2)",
        f"fallback after the timeout, task time incl. fallback {waited:.1f}s, run {wall:.1f}s",
    )


async def test_every_endpoint_of_a_tier_down(embedded_fleet: FleetConfig, tmp_path: Path) -> None:
    with dead_ports(2) as ports:
        fleet = write_fleet(
            tmp_path / "fleet.toml",
            {"vision": [endpoint("dead-vision-1", ports[0]), endpoint("dead-vision-2", ports[1])]},
            others_from="embedded",
        )
        plan = Plan(
            tasks=[
                pinned("look", "vision_analyst"),
                pinned("research", "researcher"),
                pinned("use", "analyst", ["look", "research"]),
            ]
        )
        result = await arun_goal("tier down test", plan=plan, fleet=fleet, **FAST)
    look = result.result("look")
    assert look.status == "failed"
    assert "all endpoints failed (tried dead-vision-1, dead-vision-2)" in (look.error or "")
    assert "cannot connect" in (look.error or "")
    assert result.result("research").status == "completed"
    assert result.result("use").status == "completed"  # ran with a note that "look" failed
    assert result.answer.strip() and not any("synthesis failed" in w for w in result.warnings)
    figure(
        "every endpoint of a tier down",
        f"vision task failed in {look.latency_s * 1000:.0f} ms with a per-task error; "
        f"2 other tasks completed; synthesis produced",
    )


# --------------------------------------------------------------------------- Ollama faults


def _ollama_fleet(tmp_path: Path, fake: FakeOllama) -> Path:
    spec = endpoint("fake-ollama", fake.port, kind="ollama", model=OLLAMA_MODEL, slots=2)
    return write_fleet(tmp_path / "fleet.toml", {"tools": [spec]}, others_from="embedded")


async def test_ollama_busy_is_retried_with_backoff(
    embedded_fleet: FleetConfig, tmp_path: Path
) -> None:
    plan = Plan(tasks=[pinned("r1", "researcher", eos=False)])
    with FakeOllama(model=OLLAMA_MODEL, busy_first_n=2) as fake:
        started = time.perf_counter()
        result = await arun_goal(
            "busy test", plan=plan, fleet=_ollama_fleet(tmp_path, fake), busy_retries=3, **FAST
        )
        served_s = result.tasks[0].latency_s
        assert (fake.busy_answered, fake.chat_count) == (2, 3)
    task = result.tasks[0]
    assert task.status == "completed" and task.endpoint == "fake-ollama" and not task.fallback_used
    times = [r.received_at for r in fake.requests if r.path == "/api/chat"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.45 and gaps[1] >= 0.9  # backoff 0.5 s, then 1 s
    figure(
        "Ollama 503 busy x2 (busy_retries=3)",
        f"served by Ollama on the 3rd request, backoff gaps {gaps[0]:.2f}s/{gaps[1]:.2f}s, "
        f"task {served_s:.2f}s, run {time.perf_counter() - started:.1f}s",
    )

    with FakeOllama(model=OLLAMA_MODEL, busy_first_n=1000) as always_busy:
        result = await arun_goal(
            "busy test",
            plan=plan,
            fleet=_ollama_fleet(tmp_path, always_busy),
            busy_retries=2,
            **FAST,
        )
        requests = always_busy.chat_count
    task = result.tasks[0]
    assert requests == 3  # bounded: 1 + 2 retries, then the fallback tier
    assert task.status == "completed" and task.fallback_used
    assert task.endpoint == "embedded-reasoning"
    figure(
        "Ollama 503 busy forever (busy_retries=2)",
        f"{requests} requests then fallback to embedded-reasoning; task {task.latency_s:.1f}s",
    )


class ScriptedPlanner(FakeOllama):
    """A fake Ollama whose structured (planner) answers are a fixed text."""

    def __init__(self, planner_text: str, **kwargs: Any) -> None:
        super().__init__(model=OLLAMA_MODEL, **kwargs)
        self.planner_text = planner_text

    def _answer(self, body: Any) -> tuple[list[str], list[str], str, int]:
        if isinstance(body.get("format"), dict):
            return _words(self.planner_text), [], "stop", 50
        return super()._answer(body)


async def test_planner_unusable_output_is_a_clear_error(
    embedded_fleet: FleetConfig, tmp_path: Path
) -> None:
    with ScriptedPlanner("Sure! Here is my plan: first research, then design.") as fake:
        started = time.perf_counter()
        with pytest.raises(PlanError, match="unusable output twice"):
            await arun_goal("plan something", fleet=_ollama_fleet(tmp_path, fake), **FAST)
        elapsed = time.perf_counter() - started
        planner_calls = sum(isinstance(b.get("format"), dict) for b in fake.chat_requests)
    assert planner_calls == 2
    figure(
        "planner returns non-JSON",
        f"PlanError after {planner_calls} planner calls in {elapsed:.2f}s (no hang)",
    )


CYCLIC_PLAN = {
    "tasks": [
        {
            "id": "task_1",
            "agent": "web researcher",
            "description": "Find facts",
            "dependencies": ["task_2"],
        },
        {
            "id": "task_2",
            "agent": "analyst",
            "description": "Weigh the facts",
            "dependencies": ["task_1"],
        },
        {
            "id": "task_3",
            "agent": "CAD designer",
            "description": "Sketch it",
            "dependencies": ["task_9"],
        },
    ]
}


def test_raw_planner_json_with_cycle_and_unknown_agents_is_repaired() -> None:
    plan = repair_plan(CYCLIC_PLAN["tasks"], agents=list(DEFAULT_AGENTS), goal="g", max_tasks=6)
    by_id = {t.id: t for t in plan.tasks}
    assert by_id["task_1"].agent == "researcher" and by_id["task_3"].agent == "cad_designer"
    assert by_id["task_3"].dependencies == []
    assert not (by_id["task_1"].dependencies and by_id["task_2"].dependencies)  # cycle cut
    assert any("closed a cycle" in w for w in plan.warnings)
    assert any("unknown dependency 'task_9'" in w for w in plan.warnings)


async def test_planner_cycle_and_unknown_agents_are_repaired_end_to_end(
    embedded_fleet: FleetConfig, tmp_path: Path
) -> None:
    with ScriptedPlanner(json.dumps(CYCLIC_PLAN)) as fake:
        started = time.perf_counter()
        result = await arun_goal("plan something", fleet=_ollama_fleet(tmp_path, fake), **FAST)
        elapsed = time.perf_counter() - started
    assert result.plan.source == "planner"
    assert [t.status for t in result.tasks] == ["completed"] * 3
    assert any("closed a cycle" in w for w in result.warnings)
    assert any("unknown agent 'CAD designer'" in w for w in result.warnings)
    figure(
        "planner returns a cycle + unknown agents",
        f"repaired with {len(result.plan.warnings)} warnings and run to the end in {elapsed:.1f}s",
    )


# --------------------------------------------------------------------------- load


async def test_fifty_concurrent_goals_stay_apart_within_slot_caps(
    embedded_fleet: FleetConfig, tmp_path: Path
) -> None:
    """50 goals at once; the planner-free plans put 100 tasks and 50 syntheses in flight.

    Tools and reasoning tiers are fake Ollama daemons (streaming replies, so calls
    overlap) to keep the test short; coder, vision and summary are the shared llama.cpp
    servers, whose ``/slots`` are sampled while the goals run.
    """
    second = ["coder", "vision_analyst", "summarizer"]
    with (
        FakeOllama(model=OLLAMA_MODEL, chunk_delay_s=0.02) as tools,
        FakeOllama(model=OLLAMA_MODEL, chunk_delay_s=0.02) as reasoning,
    ):
        fleet = write_fleet(
            tmp_path / "fleet.toml",
            {
                "tools": [
                    endpoint("fake-tools", tools.port, kind="ollama", model=OLLAMA_MODEL, slots=4)
                ],
                "reasoning": [
                    endpoint(
                        "fake-reasoning", reasoning.port, kind="ollama", model=OLLAMA_MODEL, slots=2
                    )
                ],
            },
            others_from="embedded",
        )
        runtime = get_runtime(str(fleet))
        urls = {
            h.name: h.config.base_url for h in runtime.all_handles() if h.config.kind == "llamacpp"
        }

        async def one(index: int) -> tuple[RunResult, set[str]]:
            tag = f"run{index:02d}"
            plan = Plan(
                tasks=[
                    Task(id="t1", agent="researcher", description=f"{tag}: say hi", max_tokens=6),
                    Task(
                        id="t2",
                        agent=second[index % len(second)],
                        description=f"{tag}: say bye",
                        dependencies=["t1"],
                        max_tokens=4,
                    ),
                ]
            )
            run_ids: set[str] = set()
            result = None
            async for event in astream_goal(
                f"goal {tag}", plan=plan, fleet=fleet, voice=False, synthesis_max_tokens=6
            ):
                run_ids.add(event.run_id)
                if isinstance(event, RunFinished):
                    result = event.result
            assert result is not None
            return result, run_ids

        started = time.perf_counter()
        async with ServerSampler(urls, interval_s=0.2) as sampler:
            outcomes = await asyncio.gather(*(one(i) for i in range(50)))
        wall = time.perf_counter() - started
        fake_calls = tools.chat_count + reasoning.chat_count

    assert len({r.run_id for r, _ in outcomes}) == 50
    for index, (result, run_ids) in enumerate(outcomes):
        tag = f"run{index:02d}"
        assert run_ids == {result.run_id}  # every event of a stream is its own run's
        assert result.goal == f"goal {tag}"
        assert all(t.description.startswith(tag) for t in result.plan.tasks)
        t1, t2 = result.result("t1"), result.result("t2")
        assert t1.status == t2.status == "completed", (t1.error, t2.error, t2.attempts)
        assert t2.ready_at is not None and t1.finished_at is not None
        assert t2.ready_at >= t1.finished_at  # waited for its own t1, not another run's
    fallbacks = [
        (r.task_id, r.attempts) for res, _ in outcomes for r in res.tasks if r.fallback_used
    ]
    # 50 t1 + 50 syntheses (+ any task that fell back to the tools tier): none lost
    assert fake_calls == 100 + len(fallbacks)
    peaks = {}
    for name, limiter in runtime.limiters().items():
        stats = limiter.stats()
        assert stats.peak_in_use <= stats.capacity, stats
        assert stats.in_use == 0
        peaks[name] = f"{stats.peak_in_use}/{stats.capacity}"
    # /slots busy can never exceed a server's own total_slots; a request our limiters let
    # through past a server's slots waits in its queue, counted as deferred.
    assert sampler.peak_deferred == dict.fromkeys(urls, 0)
    figure(
        "50 concurrent goals",
        f"100/100 tasks + 50 syntheses completed, 0 cross-run events, wall {wall:.1f}s; "
        f"limiter peak {peaks}; llama.cpp /slots peak busy {sampler.peak_busy}, "
        f"peak deferred {sampler.peak_deferred}; fallbacks {fallbacks or 0}",
    )
