"""``kitty-orch run`` end to end in a subprocess, against real llama.cpp servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from endpoints.config import FleetConfig, load_fleet
from graph.schemas import RunResult, Task
from ops.embedded import EmbeddedFleet
from tests.helpers import (
    TIERS,
    busy_slots,
    endpoint_spec,
    free_port,
    kitty_command,
    pinned_task,
    smollm2_launch,
    wait_for,
    write_fleet,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
FAST = ["--no-voice", "--set", "synthesis_max_tokens=16"]


def write_plan(path: Path, tasks: list[Task]) -> Path:
    """A plan file (``--plan``) holding ``tasks``."""
    plan = {"tasks": [task.model_dump(mode="json") for task in tasks]}
    path.write_text(json.dumps(plan), encoding="utf-8")
    return path


def kitty(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``kitty-orch`` (``python -m kitty.cli.main``) 100 columns wide, checkpoints in RAM."""
    full_env = {
        **os.environ,
        "COLUMNS": "100",
        "KITTY_FLEET": "embedded",
        "KITTY_CHECKPOINTS": "memory",  # keep test runs out of ~/.kitty
        **(env or {}),
    }
    return subprocess.Popen(
        kitty_command(*args),
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def run_kitty(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    process = kitty(*args)
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def fan_in_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two independent tasks on two endpoints joined by a third."""
    return write_plan(
        tmp_path_factory.mktemp("plans") / "plan.json",
        [
            pinned_task("task_1", "researcher", tokens=12),
            pinned_task("task_2", "coder", tokens=12),
            pinned_task("task_3", "reasoner", ["task_1", "task_2"], tokens=12),
        ],
    )


def test_json_prints_only_the_run_result_and_writes_the_timeline(
    embedded_fleet: FleetConfig, fan_in_plan: Path, tmp_path: Path
) -> None:
    png = tmp_path / "timeline.png"
    done = run_kitty(
        "run",
        "Design a wall hook",
        "--plan",
        str(fan_in_plan),
        "--json",
        "--timeline",
        str(png),
        *FAST,
    )
    assert done.returncode == 0, done.stderr
    result = RunResult.model_validate_json(done.stdout)  # stdout is the JSON and nothing else
    assert [t.task_id for t in result.tasks] == ["task_1", "task_2", "task_3"]
    assert all(t.status == "completed" for t in result.tasks), result.tasks
    assert {t.completion_tokens for t in result.tasks} == {12}
    assert result.plan.source == "given"
    assert result.voice_summary is None
    assert result.metrics.tasks_completed == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plain_output_shows_progress_plan_answer_and_metrics(
    embedded_fleet: FleetConfig, fan_in_plan: Path
) -> None:
    done = run_kitty("run", "Design a wall hook", "--plan", str(fan_in_plan), *FAST)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "task_3   running on embedded-reasoning #" in out  # progress lines (not a tty)
    for task_id in ("task_1", "task_2", "task_3"):
        assert f"{task_id}   completed in" in out
    assert "endpoint slots" in out
    assert "answer" in out
    assert "critical path" in out
    assert "3 completed, 0 failed, 0 skipped of 3" in out


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist"),
        ('{"tasks": [', "is not valid JSON"),
        ('{"tasks": [{"id": "a", "agent": "nobody", "description": "x"}]}', "unknown agent"),
    ],
)
def test_bad_plan_file_is_one_line_and_exit_code_2(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "plan.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    done = run_kitty("run", "goal", "--plan", str(path), "--json", timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(path) in lines[0]
    assert problem in lines[0]


# --------------------------------------------------------------------------- Ctrl-C


@pytest.fixture(scope="module")
def solo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One 2-slot server for every tier, started here so it outlives the CLI process."""
    port = free_port()
    solo = endpoint_spec("solo", port, slots=2, ctx=2048, launch=smollm2_launch())
    path = write_fleet(
        tmp_path_factory.mktemp("solo") / "fleet.toml",
        {tier: [solo] for tier in TIERS},
        embedded=True,
        name="solo",
    )
    with EmbeddedFleet(load_fleet(path)):
        yield path, f"http://127.0.0.1:{port}"


def test_ctrl_c_cancels_in_flight_requests_and_exits_130(
    solo_server: tuple[Path, str], tmp_path: Path
) -> None:
    fleet_path, base_url = solo_server
    plan = write_plan(
        tmp_path / "long.json",
        [pinned_task(f"task_{i}", "researcher", tokens=1500) for i in (1, 2, 3)],
    )
    process = kitty(
        "run", "Write long essays", "--fleet", str(fleet_path), "--plan", str(plan), *FAST
    )
    try:
        # The first task is running once the server reports a busy slot.
        assert wait_for(lambda: busy_slots(base_url) > 0, timeout=90), "no task ever started"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "cancelled" in stdout
    assert "0 of 3 tasks completed" in stdout  # 1500 tokens each cannot have finished
    # The requests were cancelled, not left generating: the slots free up at once...
    assert wait_for(lambda: busy_slots(base_url) == 0, timeout=5), "slots still busy"
    # ...and the server keeps serving.
    reply = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert reply.status_code == 200
