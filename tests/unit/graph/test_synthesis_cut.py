"""``answer_was_cut``: an answer stopped at ``synthesis_max_tokens`` is told apart."""

from __future__ import annotations

from graph import Plan, answer_was_cut, arun_goal
from tests.conftest import FakeFleet
from tests.fake_chat import Reply
from tests.helpers import simple_task


async def test_an_answer_stopped_at_its_cap_is_reported_cut(fake_fleet: FakeFleet) -> None:
    plan = Plan(tasks=[simple_task("a")])
    fake_fleet.chat.script(Reply("half an ans", finish_reason="length"), phase="synthesizer")

    cut = await arun_goal("Go", plan=plan, fleet=fake_fleet.path, voice=False)
    whole = await arun_goal("Go", plan=plan, fleet=fake_fleet.path, voice=False)

    assert answer_was_cut(cut) and cut.answer == "half an ans"
    assert not answer_was_cut(whole)
