"""``GET /metrics``: runs through the app on a scripted fleet, scraped and parsed.

The app is called in process (httpx's ASGI transport) on a fleet whose models are a
:class:`~tests.fake_chat.FakeChat`; the scrape is parsed with prometheus-client's own
parser and its counts are compared with the runs made.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import values as prometheus_values
from prometheus_client.values import MultiProcessValue

from graph import Plan, RunFinished, RunMetrics, RunResult, Task, TaskFinished, TaskResult
from kitty.service import ServiceSettings, create_app
from kitty.service._admission import LocalRunLeases, RunAdmission, StoreUnreachable
from kitty.service._errors import RequestError
from kitty.service._metrics import (
    MULTIPROC_ENV,
    UNKNOWN_TOOL,
    ServiceMetrics,
    multiprocess_directory,
)
from kitty.service._runs import RunSpec
from tests.conftest import FakeFleet
from tests.fake_chat import FakeChat, Reply
from tests.helpers import Samples, asgi_client, offline_fleet
from tests.helpers import metric_samples as parse
from tests.helpers import sample_value as value

TOKEN = "metrics-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUERY = "/api/query/parallel"
GOAL_MARKER = "zebra-goal-7c1f"


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples ``name`` whose labels include ``labels``."""
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items())
    )


def two_task_plan(marker: str) -> dict[str, Any]:
    """``a`` on the coder tier, then ``b`` (researcher, tools tier) after it."""
    return {
        "tasks": [
            {"id": "a", "agent": "coder", "description": f"[{marker}] Write it."},
            {"id": "b", "agent": "researcher", "description": "Check it.", "dependencies": ["a"]},
        ]
    }


def body(plan: dict[str, Any], query: str = f"Build a {GOAL_MARKER} please") -> dict[str, Any]:
    return {"query": query, "max_tasks": len(plan["tasks"]), "voice_mode": False, "plan": plan}


def make_app(fleet: str, **settings: Any) -> Any:
    context = {"synthesis_max_tokens": 16, **settings.pop("context_overrides", {})}
    return create_app(
        ServiceSettings(
            fleet=fleet,
            start_embedded=False,
            api_token=TOKEN,
            context_overrides=context,
            **settings,
        )
    )


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


@pytest.fixture
async def service(fake_fleet: FakeFleet) -> AsyncIterator[httpx.AsyncClient]:
    # Slow enough that the makespan and the critical path are measurable (never asserted).
    fake_fleet.chat.script(Reply(text="done", delay_s=0.02), phase="task", repeat=True)
    async with asgi_client(make_app(fake_fleet.path)) as http:
        yield http


async def test_two_runs_are_counted_with_their_tasks_tokens_and_durations(
    service: httpx.AsyncClient,
) -> None:
    answers = [
        await service.post(QUERY, json=body(two_task_plan(f"r{i}")), headers=AUTH) for i in range(2)
    ]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    samples = await scrape(service)

    assert value(samples, "kitty_runs_total", outcome="completed") == 2
    assert value(samples, "kitty_runs_total", outcome="failed") == 0
    assert value(samples, "kitty_runs_in_flight") == 0
    assert value(samples, "kitty_run_duration_seconds_count", outcome="completed") == 2
    assert value(samples, "kitty_tasks_total", agent="coder", outcome="completed") == 2
    assert value(samples, "kitty_tasks_total", agent="researcher", outcome="completed") == 2
    assert value(samples, "kitty_slot_wait_seconds_count", endpoint="fake-coder") == 2
    assert value(samples, "kitty_slot_wait_seconds_count", endpoint="fake-tools") == 2
    assert value(samples, "kitty_run_makespan_critical_path_ratio_count") == 2
    assert value(samples, "kitty_replans_total") == 0
    # Tokens per endpoint are the tasks' own; the rest of each run's are orchestration's.
    results = [a.json() for a in answers]
    for endpoint in ("fake-coder", "fake-tools"):
        expected = sum(
            t["prompt_tokens"] for r in results for t in r["tasks"] if t["endpoint"] == endpoint
        )
        assert expected > 0
        assert value(samples, "kitty_prompt_tokens_total", endpoint=endpoint) == expected
    run_prompt = sum(r["metrics"]["prompt_tokens"] for r in results)
    assert (
        total(samples, "kitty_prompt_tokens_total")
        + value(samples, "kitty_orchestration_prompt_tokens_total")
        == run_prompt
    )
    run_completion = sum(r["metrics"]["completion_tokens"] for r in results)
    assert (
        total(samples, "kitty_completion_tokens_total")
        + value(samples, "kitty_orchestration_completion_tokens_total")
        == run_completion
    )
    # The fleet's live gauges: every server, idle now.
    assert value(samples, "kitty_endpoint_slots", endpoint="fake-coder") == 2
    assert value(samples, "kitty_endpoint_slots_in_use", endpoint="fake-coder") == 0
    assert value(samples, "kitty_endpoint_benched", endpoint="fake-coder") == 0

    # Bounded labels: never the goal, a run id or a thread id.
    secrets_ = [GOAL_MARKER, "r0", *(r["run_id"] for r in results)]
    secrets_ += [r["thread_id"] for r in results if r["thread_id"]]
    label_values = {v for _, labels, _ in samples for v in labels.values()}
    assert not [v for v in label_values for s in secrets_ if s in v]


