"""Run metrics: critical path, peak concurrency, endpoint usage."""

from __future__ import annotations

import pytest

from graph.metrics import compute_metrics, critical_path_s, peak_concurrency
from graph.schemas import ModelCall, Plan, Task, TaskResult, TaskStatus


def task(task_id: str, deps: list[str] | None = None) -> Task:
    return Task(id=task_id, agent="researcher", description=task_id, dependencies=deps or [])


def result(
    task_id: str,
    start: float | None,
    end: float | None,
    *,
    status: TaskStatus = "completed",
    endpoint: str | None = "ep-a",
    prompt: int = 0,
    completion: int = 0,
    fallback: bool = False,
) -> TaskResult:
    return TaskResult(
        task_id=task_id,
        status=status,
        agent="researcher",
        endpoint=endpoint,
        started_at=start,
        finished_at=end,
        latency_s=(end - start) if start is not None and end is not None else 0.0,
        prompt_tokens=prompt,
        completion_tokens=completion,
        fallback_used=fallback,
    )


DIAMOND = Plan(tasks=[task("a"), task("b", ["a"]), task("c", ["a"]), task("d", ["b", "c"])])


def test_critical_path_on_a_diamond_takes_the_longer_branch() -> None:
    results = {
        "a": result("a", 0.0, 1.0),
        "b": result("b", 1.0, 3.0),
        "c": result("c", 1.0, 6.0),
        "d": result("d", 6.0, 7.5),
    }
    assert critical_path_s(DIAMOND, results) == pytest.approx(1.0 + 5.0 + 1.5)


def test_critical_path_of_independent_tasks_is_the_longest_one() -> None:
    plan = Plan(tasks=[task("a"), task("b"), task("c")])
    results = {"a": result("a", 0, 2), "b": result("b", 0, 4), "c": result("c", 0, 1)}
    assert critical_path_s(plan, results) == pytest.approx(4.0)


def test_critical_path_counts_missing_results_as_zero() -> None:
    results = {"a": result("a", 0.0, 1.0), "d": result("d", 5.0, 6.0)}
    assert critical_path_s(DIAMOND, results) == pytest.approx(2.0)


def test_peak_concurrency_of_overlapping_calls() -> None:
    results = [result("a", 0, 2), result("b", 1, 3), result("c", 1.5, 2.5), result("d", 4, 5)]
    assert peak_concurrency(results) == 3


def test_touching_intervals_do_not_overlap() -> None:
    results = [result("a", 0, 1), result("b", 1, 2), result("c", 2, 3)]
    assert peak_concurrency(results) == 1


def test_peak_concurrency_ignores_tasks_that_never_started() -> None:
    results = [result("a", 0, 2), result("b", None, 1.0, status="skipped", endpoint=None)]
    assert peak_concurrency(results) == 1
    assert peak_concurrency([]) == 0


def test_compute_metrics_endpoints_counts_and_tokens() -> None:
    results = {
        "a": result("a", 10.0, 11.0, endpoint="ep-a", prompt=10, completion=5),
        "b": result("b", 11.0, 13.0, endpoint="ep-b", prompt=20, completion=7, fallback=True),
        "c": result("c", 11.0, 16.0, endpoint="ep-a", prompt=30, completion=9),
        "d": result("d", None, None, status="failed", endpoint="ep-b"),
    }
    metrics = compute_metrics(
        DIAMOND,
        results,
        {"planner_s": 0.5, "synthesis_s": 2.0},
        {"prompt_tokens": 100, "completion_tokens": 50},
        wall_s=9.0,
    )
    assert metrics.endpoints["ep-a"].busy_s == pytest.approx(6.0)
    assert metrics.endpoints["ep-a"].tasks == 2
    assert metrics.endpoints["ep-a"].completion_tokens == 14
    # A task that never held a slot adds nothing to its endpoint.
    assert metrics.endpoints["ep-b"].busy_s == pytest.approx(2.0)
    assert metrics.endpoints["ep-b"].tasks == 1
    assert metrics.execution_s == pytest.approx(6.0)
    assert metrics.critical_path_s == pytest.approx(6.0)
    assert metrics.peak_concurrency == 2
    assert metrics.prompt_tokens == 160
    assert metrics.completion_tokens == 71
    assert (metrics.tasks_total, metrics.tasks_completed, metrics.tasks_failed) == (4, 3, 1)
    assert metrics.fallbacks == 1
    assert (metrics.planner_s, metrics.synthesis_s, metrics.summary_s) == (0.5, 2.0, 0.0)
    assert metrics.wall_s == 9.0


def test_compute_metrics_with_no_started_task() -> None:
    plan = Plan(tasks=[task("a")])
    results = {"a": result("a", None, 3.0, status="skipped", endpoint=None)}
    metrics = compute_metrics(plan, results, {}, {}, wall_s=1.0)
    assert metrics.execution_s == 0.0
    assert metrics.tasks_skipped == 1
    assert metrics.endpoints == {}


def test_busy_seconds_are_charged_per_attempt() -> None:
    plan = Plan(tasks=[task("a")])
    served = result("a", 10.0, 13.0, endpoint="ep-b")
    served.calls = [
        ModelCall(endpoint="ep-a", started_at=10.0, latency_s=2.0, status="slow"),
        ModelCall(endpoint="ep-b", started_at=12.0, latency_s=1.0),
    ]
    metrics = compute_metrics(plan, {"a": served}, {}, {}, wall_s=5.0)
    assert metrics.endpoints["ep-a"].busy_s == pytest.approx(2.0)
    assert metrics.endpoints["ep-b"].busy_s == pytest.approx(1.0)
    assert (metrics.endpoints["ep-a"].tasks, metrics.endpoints["ep-b"].tasks) == (0, 1)


def test_execution_time_of_a_resumed_run_leaves_out_the_downtime() -> None:
    plan = Plan(tasks=[task("a"), task("b", ["a"]), task("c", ["b"])])
    before_crash = {"a": result("a", 100.0, 101.0), "b": result("b", 101.0, 103.0)}
    after_resume = result("c", 1100.0, 1104.0)  # resumed a quarter of an hour later
    after_resume.ready_at = 1099.5
    metrics = compute_metrics(plan, {**before_crash, "c": after_resume}, {}, {}, wall_s=5.0)
    assert metrics.execution_s == pytest.approx(3.0 + 4.5)
