"""The graph as LangGraph Studio serves it: ``langgraph dev`` + the ``langgraph_sdk`` client.

Starts a real dev server on a free port (in-memory runtime, no reload, no browser) with
the repository's ``langgraph.json``, streams one run with a small pinned plan and checks
the ``custom`` progress events and the ``updates`` that Studio shows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from endpoints.config import FleetConfig
from tests.helpers import free_port, wait_until_serving

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
STARTUP_TIMEOUT_S = 90.0


def langgraph_cli() -> str:
    beside_python = Path(sys.executable).with_name("langgraph")
    if beside_python.exists():
        return str(beside_python)
    pytest.skip("the langgraph CLI is missing; install 'langgraph-cli[inmem]'")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server's whole process group (it spawns workers)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def studio_url(
    embedded_fleet: FleetConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("studio") / "langgraph-dev.log"
    command = [
        langgraph_cli(),
        "dev",
        "--no-browser",
        "--no-reload",
        "--port",
        str(port),
        "--config",
        str(REPO / "langgraph.json"),
    ]
    env = {**os.environ, "KITTY_FLEET": "embedded", "LANGSMITH_TRACING": "false"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(
            f"{url}/ok",
            process,
            log_path,
            name="langgraph dev",
            timeout_s=STARTUP_TIMEOUT_S,
            interval_s=0.5,
        )
        yield url
    finally:
        stop(process)


PLAN: dict[str, Any] = {
    "tasks": [
        {
            "id": "look",
            "agent": "researcher",
            "description": "Name one strong material for a wall hook.",
            "dependencies": [],
            "max_tokens": 8,
            "extra": {"ignore_eos": True},
        },
        {
            "id": "sketch",
            "agent": "cad_designer",
            "description": "Describe the hook's shape in one sentence.",
            "dependencies": [],
            "max_tokens": 8,
            "extra": {"ignore_eos": True},
        },
        {
            "id": "check",
            "agent": "fabricator",
            "description": "Say whether the hook prints without supports.",
            "dependencies": ["look", "sketch"],
            "max_tokens": 8,
            "extra": {"ignore_eos": True},
        },
    ]
}


async def test_studio_run_streams_progress_and_answer(studio_url: str) -> None:
    from langgraph_sdk import get_client

    client = get_client(url=studio_url)
    assistants = await client.assistants.search(graph_id="kitty")
    assert assistants, "langgraph.json should export the 'kitty' graph"
    thread = await client.threads.create()
    custom: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    errors: list[Any] = []
    # langgraph-api >= 0.4 takes run settings as ``context`` (the graph's context_schema).
    async for part in client.runs.stream(
        thread["thread_id"],
        "kitty",
        input={"goal": "Design a wall hook", "plan": PLAN},
        context={"voice": False, "synthesis_max_tokens": 16, "fleet": "embedded"},
        stream_mode=["updates", "custom"],
    ):
        if part.event == "custom":
            custom.append(part.data)
        elif part.event == "updates":
            updates.append(part.data)
        elif part.event == "error":
            errors.append(part.data)
    assert not errors, errors

    ids = [t["id"] for t in PLAN["tasks"]]
    run_ids = {e.get("run_id") for e in custom}
    assert len(run_ids) == 1 and None not in run_ids
    kinds = [e["kind"] for e in custom]
    assert "plan_ready" in kinds
    for task_id in ids:
        started = [e for e in custom if e["kind"] == "task_started" and e["task_id"] == task_id]
        finished = [e for e in custom if e["kind"] == "task_finished" and e["task_id"] == task_id]
        assert len(started) == 1, f"{task_id}: {kinds}"
        assert len(finished) == 1 and finished[0]["status"] == "completed", finished

    agent_results = {
        task_id for update in updates for task_id in (update.get("agent") or {}).get("results", {})
    }
    assert agent_results == set(ids)
    answers = [u["synthesizer"]["answer"] for u in updates if "synthesizer" in u]
    assert len(answers) == 1 and answers[0].strip()

    state = await client.threads.get_state(thread["thread_id"])
    values = state["values"]
    assert isinstance(values, dict)  # a graph with a state schema: values are a mapping
    assert values["answer"] == answers[0]
    assert set(values["results"]) == set(ids)
