"""Whose memory a run uses: bound to the caller's token (security review finding 9)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import kitty.service._runs
from graph import Plan, RunFinished, RunMetrics, RunResult, Task
from kitty.errors import SettingsError
from kitty.service import ServiceSettings, create_app
from kitty.service._callers import parse_user_tokens

OPERATOR_TOKEN = "operator-token-0123456789"
ALICE_TOKEN = "alice-token-0123456789ab"
BOB_TOKEN = "bob-token-0123456789abcd"
PLAN = {"tasks": [{"id": "a", "agent": "analyst", "description": "Recall my notes."}]}


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The settings of every run the service starts (no model is called)."""
    seen: list[dict[str, Any]] = []

    async def recorded(goal: str, **kwargs: Any) -> AsyncIterator[Any]:
        seen.append(kwargs)
        plan = Plan(tasks=[Task(id="a", agent="analyst", description="d")])
        result = RunResult(
            goal=goal, answer="", plan=plan, tasks=[], metrics=RunMetrics(), run_id="r"
        )
        yield RunFinished(run_id="r", result=result)

    monkeypatch.setattr(kitty.service._runs, "astream_goal", recorded)
    return seen


async def post(token: str, **body: Any) -> httpx.Response:
    settings = ServiceSettings(
        fleet="embedded",
        start_embedded=False,
        api_token=OPERATOR_TOKEN,
        user_tokens={"alice": ALICE_TOKEN, "bob": BOB_TOKEN},
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.post(
            "/api/query/parallel",
            json={"query": "What do I remember?", "max_tasks": 1, "plan": PLAN} | body,
            headers={"Authorization": f"Bearer {token}"},
        )


async def test_a_user_token_runs_on_its_own_notes(runs: list[dict[str, Any]]) -> None:
    answer = await post(ALICE_TOKEN)
    assert answer.status_code == 200, answer.text
    assert runs[-1]["user_id"] == "alice"


async def test_a_user_token_cannot_name_another_user(runs: list[dict[str, Any]]) -> None:
    answer = await post(ALICE_TOKEN, user="bob")
    assert answer.status_code == 403
    assert answer.json()["field"] == "user" and "'alice'" in answer.json()["error"]
    assert runs == []


async def test_the_operator_runs_on_the_fleet_user_or_names_one(
    runs: list[dict[str, Any]],
) -> None:
    assert (await post(OPERATOR_TOKEN)).status_code == 200
    assert "user_id" not in runs[-1]  # the fleet's [memory] user_id
    assert (await post(OPERATOR_TOKEN, user="bob")).status_code == 200
    assert runs[-1]["user_id"] == "bob"


async def test_an_unknown_token_is_refused(runs: list[dict[str, Any]]) -> None:
    answer = await post("not-a-token-of-anyone-here")
    assert answer.status_code == 401 and runs == []


def test_user_tokens_are_parsed_and_checked() -> None:
    assert parse_user_tokens(f"alice={ALICE_TOKEN}, bob={BOB_TOKEN}") == {
        "alice": ALICE_TOKEN,
        "bob": BOB_TOKEN,
    }
    with pytest.raises(SettingsError, match="USER=TOKEN"):
        parse_user_tokens("alice")
    with pytest.raises(SettingsError, match="at least 16"):
        parse_user_tokens("alice=short")
    with pytest.raises(SettingsError, match="not a usable name"):
        parse_user_tokens(f"al ice={ALICE_TOKEN}")
    with pytest.raises(SettingsError, match="twice"):
        parse_user_tokens(f"alice={ALICE_TOKEN},bob={ALICE_TOKEN}")


def test_a_user_may_not_share_the_operator_token() -> None:
    with pytest.raises(ValueError, match="operator's token"):
        ServiceSettings(
            fleet="embedded", api_token=OPERATOR_TOKEN, user_tokens={"alice": OPERATOR_TOKEN}
        )
