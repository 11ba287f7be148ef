"""Run settings: one validated Context, loaded fleets accepted, saved and restored."""

from __future__ import annotations

import json

import pytest

from endpoints.config import load_fleet
from graph.api import CONTEXT_METADATA_KEY, make_context, saved_context
from graph.context import MAX_TASKS, Context
from kitty.errors import SettingsError, UserError


def test_a_loaded_fleet_config_is_a_valid_fleet_setting() -> None:
    fleet = load_fleet("embedded")
    context = Context(fleet=fleet)
    saved = context.model_dump_json()  # json.dumps(asdict(...)) used to fail here
    restored = saved_context({CONTEXT_METADATA_KEY: saved})
    assert restored is not None
    assert restored.fleet == fleet


def test_settings_are_validated_with_the_field_named() -> None:
    with pytest.raises(SettingsError, match="max_tasks: Input should be less than or equal"):
        make_context(max_tasks=MAX_TASKS + 1)
    with pytest.raises(SettingsError, match="slot_timeout_s"):
        make_context(slot_timeout_s=-1)
    with pytest.raises(UserError, match="unknown_knob: Extra inputs are not permitted"):
        make_context(unknown_knob=1)


def test_keyword_settings_override_a_given_context() -> None:
    base = Context(max_tasks=3, voice=False)
    merged = make_context(context=base, max_tasks=5, fleet=None)
    assert (merged.max_tasks, merged.voice) == (5, False)
    assert merged.fleet == base.fleet  # None means "not given"


def test_saved_settings_from_another_version_keep_known_fields() -> None:
    raw = json.dumps({"max_tasks": 4, "retired_setting": True})
    restored = saved_context({CONTEXT_METADATA_KEY: raw})
    assert restored is not None and restored.max_tasks == 4


def test_every_setting_has_a_description_for_studio() -> None:
    schema = Context.model_json_schema()
    missing = [name for name, prop in schema["properties"].items() if not prop.get("description")]
    assert missing == []
