"""Tool calls on Ollama: ``tools`` through ChatOllama, calls read from ``message.tool_calls``.

No Ollama daemon can run here; ``tests/fakes/ollama_server.py`` speaks Ollama's documented
``/api/chat`` wire format (it calls the first offered tool once, then answers).
"""

from __future__ import annotations

from pathlib import Path

from langchain_core.tools import tool

from graph import arun_goal
from tests.fakes.ollama_server import FakeOllama
from tests.helpers import TIERS, endpoint_spec, write_fleet

MODEL = "qwen3:0.6b"


async def test_an_ollama_agent_gets_tools_and_its_call_runs(
    tmp_path: Path, fresh_fleet_state: None
) -> None:
    seen: list[str] = []

    @tool
    async def lookup_part(part_id: str) -> str:
        """Stock of a part number."""
        seen.append(part_id)
        return f"{part_id}: 240 in stock"

    with FakeOllama(model=MODEL) as fake:
        spec = endpoint_spec("fake-ollama", fake.port, kind="ollama", model=MODEL, slots=2)
        spec["supports_tools"] = True
        fleet = write_fleet(tmp_path / "fleet.toml", {tier: [spec] for tier in TIERS})
        plan = {
            "tasks": [
                {
                    "id": "stock",
                    "agent": "coder",
                    "description": "How many M4 bolts are in stock?",
                    "tool_choice": "lookup_part",
                }
            ]
        }
        result = await arun_goal(
            "Stock check",
            fleet=str(fleet),
            plan=plan,
            tools=[lookup_part],
            agent_tools={"coder": ["lookup_part"]},
            voice=False,
        )
        bodies = [b for b in fake.chat_requests if b and b.get("messages")]
    task = result.tasks[0]
    assert task.status == "completed", task.error
    [record] = task.tool_calls
    assert record.name == "lookup_part" and record.ok and seen == [record.args["part_id"]]
    first, second = bodies[0], bodies[1]
    assert [t["function"]["name"] for t in first["tools"]] == ["lookup_part"]
    assert "format" not in first  # native tools: no schema constraint of our own
    tool_messages = [m for m in second["messages"] if m.get("role") == "tool"]
    assert tool_messages and "240 in stock" in tool_messages[0]["content"]
    assert task.output.strip()
