"""Budgets, timeouts and cut answers against real llama.cpp servers (embedded SmolLM2).

Token counts are the server's own (``/tokenize``); a timed-out generation is a real
stream cut by the client while the server keeps running; ``finish_reason`` comes from
the server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from endpoints.clients import llamacpp as engine
from endpoints.config import FleetConfig, load_fleet
from endpoints.fleet import get_runtime, health_for
from graph import Plan, PlanError, arun_goal
from graph.budgets._budget import TRUNCATION_MARK, check_goal_fits, trim_to_tokens
from graph.context import Context
from graph.execution._agent_node import run_task
from graph.schemas import TaskResult
from tests.helpers import FAST, busy_slots, endpoint_spec, free_port, pinned_task, write_fleet

pytestmark = pytest.mark.integration

CJK = "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。"  # noqa: RUF001 (29 characters)
LONG = 1500  # tokens: far longer than any timeout here


async def test_trim_to_tokens_cuts_to_real_token_counts(embedded_fleet: FleetConfig) -> None:
    endpoint = embedded_fleet.tier("tools").endpoints[0]
    async with httpx.AsyncClient() as client:
        for text in (CJK * 3, "1234567890 " * 40, "The quick brown fox. " * 80):
            tokens = await engine.count_tokens(endpoint, text, client)
            assert tokens is not None and tokens > 50
            cut = await trim_to_tokens(text, 50, endpoint)
            assert cut.endswith(TRUNCATION_MARK) and text.startswith(cut[: -len(TRUNCATION_MARK)])
            assert (await engine.count_tokens(endpoint, cut, client) or 0) <= 50
            assert await trim_to_tokens(text, tokens, endpoint) == text


SMALL_CTX = 1024  # the fallback's budget: half the tools server's slot (short prefill)


@pytest.fixture
def dead_coder_fleet(embedded_fleet: FleetConfig, tmp_path: Path) -> str:
    """The embedded fleet with its coder tier on a dead port that claims an 8K context,
    and its tools tier (the coder's fallback) budgeted to 1K on the tools server."""
    tools = embedded_fleet.tier("tools").endpoints[0]
    port = int(tools.base_url.rsplit(":", 1)[1])
    tiers = {
        "coder": [endpoint_spec("dead-coder", free_port(), ctx=8192)],
        "tools": [endpoint_spec("small-tools", port, ctx=SMALL_CTX, slots=tools.slots or 4)],
    }
    return str(write_fleet(tmp_path / "fleet.toml", tiers, others_from="embedded"))


async def test_dependencies_fit_the_fallback_endpoint_and_a_cjk_goal(
    dead_coder_fleet: str,
) -> None:
    """m3-ultra shape: coder (8K, down) falls back to tools (1K here): budget for 1K."""
    runtime = get_runtime(dead_coder_fleet)
    goal = CJK * 8  # ~350 tokens that a 4-characters-per-token estimate calls 58
    deps = {"r": TaskResult(task_id="r", agent="researcher", status="completed", output=CJK * 60)}
    task = pinned_task("code", "coder", ["r"], tokens=8)

    result = await run_task(task, goal, deps, Context(fleet=dead_coder_fleet), runtime, "run-1")

    assert result.status == "completed", result.error
    assert result.attempts == ["dead-coder", "small-tools"]
    assert result.completion_tokens == 8
    assert SMALL_CTX - 2 * 64 < result.prompt_tokens + 8 <= SMALL_CTX  # full, not over


async def test_a_goal_longer_than_the_smallest_context_is_refused_up_front(
    embedded_fleet: FleetConfig,
) -> None:
    runtime = get_runtime("embedded")
    endpoint = embedded_fleet.tier("tools").endpoints[0]
    goal = CJK * 50
    async with httpx.AsyncClient() as client:
        tokens = await engine.count_tokens(endpoint, goal, client)
    assert tokens is not None and tokens > 2048
    with pytest.raises(PlanError) as raised:
        await check_goal_fits(goal, runtime)
    assert f"goal is {tokens} tokens" in str(raised.value)
    assert "2048" in str(raised.value)
    with pytest.raises(PlanError, match="shorten the goal"):
        await arun_goal(goal, **FAST)


async def test_a_slow_generation_does_not_bench_a_healthy_server(
    embedded_fleet: FleetConfig,
) -> None:
    runtime = get_runtime("embedded")
    endpoint = embedded_fleet.tier("vision").endpoints[0]
    health = health_for(endpoint.base_url)
    slow_before = health.slow_calls
    context = Context(task_timeout_s=1.0)
    for run in range(2):
        task = pinned_task("slow", "vision_analyst", tokens=LONG)
        result = await run_task(task, "Timeout", {}, context, runtime, f"slow-{run}")
        assert result.status == "failed"
        error = result.error or ""
        assert "no answer within the timeout" in error and "slow" in error, error
        # The slot came back only after the server stopped generating for it.
        assert await asyncio.to_thread(busy_slots, endpoint.base_url) == 0
    assert health.slow_calls == slow_before + 2
    assert health.consecutive_failures == 0 and not health.cooling_down()
    quick = await run_task(
        pinned_task("quick", "vision_analyst"), "Then", {}, Context(), runtime, "q"
    )
    assert quick.status == "completed" and quick.endpoint == endpoint.name


async def test_a_dead_server_is_still_benched(embedded_fleet: FleetConfig, tmp_path: Path) -> None:
    spec = endpoint_spec("dead-vision", free_port())
    fleet = str(write_fleet(tmp_path / "fleet.toml", {"vision": [spec]}, others_from="embedded"))
    runtime = get_runtime(fleet)
    for run in range(2):
        task = pinned_task("look", "vision_analyst")
        result = await run_task(task, "Down", {}, Context(fleet=fleet), runtime, f"dead-{run}")
        assert result.status == "failed" and "cannot connect" in (result.error or "")
    health = health_for(load_fleet(fleet).tier("vision").endpoints[0].base_url)
    assert health.consecutive_failures == 2 and health.cooling_down()


async def test_an_answer_cut_at_max_tokens_is_flagged(embedded_fleet: FleetConfig) -> None:
    plan = Plan(tasks=[pinned_task("cut", tokens=3), pinned_task("other", tokens=2)])
    settings: dict[str, Any] = {**FAST, "synthesis_max_tokens": 2}

    result = await arun_goal("Cut answers", plan=plan, **settings)

    cut = result.result("cut")
    assert cut.status == "completed" and cut.truncated and cut.completion_tokens == 3
    assert any("cut" in w and "max_tokens" in w for w in result.warnings), result.warnings
    # The synthesizer's own 2-token answer is cut too, and says so.
    assert any("synthesis" in w and "cut" in w for w in result.warnings), result.warnings
