import json

import pytest

from agents import DEFAULT_AGENTS, validate_agents
from endpoints.config import FleetError, load_fleet
from graph.budgets._budget import certainly_fits, estimate_tokens
from graph.planning import plan_json_schema


def test_plan_schema_enumerates_registered_agents() -> None:
    schema = plan_json_schema(list(DEFAULT_AGENTS), 6)
    item = schema["$defs"]["task_1"]
    assert item["properties"]["agent"]["enum"] == list(DEFAULT_AGENTS)
    assert schema["properties"]["tasks"]["maxItems"] == 6
    assert set(item["required"]) == {"id", "agent", "description", "dependencies"}
    json.dumps(schema)  # serializable as sent in response_format


def test_budget_bound_is_conservative() -> None:
    # One token per UTF-8 byte (plus a leading one): no tokenizer makes more.
    assert certainly_fits("x" * 49, 50)
    assert not certainly_fits("x" * 50, 50)
    assert not certainly_fits("é" * 25, 50)
    assert estimate_tokens("abcd" * 10) == 10


@pytest.mark.parametrize("profile", ["embedded", "m3-ultra"])
def test_default_agents_fit_shipped_fleets(profile: str) -> None:
    validate_agents(DEFAULT_AGENTS, load_fleet(profile))


def test_agents_on_missing_tier_are_reported() -> None:
    fleet = load_fleet("embedded")
    smaller = fleet.model_copy(update={"tiers": {"tools": fleet.tiers["tools"]}})
    with pytest.raises(FleetError, match="lacks tiers"):
        validate_agents(DEFAULT_AGENTS, smaller)


def test_seed_prompts_and_temperatures_kept() -> None:
    assert DEFAULT_AGENTS["fabricator"].temperature == 0.2
    assert DEFAULT_AGENTS["coder"].primary_tier == "coder"
    assert DEFAULT_AGENTS["reasoner"].fallback_tier == "tools"
    assert "Never fabricate information" in DEFAULT_AGENTS["researcher"].system_prompt
    assert all(a.max_tokens <= 1024 for a in DEFAULT_AGENTS.values())
