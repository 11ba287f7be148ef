"""What the wheels hold, and what an install without the extras says.

The main wheel installs the five top-level packages and nothing else (not the benchmarks);
the kitty-orchestrator-bench wheel (``packaging/bench``) adds ``kitty/bench`` into the same
``kitty`` package. Both are built in-process with hatchling, the project's build backend.
Without the ``bench`` or ``charts`` extra, ``kitty-orch bench`` and :mod:`graph.charts` name
the ``pip install`` to run.
"""

from __future__ import annotations

import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import typer
from hatchling.builders.wheel import WheelBuilder
from typer.testing import CliRunner

from kitty.errors import UserError

REPO = Path(__file__).resolve().parents[2]
BENCH_PROJECT = REPO / "packaging" / "bench"


def _build_wheel(project: Path, out: Path) -> zipfile.ZipFile:
    """The wheel of ``project``, built into ``out``."""
    [wheel] = WheelBuilder(str(project)).build(directory=str(out), versions=["standard"])
    return zipfile.ZipFile(wheel)


def _payload(wheel: zipfile.ZipFile) -> list[str]:
    """The installed files of ``wheel`` (not its ``.dist-info``)."""
    return [name for name in wheel.namelist() if ".dist-info/" not in name]


def _metadata(wheel: zipfile.ZipFile) -> str:
    [name] = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    return wheel.read(name).decode()


def test_the_main_wheel_installs_the_five_packages_and_not_the_benchmarks(
    tmp_path: Path,
) -> None:
    with _build_wheel(REPO, tmp_path) as wheel:
        files = _payload(wheel)
    assert {name.split("/")[0] for name in files} == {
        "agents",
        "endpoints",
        "graph",
        "kitty",
        "ops",
    }
    assert [name for name in files if name.startswith("kitty/bench/")] == []
    assert "kitty/__init__.py" in files and "kitty/cli/_bench.py" in files


def test_the_bench_wheel_adds_kitty_bench_and_pins_the_main_version(tmp_path: Path) -> None:
    with _build_wheel(BENCH_PROJECT, tmp_path) as wheel:
        files, metadata = _payload(wheel), _metadata(wheel)
    assert "kitty/bench/__init__.py" in files and "kitty/bench/command.py" in files
    assert all(name.startswith("kitty/bench/") for name in files), files
    assert "kitty/__init__.py" not in files
    assert not [name for name in files if "__pycache__" in name]

    main = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    bench = tomllib.loads((BENCH_PROJECT / "pyproject.toml").read_text())["project"]
    assert bench["version"] == main["version"]
    assert f"Requires-Dist: kitty-orchestrator=={main['version']}" in metadata
    assert any(extra.startswith(bench["name"]) for extra in main["optional-dependencies"]["bench"])


def test_bench_without_the_extra_prints_the_install_command() -> None:
    from kitty.cli._bench import BENCH_INSTALL, add_bench_command

    cli = typer.Typer()

    @cli.callback()
    def main() -> None:
        """A stand-in app with only ``bench``."""

    add_bench_command(cli, installed=False)
    result = CliRunner().invoke(cli, ["bench", "all", "--smoke", "--out", "x"])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "not installed" in line and BENCH_INSTALL in line


def test_charts_without_matplotlib_name_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [name for name in sys.modules if name.startswith("graph.charts")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(ImportError) as failed:
        import graph.charts  # noqa: F401
    assert isinstance(failed.value, UserError)
    assert "pip install 'kitty-orchestrator[charts]'" in str(failed.value)
