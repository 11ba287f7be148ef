"""memory.store / memory.recall on a real SQLite store, across processes and namespaces."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from langchain_core.tools import BaseTool

from endpoints.config import MemorySettings
from kitty.errors import ToolSourceError
from kitty.tools._memory import aclose_memory_stores, memory_store, memory_tools

REPO = Path(__file__).resolve().parents[4]


def _by_name(tools: list[BaseTool]) -> dict[str, BaseTool]:
    return {tool.name: tool for tool in tools}


async def test_stored_in_one_process_recalled_in_another(tmp_path: Path) -> None:
    db = tmp_path / "memory.sqlite"
    script = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from endpoints.config._tool_config import MemorySettings
        from kitty.tools._memory import aclose_memory_stores, memory_store, memory_tools

        async def main():
            store = await memory_store(MemorySettings(store="sqlite:{db}"), Path("unused"))
            tools = {{t.name: t for t in memory_tools(store, "researcher", "ann")}}
            print(await tools["memory.store"].ainvoke(
                {{"text": "The Bambu X1 prints PETG at 250 C", "key": "petg"}}))
            await tools["memory.store"].ainvoke({{"text": "Hooks need 4 walls"}})
            await aclose_memory_stores()

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "stored under key 'petg'" in done.stdout

    store = await memory_store(MemorySettings(), default_path=db)
    tools = _by_name(memory_tools(store, "researcher", "ann"))
    recalled = await tools["memory.recall"].ainvoke({"query": "what temperature for PETG?"})
    lines = recalled.splitlines()
    assert lines[1] == "1. [petg] The Bambu X1 prints PETG at 250 C"
    assert "Hooks need 4 walls" not in recalled
    await aclose_memory_stores()


async def test_namespaces_keep_agents_and_users_apart(tmp_path: Path) -> None:
    store = await memory_store(MemorySettings(), tmp_path / "m.sqlite")
    ann = _by_name(memory_tools(store, "researcher", "ann.lee@example.com"))
    bob = _by_name(memory_tools(store, "researcher", "bob"))
    ann_cad = _by_name(memory_tools(store, "cad", "ann.lee@example.com"))
    # A prefix of another agent's name must not leak into it either.
    ann_res2 = _by_name(memory_tools(store, "researcher2", "ann.lee@example.com"))
    await ann["memory.store"].ainvoke({"text": "Ann prefers matte black filament"})
    await ann_res2["memory.store"].ainvoke({"text": "Researcher2 filament note"})

    assert "matte black" in await ann["memory.recall"].ainvoke({"query": "filament"})
    for other in (bob, ann_cad):
        answer = await other["memory.recall"].ainvoke({"query": "filament"})
        assert answer == "no stored note matches 'filament' (nothing stored yet)"
    assert "Researcher2" not in await ann["memory.recall"].ainvoke({"query": "filament"})
    await aclose_memory_stores()


async def test_recall_ranks_by_shared_words_and_says_when_nothing_matches(
    tmp_path: Path,
) -> None:
    store = await memory_store(MemorySettings(), tmp_path / "m.sqlite")
    tools = _by_name(memory_tools(store, "planner", "default"))
    remember = tools["memory.store"]
    for text in (
        "PETG hooks hold 2 kg with 40% infill",
        "PLA is brittle in the cold",
        "PETG needs a 250 C nozzle",
        "The garage printer is a Bambu X1",
    ):
        await remember.ainvoke({"text": text})
    await remember.ainvoke({"text": "PLA is brittle in the cold"})  # same text: one note

    answer = await tools["memory.recall"].ainvoke({"query": "PETG hook infill", "limit": 2})
    lines = answer.splitlines()
    assert lines[0].startswith("Notes sharing words")
    assert lines[1].endswith("PETG hooks hold 2 kg with 40% infill")
    assert lines[2].endswith("PETG needs a 250 C nozzle")
    assert len(lines) == 3

    # Common words alone do not match every note.
    none = await tools["memory.recall"].ainvoke({"query": "what is the resin?"})
    first, *latest = none.splitlines()
    assert first == "no stored note matches 'what is the resin?'; the most recent notes:"
    assert len(latest) == 4 and all(line.startswith("- [") for line in latest)

    await remember.ainvoke({"text": "The garage printer is a Prusa MK4", "key": "printer"})
    await remember.ainvoke({"text": "The garage printer is a Voron", "key": "printer"})
    garage = await tools["memory.recall"].ainvoke({"query": "Voron Prusa"})
    assert "Voron" in garage and "Prusa" not in garage
    await aclose_memory_stores()


async def test_one_store_per_location_and_loop(tmp_path: Path) -> None:
    settings = MemorySettings(store=str(tmp_path / "shared.sqlite"))
    first, second = await asyncio.gather(
        memory_store(settings, tmp_path / "unused"), memory_store(settings, tmp_path / "x")
    )
    assert first is second
    assert await memory_store(settings, tmp_path / "unused") is first
    await aclose_memory_stores()
    assert await memory_store(settings, tmp_path / "unused") is not first
    await aclose_memory_stores()


@pytest.mark.parametrize("spell", ["sqlite:{path}", "sqlite:///{path}", "{path}"])
async def test_store_locations_are_spelled_three_ways(tmp_path: Path, spell: str) -> None:
    path = tmp_path / "deep" / "memory.sqlite"
    await memory_store(MemorySettings(store=spell.format(path=path)), tmp_path / "unused")
    assert path.is_file()
    await aclose_memory_stores()


async def test_unopenable_stores_name_their_location(tmp_path: Path) -> None:
    with pytest.raises(ToolSourceError, match=f"memory store {tmp_path} is a directory"):
        await memory_store(MemorySettings(store=str(tmp_path)), tmp_path / "unused")
    bogus = tmp_path / "notes.sqlite"
    bogus.write_bytes(b"these are my notes, not a database" * 100)
    with pytest.raises(ToolSourceError, match=f"memory store {bogus} is not a usable SQLite"):
        await memory_store(MemorySettings(), bogus)
    # Not remembered: once the file is fixed, the next call opens it.
    bogus.unlink()
    assert await memory_store(MemorySettings(), bogus) is not None
    await aclose_memory_stores()


async def test_unreachable_postgres_names_it_without_the_password(tmp_path: Path) -> None:
    url = "postgresql://kitty:s3cret@127.0.0.1:1/kitty?connect_timeout=2"
    with pytest.raises(ToolSourceError) as failed:
        await memory_store(MemorySettings(store=url), tmp_path / "unused")
    message = str(failed.value)
    assert "memory store postgresql://***@127.0.0.1:1/kitty" in message
    assert "s3cret" not in message
    assert "[memory] store" in message
