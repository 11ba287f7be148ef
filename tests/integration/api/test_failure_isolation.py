"""A dead endpoint costs only the tasks that cannot avoid it.

The fleet is the embedded profile with the ``coder`` and ``vision`` servers moved to
ports where nothing listens. ``coder`` falls back to ``tools``; ``vision_analyst`` has no
fallback tier, so its task fails and the run goes on around it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from endpoints.config import FleetConfig, load_fleet
from graph import Plan, RunResult, Task
from graph.context import Context
from graph.events import TaskFallback
from graph.synthesis import synthesis_messages
from tests.helpers import FAST, collect_run, pinned_task, profile_endpoint_spec, write_fleet
from tests.integration import _faultkit

pytestmark = pytest.mark.integration

DESCRIPTION = "Name one common cause of a failed 3D print."


def pinned(task_id: str, agent: str, deps: list[str] | None = None) -> Task:
    return pinned_task(task_id, agent, deps, description=DESCRIPTION)


def moved(tier: str, **fields: Any) -> dict[str, Any]:
    """The embedded profile's endpoint of ``tier`` with some fields changed."""
    return profile_endpoint_spec("embedded", tier) | fields


@pytest.fixture(scope="module")
def dead_ports() -> Iterator[list[int]]:
    """Two loopback ports that refuse connections (bound, never listening)."""
    with _faultkit.dead_ports(2) as ports:
        yield ports


@pytest.fixture(scope="module")
def broken_fleet(
    embedded_fleet: FleetConfig,
    dead_ports: list[int],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """The embedded profile, not self-starting, with coder and vision on dead ports."""
    coder_port, vision_port = dead_ports
    path = write_fleet(
        tmp_path_factory.mktemp("broken") / "broken.toml",
        {
            "coder": [moved("coder", name="dead-coder", base_url=f"http://127.0.0.1:{coder_port}")],
            "vision": [
                moved("vision", name="dead-vision", base_url=f"http://127.0.0.1:{vision_port}")
            ],
        },
        others_from="embedded",
        name="embedded-broken",
    )
    fleet = load_fleet(path)
    assert fleet.tier("coder").endpoints[0].name == "dead-coder"
    return str(path)


async def run(goal: str, plan: Plan, fleet: str, **settings: Any) -> tuple[RunResult, list[Any]]:
    return await collect_run(goal, plan=plan, fleet=fleet, **FAST, **settings)


async def test_dead_endpoints_fail_only_their_tasks(broken_fleet: str) -> None:
    plan = Plan(
        tasks=[
            pinned("code", "coder"),
            pinned("vis", "vision_analyst"),
            pinned("res", "researcher"),
            pinned("after_vis", "analyst", ["vis"]),
            pinned("twin", "analyst"),
        ]
    )
    goal = "Diagnose a failed print"
    result, events = await run(goal, plan, broken_fleet)
    by_id = {r.task_id: r for r in result.tasks}
    assert set(by_id) == {"code", "vis", "res", "after_vis", "twin"}

    code = by_id["code"]
    assert code.status == "completed"
    assert code.fallback_used
    assert code.attempts == ["dead-coder", "embedded-tools"]
    assert code.endpoint == "embedded-tools"
    assert code.completion_tokens == 8
    assert any(
        isinstance(e, TaskFallback)
        and e.task_id == "code"
        and e.failed_endpoint == "dead-coder"
        and e.next_endpoint == "embedded-tools"
        for e in events
    )

    vis = by_id["vis"]
    assert vis.status == "failed"
    assert vis.output == ""
    assert vis.error and "dead-vision" in vis.error and "cannot connect" in vis.error
    assert not vis.fallback_used

    for task_id in ("res", "twin"):
        assert by_id[task_id].status == "completed"
        assert not by_id[task_id].fallback_used
    # The dependent of the failure ran, told that its input is missing: same task as its
    # twin, plus the failure note in its prompt.
    after = by_id["after_vis"]
    assert after.status == "completed"
    assert after.ready_at is not None and after.ready_at >= (vis.finished_at or 0)
    assert after.prompt_tokens > by_id["twin"].prompt_tokens + 20

    metrics = result.metrics
    assert (metrics.tasks_completed, metrics.tasks_failed, metrics.fallbacks) == (4, 1, 1)
    assert result.answer  # synthesis still ran

    # The synthesizer is told which task failed and why.
    fleet = load_fleet(broken_fleet)
    state = {"goal": goal, "plan": result.plan, "results": by_id}
    messages, failed = await synthesis_messages(
        state,  # type: ignore[arg-type]
        Context(fleet=broken_fleet, synthesis_max_tokens=16),
        fleet.tier("reasoning").endpoints[0],
    )
    assert [r.task_id for r in failed] == ["vis"]
    prompt = str(messages[-1].content)
    assert "vis (vision_analyst) FAILED" in prompt
    assert "dead-vision" in prompt
    assert "### code (coder)" in prompt  # the fallback's result is used as any other


async def test_dependents_of_a_failure_can_be_skipped(broken_fleet: str) -> None:
    plan = Plan(
        tasks=[
            pinned("vis", "vision_analyst"),
            pinned("after_vis", "analyst", ["vis"]),
            pinned("after_after", "reasoner", ["after_vis"]),
            pinned("res", "researcher"),
        ]
    )
    result, _ = await run("Check the print", plan, broken_fleet, skip_failed_dependents=True)
    status = {r.task_id: r.status for r in result.tasks}
    assert status == {
        "vis": "failed",
        "after_vis": "skipped",
        "after_after": "skipped",
        "res": "completed",
    }
    after = result.result("after_vis")
    assert after.error and "dependency vis did not complete" in after.error
    assert after.started_at is None and after.completion_tokens == 0
    assert "after_vis" in (result.result("after_after").error or "")
    assert result.metrics.tasks_skipped == 2
    assert result.answer


@pytest.fixture(scope="module")
def rejecting_fleet(
    embedded_fleet: FleetConfig,
    dead_ports: list[int],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """The embedded profile with the vision tier on an Ollama endpoint.

    Ollama takes no ``ignore_eos``: a pinned vision task is rejected while its request is
    built, so it fails without ever waiting on I/O.
    """
    vision = moved(
        "vision", name="ollama-vision", kind="ollama", base_url=f"http://127.0.0.1:{dead_ports[1]}"
    )
    path = write_fleet(
        tmp_path_factory.mktemp("rejecting") / "rejecting.toml",
        {"vision": [vision]},
        others_from="embedded",
        name="embedded-rejecting",
    )
    return str(path)


async def test_dependent_of_an_instant_failure_still_runs(rejecting_fleet: str) -> None:
    """Regression: the failed task's result must outlive it until its dependent looks."""
    plan = Plan(tasks=[pinned("v", "vision_analyst"), pinned("after", "analyst", ["v"])])
    # The deadline only bounds the test: before the fix, "after" waited forever.
    result, _ = await run("Look at it", plan, rejecting_fleet, run_deadline_s=120)
    v, after = result.result("v"), result.result("after")
    assert v.status == "failed"
    assert v.error and "does not take ['ignore_eos']" in v.error
    assert after.status == "completed", after.error
    assert after.ready_at is not None and after.ready_at >= (v.finished_at or 0)
