"""``room_after(..., shares=...)``: no /tokenize round trip when every share certainly fits.

The caller's prompt must be the same either way: the dependency block built with the
room from the fast path equals the one built with the counted room.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from endpoints.clients import llamacpp as engine
from endpoints.config import EndpointConfig
from graph import prompts
from graph.budgets._budget import PROMPT_MARGIN_TOKENS, room_after, safe_token_bound
from graph.execution._task_messages import dependency_block
from graph.schemas import Task, TaskResult

ENDPOINT = EndpointConfig(
    name="e", kind="llamacpp", base_url="http://127.0.0.1:9", model="m", ctx=2048
)


@pytest.fixture
def tokenizer_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A fake tokenizer (4 bytes a token, never more than the safe bound) that logs calls."""
    calls: list[str] = []

    async def count(endpoint: EndpointConfig, text: str, client: Any = None) -> int:
        calls.append(text)
        return len(text.encode()) // 4 + 1

    async def cut(
        endpoint: EndpointConfig, text: str, budget: int, client: Any = None, **_: Any
    ) -> str:
        calls.append(text)
        return text if len(text.encode()) // 4 + 1 <= budget else text[: budget * 4 - 8]

    monkeypatch.setattr(engine, "count_tokens", count)
    monkeypatch.setattr(engine, "cut_to_tokens", cut)
    return calls


def _deps(outputs: list[str]) -> tuple[Task, dict[str, TaskResult]]:
    ids = [f"d{i}" for i in range(len(outputs))]
    task = Task(id="t", agent="analyst", description="join", dependencies=ids)
    deps = {
        i: TaskResult(task_id=i, status="completed", agent="researcher", output=o)
        for i, o in zip(ids, outputs, strict=True)
    }
    return task, deps


def _shares(deps: dict[str, TaskResult]) -> list[str]:
    return [
        prompts.DEPENDENCY_OK.format(task_id=i, agent=r.agent, output=r.output)
        for i, r in deps.items()
    ]


def test_fitting_shares_need_no_tokenizer(tokenizer_calls: list[str]) -> None:
    fixed = "system prompt and task " * 10
    _task, deps = _deps(["short result one", "short result two"])
    room = asyncio.run(room_after(fixed, ENDPOINT, 256, shares=_shares(deps)))
    assert tokenizer_calls == []
    assert room == ENDPOINT.ctx - 256 - safe_token_bound(fixed) - PROMPT_MARGIN_TOKENS


def test_a_share_that_may_not_fit_is_counted(tokenizer_calls: list[str]) -> None:
    fixed = "system prompt and task " * 10
    _task, deps = _deps(["x" * 4000, "short"])
    room = asyncio.run(room_after(fixed, ENDPOINT, 256, shares=_shares(deps)))
    assert tokenizer_calls == [fixed]
    assert room == ENDPOINT.ctx - 256 - (len(fixed) // 4 + 1) - PROMPT_MARGIN_TOKENS


def test_without_shares_it_counts_as_before(tokenizer_calls: list[str]) -> None:
    asyncio.run(room_after("fixed", ENDPOINT, 16))
    assert tokenizer_calls == ["fixed"]


@pytest.mark.parametrize(
    "outputs",
    [
        ["a" * 100, "b" * 200, "c" * 50],
        ["é" * 700, "z" * 10],  # multi-byte: the byte bound is what decides
        ["w" * 1700],
        ["q" * 900, "r" * 900],  # just around one share
    ],
)
def test_the_dependency_block_is_the_same_either_way(
    tokenizer_calls: list[str], outputs: list[str]
) -> None:
    fixed = "system prompt and task " * 10
    task, deps = _deps(outputs)

    async def both() -> tuple[str, str]:
        fast = await room_after(fixed, ENDPOINT, 256, shares=_shares(deps))
        counted = await room_after(fixed, ENDPOINT, 256)
        return (
            await dependency_block(task, deps, ENDPOINT, fast),
            await dependency_block(task, deps, ENDPOINT, counted),
        )

    fast_block, counted_block = asyncio.run(both())
    assert fast_block == counted_block