async def test_metrics_need_the_bearer_token(service: httpx.AsyncClient) -> None:
    assert (await service.get("/metrics")).status_code == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert (await service.get("/metrics", headers=wrong)).status_code == 401


async def test_fallbacks_and_a_benched_endpoint_are_counted(
    fake_fleet: FakeFleet,
) -> None:
    fake_fleet.chat.fail(endpoint="fake-coder")  # every coder call: connection refused
    async with asgi_client(make_app(fake_fleet.path)) as http:
        for i in range(2):
            answer = await http.post(QUERY, json=body(two_task_plan(f"f{i}")), headers=AUTH)
            assert answer.status_code == 200, answer.text
            assert answer.json()["tasks"][0]["endpoint"] == "fake-tools"  # served by the fallback
        samples = await scrape(http)
    fell_back = value(
        samples, "kitty_fallbacks_total", from_endpoint="fake-coder", to_endpoint="fake-tools"
    )
    assert fell_back == 2
    assert value(samples, "kitty_endpoint_benched", endpoint="fake-coder") == 1  # 2 in a row
    assert value(samples, "kitty_endpoint_benched", endpoint="fake-tools") == 0
    assert value(samples, "kitty_tasks_total", agent="coder", outcome="completed") == 2


@pytest.fixture
def tool_fleet(tmp_path: Path, fresh_fleet_state: None) -> Iterator[FakeFleet]:
    """An offline fleet whose fake models take tools, with the built-in memory tools."""
    path = offline_fleet(tmp_path)
    text = path.read_text().replace('kind = "llamacpp"', 'kind = "llamacpp"\nsupports_tools = true')
    text += f"\n[memory]\nstore = {json.dumps(str(tmp_path / 'memory.sqlite'))}\n"
    path.write_text(text)
    yield FakeFleet(path=str(path), chat=FakeChat().install(str(path)))


def call(name: str, **args: Any) -> Reply:
    return Reply(text="", tool_calls=({"name": name, "args": args},))


async def test_tool_calls_are_counted_by_tool_and_outcome_with_bounded_names(
    tool_fleet: FakeFleet,
) -> None:
    tool_fleet.chat.script(
        call("memory.store", text="the hook is 4 cm"),  # runs
        call(f"{GOAL_MARKER}.invented"),  # no allowlist has it: refused, label "unknown"
        call("fabrication.submit_job", file="hook.stl"),  # the fabricator's, not the analyst's
        "Stored.",
        task="m",
    )
    plan = {"tasks": [{"id": "m", "agent": "analyst", "description": "Remember the size."}]}
    async with asgi_client(make_app(tool_fleet.path)) as http:
        answer = await http.post(QUERY, json=body(plan), headers=AUTH)
        assert answer.status_code == 200, answer.text
        samples = await scrape(http)
    records = answer.json()["tasks"][0]["tool_calls"]
    assert [(r["name"], r["ok"], r["refused"]) for r in records] == [
        ("memory.store", True, False),
        (f"{GOAL_MARKER}.invented", False, True),
        ("fabrication.submit_job", False, True),
    ]
    assert value(samples, "kitty_tool_calls_total", tool="memory.store", outcome="ok") == 1
    assert value(samples, "kitty_tool_calls_total", tool=UNKNOWN_TOOL, outcome="refused") == 1
    refused = value(
        samples, "kitty_tool_calls_total", tool="fabrication.submit_job", outcome="refused"
    )
    assert refused == 1
    assert total(samples, "kitty_tool_calls_total") == 3


async def test_runs_refused_at_admission_are_counted(fake_fleet: FakeFleet) -> None:
    fake_fleet.chat.script(Reply(text="slow", delay_s=60), phase="task", task="a")
    plan = {"tasks": [{"id": "a", "agent": "coder", "description": "Hold the only place."}]}
    async with asgi_client(make_app(fake_fleet.path, max_concurrent_runs=1)) as http:
        held = asyncio.create_task(http.post(QUERY, json=body(plan), headers=AUTH))
        in_flight = 0.0

        async def admitted() -> bool:
            nonlocal in_flight
            in_flight = value(await scrape(http), "kitty_runs_in_flight")
            return in_flight == 1

        for _ in range(500):
            if await admitted():
                break
            await asyncio.sleep(0.01)
        assert in_flight == 1
        refused = await http.post(QUERY, json=body(plan), headers=AUTH)
        assert refused.status_code == 429, refused.text
        held.cancel()  # the client leaves: the held run is cancelled
        await asyncio.wait({held})
        samples = await scrape(http)
    assert value(samples, "kitty_admission_rejections_total", reason="run_limit") == 1
    assert value(samples, "kitty_admission_rejections_total", reason="thread_running") == 0
    assert value(samples, "kitty_runs_total", outcome="cancelled") == 1
    assert value(samples, "kitty_runs_in_flight") == 0
    assert value(samples, "kitty_runs_total", outcome="completed") == 0


