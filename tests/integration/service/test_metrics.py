"""``GET /metrics`` of a live ``kitty-orch serve`` on the embedded fleet, parsed and counted.

Runs use pinned plans (a few tokens per task with ``ignore_eos``) and tiny synthesis caps.
The scrape is parsed with prometheus-client's own parser; its counters must match the
runs made, with one worker and with two (multiprocess mode, a Redis slot store).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from endpoints.config import FleetConfig
from kitty.bench._workload import pinned
from tests.helpers import (
    Samples,
    free_port,
    kitty_command,
    stop_process,
    wait_until_serving,
)
from tests.helpers import metric_samples as parse
from tests.helpers import sample_value as value
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "metrics-integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUERY = "/api/query/parallel"
STREAM = "/api/query/parallel/stream"
GOAL_MARKER = "quokka-goal-5e2a"
SMALL_CAPS = ("--set", "synthesis_max_tokens=4", "--set", "summary_max_tokens=4")


@dataclass
class Live:
    base_url: str
    log: Path
    multiproc_dir: Path | None = None


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def single(embedded_fleet: FleetConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One worker with a bearer token."""
    port = free_port()
    log = tmp_path_factory.mktemp("metrics-single") / "serve.log"
    env = {**os.environ, "KITTY_API_TOKEN": TOKEN, "KITTY_FLEET": "embedded"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = kitty_command("serve", "--port", str(port), "--log-level", "warning", *SMALL_CAPS)
    process = _start(command, env, log)
    live = Live(f"http://127.0.0.1:{port}", log)
    try:
        wait_until_serving(f"{live.base_url}/healthz", process, log, name="service")
        yield live
    finally:
        stop_process(process, timeout_s=15)


@pytest.fixture(scope="module")
def two_workers(
    embedded_fleet: FleetConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """Redis, then ``--workers 2`` with the operator's ``PROMETHEUS_MULTIPROC_DIR``.

    The operator's directory (not a temporary one) lets the test read each worker's own
    file and see that both served runs.
    """
    folder = tmp_path_factory.mktemp("metrics-workers")
    redis_server = RedisServer(folder)
    redis_server.start()
    multiproc = folder / "prometheus"
    port = free_port()
    log = folder / "serve.log"
    env = {
        **os.environ,
        "KITTY_API_TOKEN": TOKEN,
        "KITTY_FLEET": "embedded",
        "KITTY_SLOT_STORE": redis_server.url(),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }
    command = kitty_command("serve", "--port", str(port), "--workers", "2", *SMALL_CAPS)
    command += ["--log-level", "warning", "--checkpoint", str(folder / "checkpoints.sqlite")]
    process = _start(command, env, log)
    live = Live(f"http://127.0.0.1:{port}", log, multiproc)
    try:
        wait_until_serving(f"{live.base_url}/healthz", process, log, name="service")
        yield live
    finally:
        stop_process(process, timeout_s=20)
        redis_server.stop()


def run_body(name: str) -> dict[str, Any]:
    """Two pinned tasks on two servers: ``{name}_a`` (coder), then ``{name}_b`` (researcher)."""
    first = pinned(f"{name}_a", "coder", 4, what=f"[{GOAL_MARKER}] Name a sort")
    second = pinned(f"{name}_b", "researcher", 4, deps=[first.id], what="One word on it")
    tasks = [t.model_dump(exclude_none=True) for t in (first, second)]
    return {
        "query": f"Explain {GOAL_MARKER} sorting",
        "max_tasks": 2,
        "voice_mode": False,
        "plan": {"tasks": tasks},
    }


def total(samples: Samples, name: str) -> float:
    return sum(v for n, _, v in samples if n == name)


async def scrape(base_url: str) -> Samples:
    """One scrape on a fresh connection (with several workers, any of them answers)."""
    async with httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=30) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    return parse(response.text)


async def post_run(base_url: str, name: str) -> dict[str, Any]:
    """One run on a fresh connection; its response body."""
    async with httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=600) as http:
        response = await http.post(QUERY, json=run_body(name))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def stream_run(base_url: str, name: str) -> dict[str, Any]:
    """One streamed run; the data of its ``result`` event."""
    event, result = "", None
    async with (
        httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=600) as http,
        http.stream("POST", STREAM, json=run_body(name)) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "result":
                result = json.loads(line[5:])
    assert result is not None, "the stream ended without a result"
    return result


