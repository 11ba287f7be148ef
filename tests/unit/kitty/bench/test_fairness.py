"""The fairness suite's pure parts and the planner suite's prompt-cache switch."""

from __future__ import annotations

from typing import Any

import pytest

from endpoints.config import EndpointConfig
from kitty.bench._fairness import latency_stats, orders, p95, render_fairness
from kitty.bench._planner_cache import compare_latency, render_cache, without_prompt_cache
from kitty.bench._workload import fairness_plans


def test_fairness_plans_are_one_big_goal_first_then_five_small() -> None:
    plans = fairness_plans()
    assert len(plans) == 6
    big = plans[0][1]
    assert len(big.tasks) == 14
    ready_first = [t for t in big.tasks if not t.dependencies]
    assert len(ready_first) == 12  # all queued before any small goal's task
    for _goal, small in plans[1:]:
        assert [t.id for t in small.tasks] == ["a", "b", "c"]
        assert (
            sum(t.max_tokens or 0 for t in small.tasks)
            < sum(t.max_tokens or 0 for t in big.tasks) / 5
        )
    assert len({goal for goal, _ in plans}) == 6


def test_p95_interpolates_between_ranks() -> None:
    assert p95([1.0]) == 1.0
    assert p95([]) == 0.0
    assert p95([float(x) for x in range(1, 21)]) == pytest.approx(19.05)
    assert p95([10.0, 20.0]) == pytest.approx(19.5)


def test_latency_stats_separate_the_big_goal() -> None:
    stats = latency_stats([100.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    assert stats["big_s"] == 100.0
    assert stats["small_mean_s"] == pytest.approx(30.0)
    assert stats["small_p95_s"] == pytest.approx(48.0)
    assert stats["all_mean_s"] == pytest.approx(250.0 / 6)


def test_both_orders_run_once_the_switch_exists() -> None:
    assert orders() == ["fifo", "priority"]


def test_render_fairness_shows_both_orders_and_the_ratio() -> None:
    fifo = {"small_mean_s": 60.0, "small_p95_s": 70.0, "all_mean_s": 65.0, "all_p95_s": 80.0}
    fair = {"small_mean_s": 30.0, "small_p95_s": 35.0, "all_mean_s": 40.0, "all_p95_s": 85.0}
    suite: dict[str, Any] = {
        "time_scale": 0.05,
        "reps": 3,
        "goals": [{"goal": "big", "tasks": 14, "tokens": 416}]
        + [{"goal": f"s{i}", "tasks": 3, "tokens": 48} for i in range(5)],
        "orders": ["fifo", "priority"],
        "median": {"fifo": {**fifo, "big_s": 80.0}, "priority": {**fair, "big_s": 85.0}},
        "priority_over_fifo": {
            "small_mean_s": 0.5,
            "small_p95_s": 0.5,
            "all_mean_s": 0.615,
            "all_p95_s": 1.062,
            "big_s": 1.062,
        },
    }
    text = "\n".join(render_fairness(suite))
    assert "| fifo | 60.0 s | 70.0 s | 65.0 s | 80.0 s | 80.0 s |" in text
    ratios = "| **0.50x** | **0.50x** | **0.61x** | **1.06x** | **1.06x** |"
    assert "| **priority / fifo** " + ratios in text


def test_without_prompt_cache_adds_cache_prompt_false_to_every_request() -> None:
    seen: list[dict[str, Any]] = []

    def factory(endpoint: EndpointConfig, **settings: Any) -> Any:
        seen.append(settings)
        return "model"

    endpoint = EndpointConfig(name="e", kind="llamacpp", base_url="http://127.0.0.1:9", model="m")
    build = without_prompt_cache(factory)
    assert build(endpoint, temperature=0.3, extra={"seed": 7}) == "model"
    assert build(endpoint, max_tokens=5) == "model"
    assert seen == [
        {"temperature": 0.3, "extra": {"seed": 7, "cache_prompt": False}},
        {"max_tokens": 5, "extra": {"cache_prompt": False}},
    ]


def test_compare_latency_and_its_table() -> None:
    cached = [{"ok": True, "seconds": s, "completion_tokens": 100} for s in (1.0, 2.0, 3.0)]
    uncached = [{"ok": True, "seconds": s, "completion_tokens": 100} for s in (2.0, 4.0, 6.0)]
    uncached[2]["completion_tokens"] = 300  # another plan: left out of the paired ratio
    cached.append({"ok": True, "seconds": 1.0, "completion_tokens": 5})
    uncached.append({"ok": False, "seconds": 99.0})
    cache = compare_latency(cached, uncached)
    assert cache["cached"]["goals"] == 4 and cache["uncached"]["goals"] == 3
    assert cache["uncached_over_cached_median"] == pytest.approx(4.0 / 1.5, abs=1e-3)
    assert cache["paired_goals"] == 2
    assert cache["paired_ratio"] == 2.0
    text = "\n".join(render_cache(cache))
    assert "| cache_prompt: false | 3 | 4.00 s | 4.00 s | 166.7 |" in text
    assert "**2.0x** as long on the 2 goals" in text
