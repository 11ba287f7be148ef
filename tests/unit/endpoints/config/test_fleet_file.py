"""Fleet file loading and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from endpoints.config import (
    FLEET_ENV_VAR,
    FleetConfig,
    FleetError,
    available_profiles,
    load_fleet,
    profiles_dir,
    resolve_fleet_path,
)

VALID = """
name = "tiny"
[tiers.tools]
[[tiers.tools.endpoints]]
name = "a"
kind = "llamacpp"
base_url = "http://127.0.0.1:9001/"
model = "m"
slots = 2
ctx = 1024
"""


def write(tmp_path: Path, text: str, name: str = "fleet.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def tier_with_endpoint_a(tier: str, base_url: str) -> str:
    """A fleet-file tier whose one endpoint is also named ``a``, at ``base_url``."""
    return f"""
[tiers.{tier}]
[[tiers.{tier}.endpoints]]
name = "a"
kind = "llamacpp"
base_url = "{base_url}"
model = "m"
"""


def test_shipped_profiles_are_listed() -> None:
    assert {"embedded", "m3-ultra"} <= set(available_profiles())


def test_embedded_profile_loads() -> None:
    fleet = load_fleet("embedded")
    assert fleet.name == "embedded"
    assert fleet.embedded is True
    assert {"tools", "reasoning", "vision", "coder", "summary"} <= set(fleet.tiers)
    tools = fleet.tier("tools").endpoints[0]
    assert tools.kind == "llamacpp"
    assert tools.slots == 4
    assert tools.port == 28083
    assert tools.launch.model_path and tools.launch.model_path.startswith("pkg:")
    assert fleet.source.endswith("embedded.toml")
    ports = [e.port for e in fleet.all_endpoints()]
    assert len(ports) == len(set(ports)) == 5


def test_m3_ultra_profile_loads() -> None:
    fleet = load_fleet("m3-ultra")
    assert fleet.embedded is False
    kinds = {e.name: e.kind for e in fleet.all_endpoints()}
    assert kinds["gpt-oss-120b"] == "ollama"
    assert kinds["athene-q4"] == "llamacpp"
    assert sum(e.slots or 0 for e in fleet.all_endpoints()) == 20
    athene = fleet.tier("tools").endpoints[0]
    assert athene.launch.ctx_size == 98304
    assert athene.launch.flash_attn is True
    assert fleet.tier("reasoning").endpoints[0].thinking == "medium"


def test_loaded_config_passes_through() -> None:
    fleet = load_fleet("embedded")
    assert load_fleet(fleet) is fleet


def test_valid_file_by_path(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, VALID))
    endpoint = fleet.tier("tools").endpoints[0]
    assert endpoint.base_url == "http://127.0.0.1:9001"  # trailing slash stripped
    assert endpoint.host == "127.0.0.1"
    assert endpoint.port == 9001
    assert fleet.source == str(tmp_path / "fleet.toml")


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    text = VALID.replace('name = "tiny"\n', "", 1)
    assert load_fleet(write(tmp_path, text, "my-rig.toml")).name == "my-rig"


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(FleetError) as info:
        load_fleet(missing)
    message = str(info.value)
    assert str(missing) in message
    assert "not found" in message
    assert "embedded" in message  # lists the shipped profiles as alternatives


def test_unknown_profile_lists_profiles() -> None:
    with pytest.raises(FleetError, match=r"unknown fleet profile 'no-such-rig'.*m3-ultra"):
        load_fleet("no-such-rig")


def test_malformed_toml_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "name = 'x'\n[tiers.tools\n")
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    assert str(path) in str(info.value)
    assert "not valid TOML" in str(info.value)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "bogus_key = 1\n")
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    message = str(info.value)
    assert str(path) in message
    assert "tiers.tools.endpoints.0.bogus_key" in message
    assert "Extra inputs are not permitted" in message


def test_bad_url_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("http://127.0.0.1:9001/", "127.0.0.1:9001"))
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    message = str(info.value)
    assert "tiers.tools.endpoints.0.base_url" in message
    assert "http://" in message


def test_url_with_v1_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("9001/", "9001/v1"))
    with pytest.raises(FleetError, match="without /v1"):
        load_fleet(path)


def test_bad_kind_and_slots(tmp_path: Path) -> None:
    text = VALID.replace('"llamacpp"', '"vllm"').replace("slots = 2", "slots = 0")
    with pytest.raises(FleetError) as info:
        load_fleet(write(tmp_path, text))
    message = str(info.value)
    assert "tiers.tools.endpoints.0.kind" in message
    assert "tiers.tools.endpoints.0.slots" in message


def test_duplicate_endpoint_name_with_other_url(tmp_path: Path) -> None:
    text = VALID + tier_with_endpoint_a("coder", "http://127.0.0.1:9002")
    with pytest.raises(FleetError, match="used twice"):
        load_fleet(write(tmp_path, text))


def test_shared_server_appears_once(tmp_path: Path) -> None:
    text = VALID + tier_with_endpoint_a("summary", "http://127.0.0.1:9001")
    fleet = load_fleet(write(tmp_path, text))
    assert [e.name for e in fleet.all_endpoints()] == ["a"]
    assert fleet.tiers_by_endpoint() == {"a": ["tools", "summary"]}


def test_unknown_tier_lists_known() -> None:
    fleet = load_fleet("embedded")
    with pytest.raises(FleetError) as info:
        fleet.tier("telepathy")
    assert "telepathy" in str(info.value)
    assert "tools" in str(info.value)


def test_env_var_selects_fleet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(FLEET_ENV_VAR, "m3-ultra")
    assert load_fleet().name == "m3-ultra"
    monkeypatch.setenv(FLEET_ENV_VAR, str(write(tmp_path, VALID)))
    assert load_fleet(None).name == "tiny"
    # An explicit choice wins over the environment.
    assert load_fleet("embedded").name == "embedded"


def test_env_var_pointing_nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(FLEET_ENV_VAR, str(tmp_path / "gone.toml"))
    with pytest.raises(FleetError, match=r"gone\.toml"):
        load_fleet()


def test_default_is_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FLEET_ENV_VAR, raising=False)
    assert resolve_fleet_path(None).stem == "embedded"


def test_fleet_needs_a_tier(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="tiers"):
        load_fleet(write(tmp_path, 'name = "empty"\n'))


def test_model_roundtrip() -> None:
    fleet = load_fleet("m3-ultra")
    again = FleetConfig.model_validate(fleet.model_dump())
    assert again == fleet


def test_a_builtin_tool_table_turns_the_tool_on(tmp_path: Path) -> None:
    base = (profiles_dir() / "embedded.toml").read_text()
    plain = tmp_path / "plain.toml"
    plain.write_text(base)
    assert not load_fleet(plain).fetch.enabled and not load_fleet(plain).memory.enabled
    tables = tmp_path / "tables.toml"
    tables.write_text(base + "\n[fetch]\n\n[memory]\nenabled = false\n")
    loaded = load_fleet(tables)
    assert loaded.fetch.enabled and not loaded.memory.enabled


def test_a_fleet_may_declare_its_machine(tmp_path: Path) -> None:
    """Issue 24 item 5: ``[machine]`` says what the fleet is for (a name, its memory)."""
    path = write(tmp_path, VALID + '\n[machine]\nname = "Mac Studio"\nmemory_gib = 256\n')
    machine = load_fleet(path).machine
    assert machine is not None
    assert (machine.name, machine.memory_gib) == ("Mac Studio", 256)
    assert load_fleet(write(tmp_path, VALID, "plain.toml")).machine is None
    shipped = load_fleet("m3-ultra").machine
    assert shipped is not None and shipped.memory_gib == 256


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ("[machine]\nname = 'x'\n", "machine.memory_gib"),
        ("[machine]\nmemory_gib = 0\n", "machine.memory_gib"),
        ("[machine]\nmemory_gib = 'lots'\n", "machine.memory_gib"),
        ("[machine]\nmemory_gb = 256\n", "machine.memory_gb"),
    ],
)
def test_a_bad_machine_table_is_named(tmp_path: Path, table: str, named: str) -> None:
    with pytest.raises(FleetError, match=named.replace(".", r"\.")):
        load_fleet(write(tmp_path, VALID + "\n" + table))
