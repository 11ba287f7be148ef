"""Tool calls made by a real model: SmolLM2 on the embedded llama.cpp fleet.

The embedded fleet serves SmolLM2 with a ChatML template that carries Hermes-style tool
blocks, so llama.cpp constrains each call with a grammar and parses it back. The tools
are real: the fabrication MCP server (stdio), the memory store (SQLite), and loopback
HTTP servers for ``fetch_webpage`` and for ``web_search`` (SearXNG cannot run here: that
server speaks SearXNG's documented JSON format). Named or ``required`` tool choices are
used: under ``auto`` the 135M model writes text.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from endpoints.clients import llamacpp as engine
from endpoints.config import FleetConfig, load_fleet, profiles_dir
from endpoints.fleet import get_runtime
from graph import arun_goal, astream_goal
from graph.events import TaskToolCall
from kitty.tools._mcp import aclose_mcp_sessions
from tests.helpers import busy_slots
from tests.mcp_servers.fabrication import QUEUE_MARKER
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
PAGE_MARKER = "HOOK-SPEC-5521"
SEARCH_MARKER = "Wall hooks for 2 kg bags"


def _table(name: str, lines: dict[str, Any]) -> str:
    body = "\n".join(f"{key} = {json.dumps(value)}" for key, value in lines.items())
    return f"\n[{name}]\n{body}\n"


class _Loopback(BaseHTTPRequestHandler):
    """A page for ``fetch_webpage`` and a SearXNG ``/search?format=json`` answer."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if self.path.startswith("/search"):
            body = json.dumps(
                {
                    "query": "hooks",
                    "number_of_results": 1,
                    "results": [
                        {
                            "url": "https://example.org/hooks",
                            "title": SEARCH_MARKER,
                            "content": "Use PETG at 40% infill.",
                            "engine": "duckduckgo",
                        }
                    ],
                }
            ).encode()
            kind = "application/json"
        else:
            body = f"<html><title>Hook</title><body><p>{PAGE_MARKER}</p></body></html>".encode()
            kind = "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def loopback() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_Loopback,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


@pytest.fixture
def tool_fleet(
    embedded_fleet: FleetConfig, tmp_path: Path, loopback: tuple[str, list[str]]
) -> tuple[str, Path]:
    """The embedded fleet file plus the fabrication MCP server, fetch, search and memory."""
    base_url, _ = loopback
    log = tmp_path / "calls.jsonl"
    text = (profiles_dir() / "embedded.toml").read_text()
    text += "\n[mcp.fabrication]\n" + "\n".join(
        [
            'transport = "stdio"',
            f"command = {json.dumps(sys.executable)}",
            'args = ["-m", "tests.mcp_servers.fabrication"]',
            f"cwd = {json.dumps(str(REPO))}",
            f"env = {{ FABRICATION_CALL_LOG = {json.dumps(str(log))} }}",
        ]
    )
    text += _table("fetch", {"allowed_hosts": ["127.0.0.1"], "blocked_hosts": ["blocked.test"]})
    text += _table("search", {"searxng_url": base_url})
    text += _table("memory", {"store": str(tmp_path / "memory.sqlite")})
    path = tmp_path / "tools-fleet.toml"
    path.write_text(text)
    load_fleet(path)
    return str(path), log


def plan(task_id: str, agent: str, description: str, choice: str) -> dict[str, Any]:
    return {
        "tasks": [
            {
                "id": task_id,
                "agent": agent,
                "description": description,
                "tool_choice": choice,
                "max_tokens": 48,
                "extra": {"seed": 7},
            }
        ]
    }


async def run(fleet: str, the_plan: dict[str, Any], **settings: Any) -> Any:
    try:
        return await arun_goal(
            "Print a wall hook",
            fleet=fleet,
            plan=the_plan,
            voice=False,
            synthesis_max_tokens=16,
            **settings,
        )
    finally:
        await aclose_mcp_sessions()


async def test_embedded_servers_report_tool_support(
    embedded_fleet: FleetConfig, fresh_fleet_state: None
) -> None:
    for endpoint in embedded_fleet.all_endpoints():
        assert await engine.template_supports_tools(endpoint), endpoint.name


async def test_the_fabricator_checks_the_queue_through_mcp(tool_fleet: tuple[str, Path]) -> None:
    fleet, log = tool_fleet
    result = await run(
        fleet,
        plan("queue", "fabricator", "Check the print queue.", "fabrication.check_queue"),
    )
    task = result.tasks[0]
    assert task.status == "completed", task.error
    first = task.tool_calls[0]
    assert first.name == "fabrication.check_queue" and first.ok, first
    assert QUEUE_MARKER in first.output
    calls = [json.loads(line)["tool"] for line in log.read_text().splitlines()]
    assert calls[0] == "check_queue"
    assert result.metrics.tool_calls >= 1
    # The synthesizer saw the tool's answer beside the task's output.
    assert task.tools_offered == ["fabrication.check_queue", "fabrication.submit_job"]


