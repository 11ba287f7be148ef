"""``kitty-orch serve --model NAME=FLEET``: extra workflows of the OpenAI-compatible door."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kitty.cli.main import app as cli_app
from kitty.errors import FleetError
from kitty.service import ServiceSettings, create_app


def test_serve_passes_each_model_to_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: list[ServiceSettings] = []
    monkeypatch.setattr("kitty.service.serve", lambda settings, **_: captured.append(settings))

    result = CliRunner().invoke(
        cli_app,
        ["serve", "--port", "0", "--model", "big=m3-ultra", "--model", " lab = embedded "],
    )

    assert result.exit_code == 0, result.output
    (settings,) = captured
    assert settings.models == {"big": "m3-ultra", "lab": "embedded"}


@pytest.mark.parametrize(
    ("pairs", "words"),
    [
        (["big"], "write NAME=FLEET"),
        (["big=m3-ultra", "big=embedded"], "given twice"),
        (["kitty-orchestrator=embedded"], "other than kitty-orchestrator"),
        (["has space=embedded"], "not usable"),
    ],
)
def test_a_bad_model_pair_is_refused_with_the_fix(pairs: list[str], words: str) -> None:
    arguments = [item for pair in pairs for item in ("--model", pair)]

    result = CliRunner().invoke(
        cli_app, ["serve", "--port", "0", *arguments], env={"COLUMNS": "200"}
    )

    assert result.exit_code != 0
    assert words in " ".join(result.output.split())


def test_a_model_on_a_fleet_that_does_not_load_fails_the_start() -> None:
    settings = ServiceSettings(
        fleet="embedded", start_embedded=False, models={"gone": "/nonexistent/fleet.toml"}
    )

    with pytest.raises(FleetError, match="nonexistent"):
        create_app(settings)
