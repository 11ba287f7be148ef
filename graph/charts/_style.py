"""What every picture shares: a stable colour per agent, and saving a figure."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from agents.registry import DEFAULT_AGENTS

Rgba = tuple[float, float, float, float]
"""A matplotlib colour as red, green, blue, alpha in 0..1."""

_PALETTE: list[Rgba] = [colormaps["tab10"](i) for i in range(10)] + [
    colormaps["Dark2"](i) for i in range(8)
]


def agent_colours(agents: Iterable[str] = ()) -> dict[str, Rgba]:
    """A stable colour per agent: registered agents first (same colour in every picture)."""
    names = list(DEFAULT_AGENTS)
    names += [a for a in dict.fromkeys(agents) if a not in DEFAULT_AGENTS]
    # tab10's red is kept for failures: skip it for agents.
    palette = [c for i, c in enumerate(_PALETTE) if i != 3]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def save_figure(fig: Figure, path: str | os.PathLike[str] | None) -> None:
    """Write ``fig`` to ``path`` (folders created); nothing when ``path`` is ``None``."""
    if path is not None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, dpi=fig.dpi, bbox_inches="tight")
