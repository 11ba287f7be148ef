"""Shared fixtures: the embedded llama.cpp fleet, started once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from endpoints.config import FleetConfig, load_fleet
from endpoints.pool import reset_runtimes


@pytest.fixture(scope="session", autouse=True)
def _private_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep test runs (and the CLI subprocesses they start) out of ~/.kitty."""
    previous = os.environ.get("KITTY_CHECKPOINTS")
    os.environ["KITTY_CHECKPOINTS"] = str(tmp_path_factory.mktemp("kitty") / "checkpoints.sqlite")
    yield
    if previous is None:
        os.environ.pop("KITTY_CHECKPOINTS", None)
    else:
        os.environ["KITTY_CHECKPOINTS"] = previous


@pytest.fixture(scope="session")
def embedded_config() -> FleetConfig:
    """The shipped embedded fleet profile."""
    return load_fleet("embedded")


@pytest.fixture(scope="session")
def embedded_fleet(embedded_config: FleetConfig) -> Iterator[FleetConfig]:
    """Real llama.cpp servers (xllamacpp + SmolLM2-135M) for integration tests.

    Started once for the session; reused if something already serves the ports
    (e.g. ``kitty-orch fleet up`` in another terminal).
    """
    from ops.embedded import EmbeddedFleet

    os.environ.setdefault("KITTY_FLEET", "embedded")
    with EmbeddedFleet(embedded_config):
        reset_runtimes()
        yield embedded_config
