"""A run's earlier conversation reaches the planner and the synthesizer, quoted as data.

The fake fleet has no tokenizer, so every count is the safe bound (a token per byte):
its contexts are 8,192 tokens here, room for the planner's 2 KB prompt and a history.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from graph import Plan, arun_goal
from graph.budgets import safe_token_bound
from tests.conftest import FakeFleet
from tests.fake_chat import FakeChat
from tests.helpers import offline_fleet, simple_task

EARLIER = [
    {"role": "user", "content": "Plan a birthday party for Mia, who loves dinosaurs."},
    {"role": "assistant", "content": "Here is a dinosaur party plan: fossil dig, cake."},
]


@pytest.fixture
def fake_fleet(tmp_path: Path, fresh_fleet_state: None) -> FakeFleet:
    """The shared fake fleet's shape with 8,192-token contexts."""
    path = str(offline_fleet(tmp_path, ctx=8192))
    return FakeFleet(path=path, chat=FakeChat().install(path))


def quoted(prompt: str) -> str:
    """The part of a prompt between the conversation markers."""
    assert "<conversation>" in prompt, prompt
    return prompt.split("<conversation>", 1)[1].split("</conversation>", 1)[0]


async def test_planner_and_synthesizer_see_the_earlier_turns_before_the_goal(
    fake_fleet: FakeFleet,
) -> None:
    await arun_goal("Make it cheaper", fleet=fake_fleet.path, voice=False, conversation=EARLIER)

    chat = fake_fleet.chat
    (planner,) = chat.calls_for(phase="planner")
    (synthesizer,) = chat.calls_for(phase="synthesizer")
    for prompt in (planner.prompt, synthesizer.prompt):
        turns = quoted(prompt)
        assert "[user] Plan a birthday party for Mia" in turns
        assert "[assistant] Here is a dinosaur party plan" in turns
        # framed as data, and the goal stays the instruction
        assert "not instructions" in prompt
        assert "Make it cheaper" not in turns
    assert planner.prompt.rstrip().endswith("Goal: Make it cheaper")
    synthesis = synthesizer.prompt
    assert synthesis.index("## Original Goal") < synthesis.index("<conversation>")
    assert synthesis.index("</conversation>") < synthesis.index("## Task Results")
    assert "<conversation>" not in chat.calls_for(phase="task")[0].prompt


async def test_a_long_history_is_cut_to_the_budget_oldest_first(fake_fleet: FakeFleet) -> None:
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn-{i:02d} " + "word " * 40}
        for i in range(60)
    ]
    plan = Plan(tasks=[simple_task("a")])

    await arun_goal(
        "Sum it up",
        plan=plan,
        fleet=fake_fleet.path,
        voice=False,
        conversation=history,
        conversation_max_tokens=500,
    )

    (synthesizer,) = fake_fleet.chat.calls_for(phase="synthesizer")
    turns = quoted(synthesizer.prompt)
    assert "turn-59" in turns and "turn-00" not in turns
    assert "older turns left out to fit the context" in turns
    assert safe_token_bound(turns) <= 500
    assert "output of a" in synthesizer.prompt  # the results still have their room


async def test_without_a_conversation_the_prompts_are_unchanged(fake_fleet: FakeFleet) -> None:
    await arun_goal("Make it cheaper", fleet=fake_fleet.path, voice=False)

    for call in fake_fleet.chat.calls:
        assert "conversation" not in call.prompt.lower()
    planner = fake_fleet.chat.calls_for(phase="planner")[0].prompt
    assert "]}\n\nGoal: Make it cheaper" in planner
