"""Caps of the memory store: note size and notes per namespace (user and agent).

Security review finding 9 (issue 24): notes were unbounded in count and size, so one
caller (or a fetched page steering a model) could fill the store without end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.tools import BaseTool
from pydantic import ValidationError

from endpoints.config import DEFAULT_MAX_NOTE_CHARS, DEFAULT_MAX_NOTES, MemorySettings, load_fleet
from kitty.errors import ToolError
from kitty.tools._memory import aclose_memory_stores, memory_store, memory_tools


def _by_name(tools: list[BaseTool]) -> dict[str, BaseTool]:
    return {tool.name: tool for tool in tools}


def test_the_caps_have_sane_defaults_and_bounds() -> None:
    """Security review finding 9: both caps exist, with defaults, and refuse nonsense."""
    settings = MemorySettings()
    assert settings.max_note_chars == DEFAULT_MAX_NOTE_CHARS == 2000
    assert settings.max_notes == DEFAULT_MAX_NOTES == 1000
    for bad in ({"max_note_chars": 0}, {"max_notes": 0}, {"max_notes": 1_000_000}):
        with pytest.raises(ValidationError):
            MemorySettings.model_validate(bad)


async def test_a_note_over_the_size_cap_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """Security review finding 9: an oversized note is refused, nothing is stored."""
    settings = MemorySettings(max_note_chars=100)
    store = await memory_store(settings, tmp_path / "m.sqlite")
    tools = _by_name(memory_tools(store, "researcher", "ann", settings=settings))
    with pytest.raises(ToolError) as refused:
        await tools["memory.store"].ainvoke({"text": "x" * 101, "key": "long"})
    message = str(refused.value)
    assert "101 characters" in message and "at most 100" in message
    assert "[memory] max_note_chars" in message and "shorter" in message
    answer = await tools["memory.recall"].ainvoke({"query": "x"})
    assert answer.endswith("(nothing stored yet)")
    assert "stored under key" in await tools["memory.store"].ainvoke({"text": "y" * 100})
    await aclose_memory_stores()


async def test_the_oldest_notes_are_forgotten_beyond_the_count_cap(tmp_path: Path) -> None:
    """Security review finding 9: a namespace keeps its newest max_notes notes."""
    settings = MemorySettings(max_notes=3)
    store = await memory_store(settings, tmp_path / "m.sqlite")
    tools = _by_name(memory_tools(store, "researcher", "ann", settings=settings))
    other = _by_name(memory_tools(store, "researcher", "bob", settings=settings))
    await other["memory.store"].ainvoke({"text": "bob note one"})
    answers = [
        await tools["memory.store"].ainvoke({"text": f"ann note {n}", "key": f"n{n}"})
        for n in range(1, 6)
    ]
    assert answers[2] == "stored under key 'n3'"
    assert answers[3].startswith("stored under key 'n4'; forgot the oldest note ('n1')")
    assert "at most 3 notes are kept ([memory] max_notes)" in answers[3]
    # Replacing a note under its key does not count as a new one.
    assert await tools["memory.store"].ainvoke({"text": "ann note 3b", "key": "n3"}) == (
        "stored under key 'n3'"
    )
    recalled = await tools["memory.recall"].ainvoke({"query": "ann note", "limit": 10})
    kept = sorted(line.split("]")[0].split("[")[1] for line in recalled.splitlines()[1:])
    assert kept == ["n3", "n4", "n5"]
    # Another namespace is counted on its own.
    assert "bob note one" in await other["memory.recall"].ainvoke({"query": "bob"})
    await aclose_memory_stores()


async def test_the_fleet_files_memory_caps_reach_the_tools(tmp_path: Path) -> None:
    """Security review finding 9: [memory] max_note_chars in the fleet file is honoured."""
    from kitty.tools._toolset import tools_for

    memory = MemorySettings(enabled=True, max_note_chars=50, max_notes=5)
    fleet = load_fleet("embedded").model_copy(update={"memory": memory})
    offered = await tools_for(
        ["memory.store"], fleet, agent="researcher", memory_path=tmp_path / "m.sqlite"
    )
    with pytest.raises(ToolError, match="at most 50"):
        await offered.tools["memory.store"].ainvoke({"text": "z" * 51})
    await aclose_memory_stores()
