"""Smoke runs of ``kitty-orch bench contention`` and ``fairness`` (no speed asserts).

Contention runs its SIMULATED part and its embedded part: a private copy of the embedded
fleet (real llama.cpp on free ports) started with the scarce slots. Fairness runs on the
SIMULATED fleet with both slot orders.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kitty.cli.main import app

pytestmark = pytest.mark.integration

runner = CliRunner()


def _suite(name: str, out: Path) -> dict:
    result = runner.invoke(app, ["bench", name, "--smoke", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads((out / "results.json").read_text())["suites"][name]


def test_contention_smoke_on_the_simulated_and_a_private_embedded_fleet(tmp_path: Path) -> None:
    suite = _suite("contention", tmp_path)
    for part in ("simulated", "embedded"):
        data = suite[part]
        assert data["slots"]["embedded-tools" if part == "embedded" else "athene-q4"] == 2
        for row in data["dags"]:
            assert set(row["best"]) == {"oracle", "product", "product_fifo"}
            for variant, best in row["best"].items():
                assert best["ok"], (part, row["name"], variant, best)
                assert best["completion_tokens"] == sum(
                    t["completion_tokens"] for t in row["best_runs"][variant]["spans"]
                )
            assert row["bound"]["bound_s"] > 0
            assert row["fifo_over_priority"] > 0
    rates = suite["embedded"]["rates"]["embedded-tools"]
    assert rates["decode_max"] >= rates["decode_1"] > 0  # llama.cpp reported its timings
    markdown = (tmp_path / "results.md").read_text()
    assert "## Contention" in markdown and "| chain_behind_fan_out |" in markdown


def test_fairness_smoke_runs_both_orders(tmp_path: Path) -> None:
    suite = _suite("fairness", tmp_path)
    assert suite["orders"] == ["fifo", "priority"]
    for order in suite["orders"]:
        assert suite["median"][order]["small_mean_s"] > 0
    assert set(suite["priority_over_fifo"]) == {
        "small_mean_s",
        "small_p95_s",
        "all_mean_s",
        "all_p95_s",
        "big_s",
    }
    assert "## Fairness" in (tmp_path / "results.md").read_text()