# --------------------------------------------------------------------------- the observer alone


def _result(task_id: str, finished_at: float) -> TaskResult:
    return TaskResult(
        task_id=task_id,
        status="completed",
        agent="coder",
        endpoint="fake-coder",
        prompt_tokens=10,
        completion_tokens=3,
        started_at=finished_at - 1,
        finished_at=finished_at,
    )


def test_a_resume_does_not_count_the_tasks_that_finished_before_the_interruption(
    fake_fleet: FakeFleet,
) -> None:
    from endpoints import load_fleet

    metrics = ServiceMetrics(load_fleet(fake_fleet.path))
    spec = RunSpec(goal=None, plan=None)
    metrics.run_started(spec)
    began = metrics._started[id(spec)][1]
    metrics.run_event(spec, TaskFinished(run_id="r", result=_result("old", began - 60)))
    metrics.run_event(spec, TaskFinished(run_id="r", result=_result("new", began + 1)))
    metrics.run_ended(spec, "completed")
    samples = parse(metrics.render([]).decode())
    assert value(samples, "kitty_tasks_total", agent="coder", outcome="completed") == 1
    assert value(samples, "kitty_prompt_tokens_total", endpoint="fake-coder") == 10


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _finished_run(metrics: ServiceMetrics) -> None:
    spec = RunSpec(goal="g", plan=None)
    metrics.run_started(spec)
    plan = Plan(tasks=[Task(id="a", agent="coder", description="d")])
    result = RunResult(
        goal="g",
        answer="",
        plan=plan,
        tasks=[],
        metrics=RunMetrics(prompt_tokens=5, execution_s=3.0, critical_path_s=2.0),
        run_id="r",
    )
    metrics.run_event(spec, RunFinished(run_id="r", result=result))
    metrics.run_ended(spec, "completed")


def test_multiprocess_mode_sums_the_workers_and_forgets_live_gauges_of_dead_ones(
    fake_fleet: FakeFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from endpoints import load_fleet

    config = load_fleet(fake_fleet.path)
    directory = tmp_path / "multiproc"
    directory.mkdir()
    monkeypatch.setenv(MULTIPROC_ENV, str(directory))
    workers = []
    for pid in (_dead_pid(), _dead_pid()):  # two workers, both gone by the scrape
        monkeypatch.setattr(prometheus_values, "ValueClass", MultiProcessValue(lambda p=pid: p))
        worker = ServiceMetrics(config, multiprocess_dir=str(directory))
        _finished_run(worker)
        worker.runs_in_flight.inc()  # a run it was serving when it was killed
        workers.append(worker)
    samples = parse(workers[0].render([]).decode())
    assert value(samples, "kitty_runs_total", outcome="completed") == 2
    assert value(samples, "kitty_orchestration_prompt_tokens_total") == 10
    assert value(samples, "kitty_run_makespan_critical_path_ratio_count") == 2
    assert value(samples, "kitty_runs_in_flight") == 0  # dead workers' runs are not in flight


def test_the_multiprocess_directory_is_fresh_per_start_unless_the_operator_set_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with multiprocess_directory() as made:
        assert os.environ[MULTIPROC_ENV] == made
        assert Path(made).is_dir() and not list(Path(made).iterdir())
        (Path(made) / "counter_1.db").write_bytes(b"")
    assert not Path(made).exists() and MULTIPROC_ENV not in os.environ
    given = tmp_path / "operator"
    monkeypatch.setenv(MULTIPROC_ENV, str(given))
    with multiprocess_directory() as used:
        assert used == str(given) and given.is_dir()
    assert given.is_dir() and os.environ[MULTIPROC_ENV] == str(given)  # theirs: kept


class _DownLeases(LocalRunLeases):
    """A shared store that does not answer."""

    async def take(self, group: str, lease: str, limit: int) -> tuple[bool, int]:
        raise StoreUnreachable("connection refused")


async def test_admission_reports_client_refusals_but_not_the_background_runners() -> None:
    reasons: list[str] = []
    full = RunAdmission(1, 5, on_reject=reasons.append)
    held = await full.admit("t1")
    for quiet in (True, False):
        for thread in ("t1", "t2"):  # t1 runs already (409); t2 finds the limit taken (429)
            with pytest.raises(RequestError):
                await full.admit(thread, quiet=quiet)
    await held.release()
    down = RunAdmission(1, 5, leases=_DownLeases(), on_reject=reasons.append)
    for quiet in (True, False):
        with pytest.raises(RequestError) as refused:
            await down.admit(quiet=quiet)
        assert refused.value.status == 503
    assert reasons == ["thread_running", "run_limit", "store_unreachable"]
