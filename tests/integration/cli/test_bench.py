"""Smoke runs of ``kitty-orch bench``: every suite still executes and writes its results.

No speed asserts (speed lives in the benchmark's own output). All suites run with the
smallest workloads on a SIMULATED fleet at a tiny time scale (seconds, not minutes),
the service suite included (real uvicorn in-process); the scheduling suite also runs on
the real embedded llama.cpp fleet.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from endpoints.config import FleetConfig
from kitty.bench._runner import SUITE_NAMES
from kitty.bench._simserve import sim_fleet
from kitty.cli.main import app

pytestmark = pytest.mark.integration

runner = CliRunner()


def _bench(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["bench", *args])
    return result.exit_code, result.output + (repr(result.exception) if result.exception else "")


def _results(out: Path) -> dict:
    assert (out / "results.md").is_file()
    return json.loads((out / "results.json").read_text())


def test_bench_all_smoke_on_a_simulated_fleet(tmp_path: Path) -> None:
    with sim_fleet(time_scale=0.001) as fleet_path:
        code, output = _bench("all", "--smoke", "--fleet", fleet_path, "--out", str(tmp_path))
    assert code == 0, output
    data = _results(tmp_path)
    assert set(data["suites"]) == set(SUITE_NAMES)
    for name, suite in data["suites"].items():
        assert not suite.get("error"), f"{name}: {suite.get('error')}"
        assert suite["meta"]["size"] == "smoke"
    scheduling = data["suites"]["scheduling"]
    for dag in scheduling["dags"]:
        assert all(best["ok"] for best in dag["best"].values()), dag["name"]
    assert data["suites"]["scale"]["goals_completed"] == data["suites"]["scale"]["goals"]
    assert data["suites"]["scale"]["dag_completed"] == data["suites"]["scale"]["dag_tasks"]
    assert data["suites"]["sim"]["simulated"] is True
    service = data["suites"]["service"]  # in-process uvicorn vs arun_goal, 2 rounds
    assert len(service["direct_ms"]) == len(service["http_ms"]) == service["rounds"] == 2
    assert service["ratio_http_to_direct"] > 0
    markdown = (tmp_path / "results.md").read_text()
    titles = ("Scheduling", "Overhead", "Planner validity", "Scale", "SIMULATED", "HTTP service")
    for title in titles:
        assert title in markdown


def test_bench_scheduling_smoke_on_the_embedded_fleet(
    embedded_fleet: FleetConfig, tmp_path: Path
) -> None:
    code, output = _bench("scheduling", "--smoke", "--out", str(tmp_path))
    assert code == 0, output
    suite = _results(tmp_path)["suites"]["scheduling"]
    assert suite["dags"], suite
    for dag in suite["dags"]:
        for variant, best in dag["best"].items():
            assert best["ok"], (dag["name"], variant, best)
            assert best["tasks"] == dag["tasks"]
            assert best["completion_tokens"] == dag["completion_tokens"]  # pinned counts held
    assert "| fan_out_join |" in (tmp_path / "results.md").read_text()


def test_bench_rejects_an_unknown_suite(tmp_path: Path) -> None:
    code, output = _bench("nonsense", "--out", str(tmp_path))
    assert code == 2
    assert "unknown benchmark" in output
