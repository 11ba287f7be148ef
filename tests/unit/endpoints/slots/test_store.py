"""Slot store settings: server keys, store URLs, the [coordination] table."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from endpoints.config import load_fleet
from endpoints.runtime import limiter_for, process_runtime
from endpoints.slots import LOCAL, CoordinationConfig, endpoint_key, hide_password
from kitty.errors import FleetError, SettingsError
from tests.helpers import offline_fleet


def test_loopback_names_and_trailing_slashes_name_one_server() -> None:
    same = {
        endpoint_key(url)
        for url in (
            "http://localhost:8083",
            "http://127.0.0.1:8083/",
            "HTTP://LocalHost:8083//",
            "http://[::1]:8083",
        )
    }
    assert same == {"http://127.0.0.1:8083"}
    assert endpoint_key("http://gpu-box/") == "http://gpu-box:80"
    assert endpoint_key("http://gpu-box:8083") != endpoint_key("http://gpu-box:8084")


def test_limiters_are_shared_by_normalised_url(fresh_fleet_state: None) -> None:
    assert limiter_for("http://localhost:1/", "a", 2) is limiter_for("http://127.0.0.1:1", "b", 2)


@pytest.mark.parametrize(
    "url", ["redis:/127.0.0.1", "redis://", "http://127.0.0.1:6379", "redis://h:6379/zero", "x"]
)
def test_a_malformed_store_url_names_it_and_the_expected_form(url: str) -> None:
    with pytest.raises(ValidationError) as failure:
        CoordinationConfig(slot_store=url)
    message = str(failure.value)
    assert repr(url) in message and "expected local or redis://" in message


def test_the_environment_overrides_the_fleet_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KITTY_SLOT_STORE", "redis//nowhere")
    with pytest.raises(SettingsError) as failure:
        process_runtime().slot_store(CoordinationConfig())
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("KITTY_SLOT_STORE = 'redis//nowhere' is not valid")
    monkeypatch.setenv("KITTY_SLOT_STORE", "local")
    assert process_runtime().slot_store(CoordinationConfig(slot_store="redis://h:1/0")) is LOCAL


def test_a_fleet_file_with_a_bad_store_fails_to_load(tmp_path: Path) -> None:
    path = offline_fleet(tmp_path)
    path.write_text(path.read_text() + '\n[coordination]\nslot_store = "redis:6379"\n')
    with pytest.raises(FleetError, match="slot_store"):
        load_fleet(str(path))


def test_passwords_are_hidden() -> None:
    assert hide_password("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert hide_password("redis://h:6379/0") == "redis://h:6379/0"
