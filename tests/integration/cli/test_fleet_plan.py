"""``kitty-orch fleet plan`` and ``fleet whatif`` end to end (no model fleet needed).

``whatif`` serves the SIMULATED ``m3-ultra-sim`` fleet in the subprocess; the Ollama case
uses the fake Ollama daemon's ``/api/show``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from endpoints.config import load_fleet
from ops.memory_plan import GIB, plan_fleet
from tests.fakes.ollama_server import FakeOllama
from tests.helpers import kitty_command

ROOT = Path(__file__).resolve().parents[3]


def kitty(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        kitty_command(*args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
    )


def test_plan_json_for_the_declared_m3_ultra() -> None:
    result = kitty("fleet", "plan", "--fleet", "m3-ultra", "--memory-gb", "256", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    rows = {e["endpoint"]: e for e in payload["endpoints"]}
    assert set(rows) == {
        "athene-q4",
        "gpt-oss-120b",
        "gemma3-27b-vision",
        "qwen32b-coder",
        "hermes-8b-summary",
    }
    for row in rows.values():
        assert row["source"] == "declared"
        assert row["total_bytes"] == row["weights_bytes"] + row["kv_bytes"] + row["compute_bytes"]
    assert rows["athene-q4"]["kv_bytes"] == 30 * GIB
    assert rows["athene-q4"]["kv_bytes_per_slot"] == 5 * GIB
    total = payload["total"]
    assert total["machine_bytes"] == 256 * GIB and not total["over_committed"]
    assert total["total_bytes"] == sum(r["total_bytes"] for r in rows.values())


def test_plan_compares_with_the_machine_the_fleet_declares() -> None:
    """Issue 24 item 5: m3-ultra declares 256 GiB, so it fits whatever machine plans it."""
    env = {k: v for k, v in os.environ.items() if k != "KITTY_MEMORY_GB"}
    result = subprocess.run(
        kitty_command("fleet", "plan", "--fleet", "m3-ultra"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**env, "COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "for the machine the fleet declares: Mac Studio M3 Ultra, 256 GiB" in result.stdout
    assert "OVER-COMMITTED" not in result.stdout


def test_plan_table_shows_the_seed_estimates_and_over_commit() -> None:
    result = kitty("fleet", "plan", "--fleet", "m3-ultra", "--memory-gb", "1")
    assert result.returncode == 1
    assert "OVER-COMMITTED" in result.stdout
    assert "original design's M3 Ultra 256 GB table" in result.stdout
    assert "~16 GB" in result.stdout and "2.75 off" in result.stdout
    fits = kitty("fleet", "plan", "--fleet", "embedded", "--memory-gb", "1")
    assert fits.returncode == 0, fits.stdout
    assert "fits:" in fits.stdout and "(shared)" in fits.stdout


def test_plan_shows_the_memory_change_of_a_layout() -> None:
    result = kitty(
        "fleet",
        "plan",
        "--fleet",
        "m3-ultra",
        "--memory-gb",
        "512",
        "--set",
        "tools.slots=8",
        "--add-replica",
        "coder",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "memory change: --set tools.slots=8 --add-replica coder" in result.stdout
    assert "+10.0 GiB" in result.stdout  # two more 16k slots of Athene at 5 GiB each
    assert "qwen32b-coder-2" in result.stdout
    bad = kitty("fleet", "plan", "--fleet", "m3-ultra", "--set", "tools.slots=many")
    assert bad.returncode == 2
    assert "tools.slots=many" in bad.stderr and "TIER.FIELD=VALUE" in bad.stderr


def test_script_warns_when_the_fleet_over_commits() -> None:
    result = kitty("fleet", "script", "--fleet", "m3-ultra", env={"KITTY_MEMORY_GB": "1"})
    assert result.returncode == 0, result.stderr
    assert "over-commits memory" in result.stderr
    assert result.stdout.startswith("#!")  # the script itself stays clean
    quiet = kitty("fleet", "script", "--fleet", "m3-ultra", env={"KITTY_MEMORY_GB": "512"})
    assert "over-commits" not in quiet.stderr


def test_whatif_shows_the_difference_between_layouts() -> None:
    result = kitty(
        "fleet",
        "whatif",
        "--fleet",
        "m3-ultra-sim",
        "--scenario",
        "research_3",
        "--set",
        "tools.slots=1",
        "--time-scale",
        "0.1",
        "--repeats",
        "1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["simulated"] is True
    current, changed = report["current"], report["changed"]
    assert current["ok"] and changed["ok"]
    tools_before = next(e for e in current["endpoints"] if e["endpoint"] == "athene-q4")
    tools_after = next(e for e in changed["endpoints"] if e["endpoint"] == "athene-q4")
    assert (tools_before["slots"], tools_after["slots"]) == (6, 1)
    assert tools_before["tasks"] == tools_after["tasks"] == 3
    # three tools tasks on one slot: two of them queue, and the run takes longer
    assert tools_before["max_queue_wait_s"] < 1.0
    assert tools_after["max_queue_wait_s"] > 5.0
    assert changed["makespan_s"] > current["makespan_s"]
    assert report["speedup"] < 1


def test_whatif_reads_a_scenario_file_and_adds_a_replica(tmp_path: Path) -> None:
    scenario = {
        "goal": "Write two modules",
        "synthesis_tokens": 20,
        "tasks": [
            {"id": f"c{i}", "agent": "coder", "description": f"module {i}", "completion_tokens": 60}
            for i in range(1, 9)
        ],
    }
    path = tmp_path / "coders.json"
    path.write_text(json.dumps(scenario), encoding="utf-8")
    result = kitty(
        "fleet",
        "whatif",
        "--fleet",
        "m3-ultra-sim",
        "--scenario",
        str(path),
        "--add-replica",
        "coder",
        "--time-scale",
        "0.1",
    )
    assert result.returncode == 0, result.stderr
    assert "qwen32b-coder-2" in result.stdout
    assert "the change: helps" in result.stdout
    broken = tmp_path / "broken.json"
    broken.write_text('{"goal": "x", "tasks": [{"id": "a"}]}', encoding="utf-8")
    bad = kitty(
        "fleet", "whatif", "--fleet", "m3-ultra-sim", "-s", str(broken), "--set", "tools.slots=2"
    )
    assert bad.returncode == 2
    assert str(broken) in bad.stderr and "tasks.0.agent" in bad.stderr


def test_ollama_model_from_api_show(tmp_path: Path) -> None:
    with FakeOllama() as ollama:
        path = tmp_path / "ollama.toml"
        path.write_text(
            'name = "o"\n[tiers.reasoning]\n[[tiers.reasoning.endpoints]]\nname = "oss"\n'
            f'kind = "ollama"\nbase_url = "{ollama.base_url}"\nmodel = "gpt-oss:120b"\n'
            "slots = 2\nctx = 8192\n",
            encoding="utf-8",
        )
        plan = plan_fleet(load_fleet(path), memory_bytes=256 * GIB)
        assert any(r.path == "/api/show" for r in ollama.requests)
    row = plan.endpoints[0]
    assert row.source == "ollama"
    assert row.weights_bytes == 65_000_000_000  # /api/tags size
    # 18 full layers over 2 x 8192 cells + 18 SWA layers over 768 cells per slot
    assert row.kv_bytes == 2 * 8 * 64 * 2 * (18 * 16384 + 18 * 768 * 2)
    down = tmp_path / "down.toml"
    down.write_text(path.read_text().replace(ollama.base_url, "http://127.0.0.1:9"))
    missing = plan_fleet(load_fleet(down), memory_bytes=256 * GIB).endpoints[0]
    assert missing.source == "unknown" and "not reachable" in missing.notes[0]