def assert_counts_match(samples: Samples, results: list[dict[str, Any]]) -> None:
    """Runs, tasks, slot waits and task tokens in ``samples`` are those of ``results``."""
    assert value(samples, "kitty_runs_total", outcome="completed") == len(results)
    assert value(samples, "kitty_runs_total", outcome="failed") == 0
    assert value(samples, "kitty_runs_in_flight") == 0
    assert value(samples, "kitty_run_duration_seconds_count", outcome="completed") == len(results)
    tasks = [t for r in results for t in r["tasks"]]
    assert all(t["status"] == "completed" for t in tasks)
    for agent in ("coder", "researcher"):
        ran = sum(t["agent"] == agent for t in tasks)
        assert value(samples, "kitty_tasks_total", agent=agent, outcome="completed") == ran
    for endpoint in {t["endpoint"] for t in tasks}:
        served = [t for t in tasks if t["endpoint"] == endpoint]
        assert value(samples, "kitty_slot_wait_seconds_count", endpoint=endpoint) == len(served)
        prompt = sum(t["prompt_tokens"] for t in served)
        completion = sum(t["completion_tokens"] for t in served)
        assert value(samples, "kitty_prompt_tokens_total", endpoint=endpoint) == prompt
        assert value(samples, "kitty_completion_tokens_total", endpoint=endpoint) == completion
    all_prompt = sum(r["metrics"]["prompt_tokens"] for r in results)
    counted = total(samples, "kitty_prompt_tokens_total")
    assert counted + value(samples, "kitty_orchestration_prompt_tokens_total") == all_prompt
    # Labels never carry the goal, a run id or a thread id.
    label_values = {v for _, labels, _ in samples for v in labels.values()}
    private = [GOAL_MARKER, *(r["run_id"] for r in results)]
    private += [r["thread_id"] for r in results if r["thread_id"]]
    assert not [v for v in label_values for p in private if p in v]


async def test_one_worker_counts_every_run_it_served(single: Live) -> None:
    async with httpx.AsyncClient(base_url=single.base_url, timeout=30) as http:
        assert (await http.get("/metrics")).status_code == 401  # the token is needed
    results = [await post_run(single.base_url, f"plain{i}") for i in range(2)]
    results.append(await stream_run(single.base_url, "streamed"))
    samples = await scrape(single.base_url)
    assert_counts_match(samples, results)
    assert value(samples, "kitty_admission_rejections_total", reason="run_limit") == 0
    assert value(samples, "kitty_replans_total") == 0
    ratio_count = value(samples, "kitty_run_makespan_critical_path_ratio_count")
    assert 0 < ratio_count <= len(results)
    endpoints = {lab["endpoint"] for n, lab, _ in samples if n == "kitty_endpoint_slots"}
    assert {t["endpoint"] for r in results for t in r["tasks"]} <= endpoints
    for endpoint in endpoints:  # idle again
        assert value(samples, "kitty_endpoint_slots_in_use", endpoint=endpoint) == 0
        assert value(samples, "kitty_endpoint_slots_queued", endpoint=endpoint) == 0
        assert value(samples, "kitty_endpoint_benched", endpoint=endpoint) == 0


def completed_runs_by_worker(directory: Path) -> dict[int, float]:
    """Worker pid -> completed runs in its own counter file."""
    counts: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.split("_")[-1])
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == "kitty_runs_total" and sample.labels == {"outcome": "completed"}:
                    counts[pid] = counts.get(pid, 0.0) + sample.value
    return counts


async def test_two_workers_report_the_runs_of_both(two_workers: Live) -> None:
    assert two_workers.multiproc_dir is not None
    results: list[dict[str, Any]] = []
    for batch in range(6):  # until both workers have served runs
        # Two at once on fresh connections: the OS hands them to whichever worker accepts.
        pair = await asyncio.gather(
            *(post_run(two_workers.base_url, f"w{batch}{i}") for i in range(2))
        )
        results.extend(pair)
        served = completed_runs_by_worker(two_workers.multiproc_dir)
        if len([pid for pid, runs in served.items() if runs]) >= 2:
            break
    served = completed_runs_by_worker(two_workers.multiproc_dir)
    assert len([pid for pid, runs in served.items() if runs]) == 2, served
    assert sum(served.values()) == len(results)
    for _ in range(4):  # whichever worker answers the scrape reports every worker's runs
        assert_counts_match(await scrape(two_workers.base_url), results)
