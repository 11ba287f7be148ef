"""``astream_goal`` options seen from the outside, with the scripted fake model."""

from __future__ import annotations

from graph import AnswerDelta, Plan, RunFinished, astream_goal
from tests.conftest import FakeFleet
from tests.fake_chat import Reply
from tests.helpers import simple_task


async def test_stream_answer_yields_the_answer_and_summary_token_by_token(
    fake_fleet: FakeFleet,
) -> None:
    chat = fake_fleet.chat
    chat.script(Reply("the merged answer in five words"), phase="synthesizer")
    chat.script(Reply("short voice line"), phase="summarizer")
    plan = Plan(tasks=[simple_task("a"), simple_task("b", "coder")])

    events = [
        e
        async for e in astream_goal(
            "Merge", plan=plan, fleet=fake_fleet.path, voice=True, stream_answer=True
        )
    ]

    deltas = [e for e in events if isinstance(e, AnswerDelta)]
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    answer = [d.text for d in deltas if d.phase == "synthesizing"]
    summary = [d.text for d in deltas if d.phase == "summarizing"]
    assert len(answer) > 1  # piece by piece, not one block
    assert "".join(answer) == finished.result.answer
    assert "".join(summary) == finished.result.voice_summary
    assert {d.run_id for d in deltas} == {finished.result.run_id}
    assert not any("output of" in d.text for d in deltas)  # task outputs are not the answer


async def test_without_stream_answer_no_answer_pieces_are_sent(fake_fleet: FakeFleet) -> None:
    plan = Plan(tasks=[simple_task("a")])

    events = [e async for e in astream_goal("Go", plan=plan, fleet=fake_fleet.path, voice=False)]

    assert not any(isinstance(e, AnswerDelta) for e in events)
    assert isinstance(events[-1], RunFinished)
