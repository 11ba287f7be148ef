"""Token budgets without a tokenizer: safe bounds, cuts, per-endpoint prompts, goal checks.

Endpoints here have no server (or are Ollama), so every count falls back to the safe
bound; ``tests/integration/api/test_hardening.py`` checks the same against SmolLM2's real
tokenizer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import graph
from endpoints.config import EndpointConfig
from endpoints.fleet import get_runtime
from graph import PlanError, Task, arun_goal
from graph.budgets._budget import (
    PROMPT_MARGIN_TOKENS,
    TRUNCATION_MARK,
    certainly_fits,
    check_goal_fits,
    safe_token_bound,
    trim_to_tokens,
)
from graph.context import Context
from graph.execution._agent_node import run_task
from graph.schemas import TaskResult
from tests.conftest import FakeFleet
from tests.fake_chat import FakeChat
from tests.helpers import endpoint_spec, free_ports, write_fleet

# Measured on SmolLM2-135M's tokenizer (llama.cpp /tokenize): 87 characters, 132 tokens.
CJK = "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。" * 3  # noqa: RUF001 (a real CJK comma)
# 55 ASCII characters, 55 tokens: digits are one token each.
DIGITS = "1234567890 " * 5


def ollama_endpoint(ctx: int = 2048) -> EndpointConfig:
    return EndpointConfig(
        name="ollama-x", kind="ollama", base_url="http://127.0.0.1:9", model="m", ctx=ctx
    )


def test_the_safe_bound_never_counts_fewer_tokens_than_a_real_tokenizer() -> None:
    # Two characters per token is not a bound: CJK is 1.5 tokens a character, digits 1.
    assert not certainly_fits(CJK, 100)
    assert not certainly_fits(CJK, len(CJK))
    assert not certainly_fits(DIGITS, 40)
    assert safe_token_bound(CJK) >= 132 and safe_token_bound(DIGITS) >= 55
    assert certainly_fits("short", 50)


async def test_a_cut_without_a_tokenizer_stays_within_the_budget() -> None:
    for text in (CJK * 10, DIGITS * 20, "plain words " * 200):
        cut = await trim_to_tokens(text, 50, ollama_endpoint())
        assert cut.endswith(TRUNCATION_MARK)
        assert safe_token_bound(cut) <= 50, (len(cut), cut[:40])
    assert await trim_to_tokens("fits", 50, ollama_endpoint()) == "fits"
    assert await trim_to_tokens("fits", 10, ollama_endpoint()) == "fits"  # below the mark
    assert await trim_to_tokens(CJK, 0, ollama_endpoint()) == TRUNCATION_MARK.strip()


def dependency_fleet(tmp_path: Path) -> str:
    """coder (ctx 8192) falls back to tools (ctx 2048): the m3-ultra shape, no servers."""
    coder_port, tools_port, reasoning_port = free_ports(3)
    path = write_fleet(
        tmp_path / "fleet.toml",
        {
            "coder": [endpoint_spec("big-coder", coder_port, ctx=8192)],
            "tools": [endpoint_spec("small-tools", tools_port, ctx=2048)],
            "reasoning": [endpoint_spec("small-reasoning", reasoning_port, ctx=2048)],
        },
    )
    return str(path)


async def test_dependency_results_are_budgeted_for_the_endpoint_actually_called(
    tmp_path: Path, fresh_fleet_state: None
) -> None:
    fleet = dependency_fleet(tmp_path)
    chat = FakeChat().install(fleet)
    chat.fail(endpoint="big-coder")  # the 8K primary is down: the 2K fallback answers
    runtime = get_runtime(fleet)
    task = Task(id="code", agent="coder", description="Write the code.", dependencies=["r"])
    deps = {
        "r": TaskResult(task_id="r", agent="researcher", status="completed", output="x " * 9000)
    }

    result = await run_task(task, "Goal", deps, Context(fleet=fleet), runtime, "run-1")

    assert result.status == "completed" and result.endpoint == "small-tools"
    sent = chat.calls_for(endpoint="small-tools")[0]
    prompt_bound = sum(safe_token_bound(str(m.content)) for m in sent.messages)
    max_tokens = sent.settings["max_tokens"]
    assert prompt_bound + max_tokens <= 2048, prompt_bound  # the answer fits beside it
    assert prompt_bound + max_tokens > 2048 - 2 * PROMPT_MARGIN_TOKENS  # not cut needlessly
    assert TRUNCATION_MARK in sent.prompt
    # The primary got the bigger share its context allows.
    primary = chat.calls_for(endpoint="big-coder")[0]
    assert len(primary.prompt) > 2 * len(sent.prompt)


async def test_a_fixed_prompt_too_long_for_an_endpoint_skips_it(
    tmp_path: Path, fresh_fleet_state: None
) -> None:
    fleet = dependency_fleet(tmp_path)
    chat = FakeChat().install(fleet)
    runtime = get_runtime(fleet)
    task = Task(id="code", agent="coder", description="Write the code. " * 250)

    result = await run_task(task, "Goal", {}, Context(fleet=fleet), runtime, "run-1")

    assert result.status == "completed" and result.endpoint == "big-coder"
    task = Task(id="code", agent="coder", description="Write the code. " * 600)
    result = await run_task(task, "Goal", {}, Context(fleet=fleet), runtime, "run-2")
    assert result.status == "failed"
    assert result.attempts == ["big-coder", "small-tools"]
    assert "does not fit" in (result.error or "") and "context" in (result.error or "")
    assert not chat.calls_for(task="code", endpoint="small-tools")


async def test_check_goal_fits_names_the_smallest_context(
    tmp_path: Path, fresh_fleet_state: None
) -> None:
    runtime = get_runtime(dependency_fleet(tmp_path))
    await check_goal_fits("Print a hook", runtime)
    with pytest.raises(PlanError) as raised:
        await check_goal_fits("word " * 500, runtime)
    message = str(raised.value)
    assert re.search(r"goal is (about |at most )?\d+ tokens", message), message
    assert "2048" in message and ("small-tools" in message or "small-reasoning" in message)
    assert "shorten the goal" in message and "ctx" in message


async def test_the_planner_refuses_a_goal_too_long_before_any_model_call(
    fake_fleet: FakeFleet,
) -> None:
    with pytest.raises(PlanError, match="shorten the goal"):
        await arun_goal("Explain this. " * 400, fleet=fake_fleet.path, voice=False)
    assert fake_fleet.chat.calls == []


def test_graph_does_not_speak_the_engine_wire_protocol() -> None:
    """Tokenizer and ``/slots`` calls live in ``endpoints.clients.llamacpp``, not in ``graph``."""
    root = Path(graph.__file__).parent
    wire = re.compile(r"import httpx|httpx\.|/(de)?tokenize[\"']|/slots[\"']")
    offenders: list[Any] = [
        (path.name, found.group())
        for path in root.rglob("*.py")
        for found in wire.finditer(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
