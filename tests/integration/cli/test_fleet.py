"""``kitty-orch fleet up|status|script`` and ``kitty-orch endpoints`` end to end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from endpoints.config import FleetConfig
from kitty.cli import _fleet as fleet_cli
from kitty.cli.main import app
from ops.embedded import port_is_free
from tests.helpers import embedded_servers_fleet, free_port, kitty_command

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console() -> Iterator[None]:
    """Tables at 200 columns so names are not wrapped in the captured output."""
    saved = fleet_cli.console._width
    fleet_cli.console.width = 200
    yield
    fleet_cli.console._width = saved


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]


def test_fleet_status_table(embedded_fleet: FleetConfig) -> None:
    result = invoke("fleet", "status", "--fleet", "embedded")
    assert result.exit_code == 0, result.output
    for endpoint in embedded_fleet.all_endpoints():
        assert endpoint.name in result.stdout
        assert endpoint.base_url in result.stdout
    assert "5/5 endpoints healthy" in result.stdout


def test_fleet_status_json(embedded_fleet: FleetConfig) -> None:
    result = invoke("fleet", "status", "--fleet", "embedded", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["fleet"] == "embedded"
    assert payload["healthy"] is True
    by_name = {e["name"]: e for e in payload["endpoints"]}
    tools = by_name["embedded-tools"]
    assert tools["tiers"] == ["tools"]
    assert tools["health"] == "ok"
    assert tools["total_slots"] == 4
    assert 0 <= tools["busy_slots"] <= 4
    assert tools["n_ctx"] == 2048
    assert tools["latency_ms"] > 0


def test_fleet_status_env_var(embedded_fleet: FleetConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KITTY_FLEET", "embedded")
    result = invoke("fleet", "status", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["fleet"] == "embedded"


def test_fleet_status_unhealthy_exits_1(tmp_path: Path) -> None:
    path = embedded_servers_fleet(tmp_path, [("ghost", free_port())])
    result = invoke("fleet", "status", "--fleet", str(path), "--timeout", "1")
    assert result.exit_code == 1, result.output
    assert "down" in result.stdout
    assert "0/1 endpoints healthy" in result.stdout
    assert "nothing listening" in result.stdout


def test_endpoints_command(embedded_fleet: FleetConfig) -> None:
    result = invoke("endpoints", "--fleet", "embedded")
    assert result.exit_code == 0, result.output
    for tier in embedded_fleet.tiers:
        assert tier in result.stdout
    result = invoke("endpoints", "--fleet", "embedded", "--json")
    rows = json.loads(result.stdout)["endpoints"]
    assert {row["tier"] for row in rows} == set(embedded_fleet.tiers)
    for row in rows:
        assert row["health"] == "ok"
        assert row["kind"] == "llamacpp"
        assert row["total_slots"] >= 1
        assert row["n_ctx"] == 2048
        assert row["latency_ms"] is not None


def test_endpoints_for_remote_fleet_without_servers() -> None:
    result = invoke("endpoints", "--fleet", "m3-ultra", "--json", "--timeout", "1")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)["endpoints"]}
    assert rows["gpt-oss-120b"]["kind"] == "ollama"
    assert rows["athene-q4"]["total_slots"] == 6  # configured value when unreachable


def test_fleet_script_m3_ultra() -> None:
    result = invoke("fleet", "script", "--fleet", "m3-ultra")
    assert result.exit_code == 0, result.output
    script = result.stdout
    assert script.startswith("#!/usr/bin/env bash")
    assert "--alias kitty-q4" in script
    assert "-np 6" in script
    assert "OLLAMA_NUM_PARALLEL=2" in script


def test_fleet_script_to_file(tmp_path: Path) -> None:
    target = tmp_path / "start-fleet.sh"
    result = invoke("fleet", "script", "--fleet", "m3-ultra", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_text().startswith("#!/usr/bin/env bash")
    assert os.access(target, os.X_OK)
    assert str(target) in result.stderr


def test_fleet_script_unwritable(tmp_path: Path) -> None:
    result = invoke("fleet", "script", "-o", str(tmp_path / "no" / "such" / "dir" / "x.sh"))
    assert_one_line_error(result, "cannot write")


def test_bad_fleet_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    for command in (["fleet", "status"], ["fleet", "script"], ["fleet", "up"], ["endpoints"]):
        result = invoke(*command, "--fleet", str(missing))
        assert_one_line_error(result, str(missing), "not found")


def test_unknown_profile() -> None:
    assert_one_line_error(invoke("fleet", "status", "--fleet", "no-such-rig"), "no-such-rig")


def test_malformed_fleet_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("name = [unclosed\n")
    assert_one_line_error(invoke("fleet", "status", "--fleet", str(path)), "not valid TOML")
    path.write_text('name = "x"\n[tiers.tools]\ndescription = 3\n')
    assert_one_line_error(invoke("endpoints", "--fleet", str(path)), "tiers.tools")


def test_fleet_up_refuses_remote_fleet() -> None:
    assert_one_line_error(
        invoke("fleet", "up", "--fleet", "m3-ultra"),
        "not embedded",
        "kitty-orch fleet script --fleet m3-ultra",
    )


def test_fleet_up_port_in_use(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        result = invoke(
            "fleet", "up", "--fleet", str(embedded_servers_fleet(tmp_path, [("busy", port)]))
        )
    assert_one_line_error(result, f"port {port}", "base_url")


def test_fleet_up_model_missing(tmp_path: Path) -> None:
    port = free_port()
    path = embedded_servers_fleet(
        tmp_path, [("lost", port)], model_path=str(tmp_path / "gone.gguf")
    )
    result = invoke("fleet", "up", "--fleet", str(path))
    assert_one_line_error(result, "gone.gguf", "not found")
    assert port_is_free("127.0.0.1", port)


def test_fleet_up_serves_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    path = embedded_servers_fleet(tmp_path, [("live", port)], slots=2)
    out = tmp_path / "up.out"
    env = {**os.environ, "COLUMNS": "200"}
    with out.open("w") as sink:
        proc = subprocess.Popen(
            kitty_command("fleet", "up", "--fleet", str(path)),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C to stop" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, "fleet up did not come up"
            time.sleep(0.1)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.read_text()
    assert "Traceback" not in text
    for needle in ("live", f"http://127.0.0.1:{port}", "smollm2-live", "fleet stopped"):
        assert needle in text
    assert port_is_free("127.0.0.1", port)
