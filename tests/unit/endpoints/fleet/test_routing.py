"""FleetRuntime routing: replicas, fallback chains, cooldowns (no servers needed)."""

from __future__ import annotations

import pytest

from endpoints.fleet import FleetRuntime, get_runtime
from tests.helpers import fleet_config

pytestmark = pytest.mark.usefixtures("fresh_fleet_state")


def names(handles: list) -> list[str]:
    return [h.name for h in handles]


async def test_least_loaded_replica_first() -> None:
    runtime = FleetRuntime(fleet_config({"tools": ["a", "b", "c"]}))
    a, b, _c = runtime.handles("tools")
    assert names(runtime.candidates(["tools"])) == ["a", "b", "c"]  # ties keep file order
    held_a = [await a.limiter.acquire(), await a.limiter.acquire()]
    held_b = [await b.limiter.acquire()]
    assert names(runtime.candidates(["tools"])) == ["c", "b", "a"]
    for slot in held_a:
        a.limiter.release(slot)
    assert names(runtime.candidates(["tools"])) == ["a", "c", "b"]
    for slot in held_b:
        b.limiter.release(slot)


def test_fallback_chain_order_and_dedup() -> None:
    runtime = FleetRuntime(fleet_config({"coder": ["x"], "tools": ["y", "x"]}))
    assert names(runtime.candidates(["coder", "tools"])) == ["x", "y"]
    assert names(runtime.candidates(["tools", "coder"])) == ["y", "x"]


def test_repeated_failures_bench_server() -> None:
    runtime = FleetRuntime(fleet_config({"tools": ["a", "b"]}), failure_threshold=2, cooldown_s=60)
    a, _b = runtime.handles("tools")
    runtime.record_failure(a)
    assert not a.health.cooling_down()
    assert names(runtime.candidates(["tools"])) == ["a", "b"]
    runtime.record_failure(a)
    assert a.health.cooling_down()
    assert a.health.consecutive_failures == 2
    # Benched: still offered, but only after every healthy server.
    assert names(runtime.candidates(["tools"])) == ["b", "a"]


def test_benched_primary_goes_after_fallback_tier() -> None:
    runtime = FleetRuntime(
        fleet_config({"coder": ["coder1"], "tools": ["tools1"]}), failure_threshold=1, cooldown_s=60
    )
    (coder,) = runtime.handles("coder")
    runtime.record_failure(coder)
    assert names(runtime.candidates(["coder", "tools"])) == ["tools1", "coder1"]


def test_success_clears_cooldown_and_records_latency() -> None:
    runtime = FleetRuntime(fleet_config({"tools": ["a", "b"]}), failure_threshold=1)
    a, _ = runtime.handles("tools")
    runtime.record_failure(a)
    assert names(runtime.candidates(["tools"])) == ["b", "a"]
    runtime.record_success(a, 0.25)
    runtime.record_success(a, 0.75)
    assert not a.health.cooling_down()
    assert a.health.consecutive_failures == 0
    assert a.health.recent_latency_s == pytest.approx(0.5)
    assert names(runtime.candidates(["tools"])) == ["a", "b"]


def test_cooldown_expires() -> None:
    runtime = FleetRuntime(fleet_config({"tools": ["a"]}), failure_threshold=1, cooldown_s=30)
    (a,) = runtime.handles("tools")
    runtime.record_failure(a)
    until = a.health.cooldown_until
    assert a.health.cooling_down(now=until - 1)
    assert not a.health.cooling_down(now=until + 0.001)


def test_state_is_shared_per_server_across_runtimes() -> None:
    fleet = fleet_config({"tools": ["a"]})
    one = FleetRuntime(fleet, failure_threshold=1)
    two = FleetRuntime(fleet)
    (a1,) = one.handles("tools")
    (a2,) = two.handles("tools")
    assert a1.limiter is a2.limiter
    one.record_failure(a1)
    assert a2.health.cooling_down()  # everyone avoids a failing server


def test_unknown_tier_raises_fleet_error() -> None:
    from endpoints.config import FleetError

    runtime = FleetRuntime(fleet_config({"tools": ["a"]}))
    with pytest.raises(FleetError, match="unknown tier 'nope'"):
        runtime.candidates(["nope"])


def test_limiters_and_all_handles_one_per_server() -> None:
    runtime = FleetRuntime(fleet_config({"tools": ["a", "b"], "summary": ["a"]}, slots=3))
    assert sorted(runtime.limiters()) == ["a", "b"]
    assert all(limiter.capacity == 3 for limiter in runtime.limiters().values())


def test_get_runtime_is_cached_per_fleet() -> None:
    fleet = fleet_config({"tools": ["a"]})
    assert get_runtime(fleet) is get_runtime(fleet)
    assert get_runtime("embedded") is get_runtime("embedded")


def test_a_loaded_config_shares_the_runtime_of_its_file() -> None:
    from endpoints.config import load_fleet

    by_name = get_runtime("embedded")
    assert get_runtime(load_fleet("embedded")) is by_name
