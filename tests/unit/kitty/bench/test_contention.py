"""The contention suite's pure parts: scarce-slot fleet copies, DAG shapes, the lower bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from endpoints.config import load_fleet
from graph import prompts
from kitty.bench._bound import EndpointRates, lower_bound, sim_rates
from kitty.bench._contention import add_bounds, render_contention, scarce_slots, variants
from kitty.bench._prompting import task_messages
from kitty.bench._simserve import served_profile
from kitty.bench._workload import CONTENTION_SLOTS, contention_dags
from ops.simfleet import SIM_ENDPOINT_PARAMS, SimEndpointSpec


@pytest.mark.parametrize("profile", ["m3-ultra-sim", "embedded"])
def test_served_profile_writes_the_scarce_slots(profile: str, tmp_path: Path) -> None:
    fleet = load_fleet(profile)
    urls = {e.name: f"http://127.0.0.1:{40000 + i}" for i, e in enumerate(fleet.all_endpoints())}
    slots = scarce_slots(fleet)
    copy = load_fleet(served_profile(urls, tmp_path, profile, slots))
    for before, after in zip(fleet.all_endpoints(), copy.all_endpoints(), strict=True):
        assert after.base_url == urls[before.name]
        assert after.slots == slots.get(before.name, before.slots)
        assert after.ctx == before.ctx and after.model == before.model
    assert sorted(slots.values()) == sorted(CONTENTION_SLOTS.values())


def test_contention_dags_put_the_chain_behind_the_fan_out() -> None:
    for dag in contention_dags():
        first_chain = next(i for i, t in enumerate(dag.tasks) if t.id == "c1")
        independent = [i for i, t in enumerate(dag.tasks) if not t.dependencies and t.id != "c1"]
        assert independent and max(independent) < first_chain, dag.name
        chain = [t for t in dag.tasks if t.id.startswith("c")]
        leaves = [dag.tasks[i] for i in independent]
        assert min(t.max_tokens or 0 for t in chain) > max(t.max_tokens or 0 for t in leaves)
        assert all(t.tool_choice == "none" for t in dag.tasks)


def test_the_baseline_prompt_says_no_tools_like_the_product() -> None:
    task = contention_dags()[0].tasks[0]
    system = task_messages(task, "goal", {})[0]["content"]
    assert system.endswith(prompts.NO_TOOLS)


def test_product_fifo_is_compared_once_the_switch_exists() -> None:
    assert variants() == ["oracle", "product", "product_fifo"]


def test_lower_bound_is_the_critical_path_or_the_busiest_endpoint() -> None:
    dag = contention_dags()[0]  # 12 x 24 leaves, 5 x 96 chain, all on one endpoint
    endpoint = {t.id: "tools" for t in dag.tasks}
    slow_slots = {"tools": EndpointRates(decode_1=10.0, decode_max=20.0)}
    bound = lower_bound(dag.tasks, endpoint, {}, slow_slots)
    assert bound["critical_path_s"] == pytest.approx(5 * 96 / 10.0)
    assert bound["work_s"]["tools"] == pytest.approx((12 * 24 + 5 * 96) / 20.0)
    assert bound["binding"] == "critical path"
    one_slot = {"tools": EndpointRates(decode_1=10.0, decode_max=10.0, prefill=100.0)}
    prompts_ = {t.id: 100 for t in dag.tasks}
    bound = lower_bound(dag.tasks, endpoint, prompts_, one_slot)
    assert bound["critical_path_s"] == pytest.approx(5 * (1.0 + 9.6))
    assert bound["work_s"]["tools"] == pytest.approx((12 * 24 + 5 * 96) / 10.0)
    assert bound["binding"] == "tools"
    assert bound["bound_s"] == pytest.approx(76.8)


def test_sim_rates_come_from_the_timing_model() -> None:
    rates = sim_rates("athene-q4", 2)
    spec = SimEndpointSpec(name="athene-q4", slots=2, **SIM_ENDPOINT_PARAMS["athene-q4"])
    assert rates.decode_1 == spec.decode_tok_s_1
    assert rates.decode_max == pytest.approx(spec.aggregate_decode_tok_s(2))
    assert rates.decode_1 < rates.decode_max < 2 * rates.decode_1
    assert rates.prefill == spec.prefill_tok_s


def _fake_compare(dag: Any) -> dict[str, Any]:
    spans = [{"task_id": t.id, "prompt_tokens": 0} for t in dag.tasks]
    best = {
        "oracle": {"seconds": 100.0, "wall_s": 10.0, "ok": True},
        "product": {"seconds": 80.0, "wall_s": 8.0, "ok": True},
        "product_fifo": {"seconds": 100.0, "wall_s": 10.0, "ok": True},
    }
    row = {
        "name": dag.name,
        "shape": dag.shape,
        "tasks": len(dag.tasks),
        "best": best,
        "ratio_to_oracle": {"oracle": 1.0, "product": 0.8, "product_fifo": 1.0},
        "best_runs": {"oracle": {"spans": spans}},
    }
    return {
        "reps": 1,
        "slots": {"athene-q4": 2},
        "dags": [row],
        "geomean_ratio_to_oracle": row["ratio_to_oracle"],
        "token_scale": 1.0,
        "time_scale": 0.05,
        "target_met": True,
    }


def test_add_bounds_puts_ratios_to_the_bound_and_fifo_over_priority() -> None:
    dag = contention_dags()[0]
    fleet = load_fleet("m3-ultra-sim")
    result = _fake_compare(dag)
    rates = {"athene-q4": EndpointRates(decode_1=10.0, decode_max=20.0)}
    add_bounds(result, [dag], fleet, rates, 20.0)
    row = result["dags"][0]
    assert row["bound"]["bound_s"] == pytest.approx(48.0)
    assert row["ratio_to_bound"]["product"] == pytest.approx(80.0 / 48.0, abs=1e-3)
    assert row["fifo_over_priority"] == pytest.approx(1.25)
    assert result["geomean_fifo_over_priority"] == pytest.approx(1.25)
    suite = {
        "simulated": result,
        "embedded": {"skipped": "not embedded"},
        "target_ratio": 0.85,
        "target_met": True,
        "fifo_available": True,
    }
    text = "\n".join(render_contention(suite))
    assert "| chain_behind_fan_out |" in text
    assert "48.00 s (critical path)" in text
    assert "80.00 s (0.80x, 1.67x)" in text
    assert "Skipped: not embedded" in text