async def test_while_a_slow_tool_runs_the_server_slot_is_idle(
    tool_fleet: tuple[str, Path],
) -> None:
    fleet, _ = tool_fleet
    tools = load_fleet(fleet).tier("tools").endpoints[0]
    samples: list[int] = []
    held: list[int] = []
    seen: list[TaskToolCall] = []
    async for event in astream_goal(
        "Print a wall hook",
        fleet=fleet,
        plan=plan("slow", "fabricator", "Check the printers slowly.", "fabrication.slow_check"),
        agent_tools={"fabricator": ["fabrication.slow_check"]},
        voice=False,
        synthesis_max_tokens=16,
    ):
        if isinstance(event, TaskToolCall):
            seen.append(event)
            if event.phase == "started":
                await asyncio.sleep(0.5)  # the tool sleeps its ``seconds`` (3 by default)
                samples.append(busy_slots(tools.base_url))
                runtime = get_runtime(fleet)
                held.append(sum(h.limiter.stats().in_use for h in runtime.candidates(["tools"])))
    await aclose_mcp_sessions()
    assert [e.phase for e in seen[:2]] == ["started", "finished"], seen
    if seen[1].ok:  # the model may ask for more than 3 s; either way the sample holds
        assert seen[1].seconds > 0.5
    assert samples and samples[0] == 0, samples  # llama.cpp's own /slots: nothing busy
    assert held[0] == 0


async def test_a_tool_that_raises_is_told_to_the_model(tool_fleet: tuple[str, Path]) -> None:
    fleet, _ = tool_fleet
    result = await run(
        fleet,
        plan("sensor", "fabricator", "Read the chamber sensor.", "fabrication.broken_sensor"),
        agent_tools={"fabricator": ["fabrication.broken_sensor"]},
    )
    task = result.tasks[0]
    assert task.status == "completed", task.error
    first = task.tool_calls[0]
    assert not first.ok and "sensor offline" in (first.error or "")
    assert result.metrics.tool_calls_failed >= 1


@pytest.fixture(params=["sqlite", "postgres"])
def memory_fleet(
    request: pytest.FixtureRequest, tool_fleet: tuple[str, Path], tmp_path: Path
) -> str:
    """The tool fleet with its memory in a SQLite file, or in a real PostgreSQL."""
    fleet, _ = tool_fleet
    if request.param == "sqlite":
        return fleet
    server: PostgresServer = request.getfixturevalue("postgres_server")
    text = Path(fleet).read_text()
    sqlite_line = f"store = {json.dumps(str(tmp_path / 'memory.sqlite'))}"
    assert sqlite_line in text
    path = tmp_path / "postgres-memory-fleet.toml"
    path.write_text(text.replace(sqlite_line, f"store = {json.dumps(server.url())}"))
    load_fleet(path)
    return str(path)


async def test_memory_stored_in_one_process_is_recalled_in_another(memory_fleet: str) -> None:
    """One process stores a note, this one recalls it: in SQLite and in real PostgreSQL."""
    fleet = memory_fleet
    store_plan = plan("remember", "analyst", "Remember: PETG hooks hold 2 kg.", "memory.store")
    script = (
        "import asyncio, json, sys\n"
        "from graph import arun_goal\n"
        "result = asyncio.run(arun_goal('Remember', fleet=sys.argv[1], plan=json.loads("
        "sys.argv[2]), voice=False, synthesis_max_tokens=8))\n"
        "print(json.dumps([c.model_dump() for c in result.tasks[0].tool_calls]))\n"
        "print(result.tasks[0].model_dump_json(), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, fleet, json.dumps(store_plan)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    calls = json.loads(done.stdout.strip().splitlines()[-1])
    assert calls, done.stderr[-3000:]
    stored = calls[0]
    assert stored["name"] == "memory.store" and stored["ok"], stored
    recall = await run(
        fleet, plan("recall", "analyst", "What do you remember about hooks?", "memory.recall")
    )
    record = recall.tasks[0].tool_calls[0]
    assert record.name == "memory.recall" and record.ok, record
    assert stored["args"]["text"] in record.output


async def test_fetch_webpage_reads_a_loopback_page_and_refuses_a_blocked_host(
    tool_fleet: tuple[str, Path], loopback: tuple[str, list[str]]
) -> None:
    fleet, _ = tool_fleet
    base_url, seen = loopback
    url = f"{base_url}/hook.html"
    result = await run(fleet, plan("page", "researcher", f"Read the page {url}", "fetch_webpage"))
    record = result.tasks[0].tool_calls[0]
    print(f"\nfetch_webpage args {record.args}: ok={record.ok} error={record.error}")
    assert record.name == "fetch_webpage"
    asked = str(record.args.get("url", ""))
    assert f"{base_url.split('//')[1]}/hook.html" in asked, record.args
    if asked == url:
        assert record.ok and PAGE_MARKER in record.output, record
        assert "/hook.html" in seen
    else:  # SmolLM2 sometimes writes https: the host rules let it through all the same
        assert "refused" not in (record.error or ""), record.error
    blocked = await run(
        fleet,
        plan("blocked", "researcher", "Read the page http://blocked.test/x", "fetch_webpage"),
    )
    refused = blocked.tasks[0].tool_calls[0]
    print(f"blocked fetch args {refused.args}: error={refused.error}")
    assert "blocked.test" in str(refused.args.get("url", "")), refused.args
    assert not refused.ok and "blocked by [fetch] blocked_hosts" in (refused.error or "")


async def test_web_search_asks_searxng_for_json(
    tool_fleet: tuple[str, Path], loopback: tuple[str, list[str]]
) -> None:
    fleet, _ = tool_fleet
    _, seen = loopback
    result = await run(fleet, plan("find", "researcher", "Search for wall hooks.", "web_search"))
    record = result.tasks[0].tool_calls[0]
    assert record.name == "web_search" and record.ok, record
    assert SEARCH_MARKER in record.output
    assert any(path.startswith("/search") and "format=json" in path for path in seen)
