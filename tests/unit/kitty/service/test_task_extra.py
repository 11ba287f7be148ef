"""``Task.extra`` goes into the request body: only sampling and engine keys get through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

import kitty.service._runs
from agents import DEFAULT_AGENTS
from graph import Plan, RunFinished, RunMetrics, RunResult, Task
from graph.planning._validation import check_given_plan, repair_plan
from kitty.errors import PlanError
from kitty.service import ServiceSettings, create_app

AGENTS = list(DEFAULT_AGENTS)
QUERY = "/api/query/parallel"

SAMPLING = {
    "temperature": 0.2,
    "top_p": 0.9,
    "top_k": 20,
    "min_p": 0.05,
    "typical_p": 1.0,
    "repeat_penalty": 1.1,
    "repeat_last_n": 64,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "mirostat": 0,
    "mirostat_tau": 5.0,
    "mirostat_eta": 0.1,
    "seed": 7,
    "ignore_eos": True,
    "n_probs": 0,
    "dry_multiplier": 0.0,
    "dry_base": 1.75,
    "dry_allowed_length": 2,
    "xtc_probability": 0.0,
    "xtc_threshold": 0.1,
    "logit_bias": [[15043, -1.0]],
    "grammar": 'root ::= "yes" | "no"',
    "samplers": ["top_k", "temperature"],
    "cache_prompt": True,
}


def test_sampling_and_engine_keys_are_accepted() -> None:
    task = Task(id="a", agent="coder", description="d", extra=SAMPLING)
    assert task.extra == SAMPLING


@pytest.mark.parametrize(
    "key", ["messages", "stream", "model", "n_predict", "id_slot", "max_tokens", "prompt", "bogus"]
)
def test_request_shaping_and_unknown_keys_are_refused(key: str) -> None:
    with pytest.raises(ValidationError) as info:
        Task(id="a", agent="coder", description="d", extra={key: 1})
    message = str(info.value)
    assert repr(key) in message
    assert "temperature" in message and "ignore_eos" in message  # lists what is allowed


def test_refusals_say_what_to_use_instead() -> None:
    with pytest.raises(ValidationError, match="max_tokens"):
        Task(id="a", agent="coder", description="d", extra={"n_predict": 5})


def test_given_plan_with_a_bad_extra_is_a_plan_error_naming_the_key() -> None:
    plan = {"tasks": [{"id": "a", "agent": "coder", "description": "d", "extra": {"stream": 1}}]}
    with pytest.raises(PlanError, match=r"tasks\.0\.extra: .*'stream'"):
        check_given_plan(plan, agents=AGENTS)


def test_planner_repair_drops_a_bad_extra_with_a_warning() -> None:
    raw = [
        {"id": "a", "agent": "coder", "description": "d", "extra": {"model": "x", "seed": 1}},
        {"id": "b", "agent": "coder", "description": "d", "extra": {"seed": 2}},
    ]
    plan = repair_plan(raw, agents=AGENTS, goal="g", max_tasks=4)
    assert [t.extra for t in plan.tasks] == [{}, {"seed": 2}]
    assert any("task a" in w and "'model'" in w for w in plan.warnings)


def test_planner_output_without_extra_is_untouched() -> None:
    raw = [{"id": "a", "agent": "coder", "description": "d", "dependencies": []}]
    plan = repair_plan(raw, agents=AGENTS, goal="g", max_tasks=4)
    assert plan.tasks[0].extra == {} and plan.warnings == []


async def test_service_answers_422_naming_the_key_and_the_allowed_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def never(goal: str, **kwargs: Any) -> AsyncIterator[Any]:
        plan = Plan(tasks=[Task(id="a", agent="coder", description="d")])
        yield RunFinished(
            run_id="r",
            result=RunResult(
                goal=goal, answer="", plan=plan, tasks=[], metrics=RunMetrics(), run_id="r"
            ),
        )

    monkeypatch.setattr(kitty.service._runs, "astream_goal", never)
    app = create_app(ServiceSettings(fleet="embedded", start_embedded=False, api_token=None))
    transport = httpx.ASGITransport(app=app)
    task = {"id": "a", "agent": "coder", "description": "d", "extra": {"messages": []}}
    payload = {"query": "q", "max_tasks": 1, "plan": {"tasks": [task]}}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for path in (QUERY, f"{QUERY}/stream"):
            response = await client.post(path, json=payload)
            assert response.status_code == 422, response.text
            body = response.json()
            assert body["field"] == "plan.tasks.0.extra"
            assert "'messages'" in body["error"] and "temperature" in body["error"]
