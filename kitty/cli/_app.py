"""The ``kitty-orch`` Typer application; command modules attach to it."""

from __future__ import annotations

import typer

from graph import CHECKPOINTS_ENV_VAR

app = typer.Typer(
    name="kitty-orch",
    help="Parallel multi-agent orchestration for local model fleets (llama.cpp, Ollama).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
fleet_app = typer.Typer(help="Start, probe and script the model fleet.", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")

FLEET_HELP = (
    "Fleet profile name (embedded, m3-ultra, ...) or path to a fleet .toml; env KITTY_FLEET."
)
CHECKPOINT_HELP = (
    "Checkpoint store: SQLite file path, sqlite:///path, postgres://... URL, or memory "
    f"(no persistence). Default: ${CHECKPOINTS_ENV_VAR} or ~/.kitty/checkpoints.sqlite."
)
