"""Charts are drawn with matplotlib, the ``charts`` extra: without it, one clear error."""

from __future__ import annotations

from kitty.errors import UserError

CHARTS_INSTALL = "pip install 'kitty-orchestrator[charts]'"
"""The command that adds matplotlib to an install without it."""


class ChartsNotInstalledError(UserError, ImportError):
    """matplotlib is not installed; the text names the ``pip install`` that adds it.

    A :class:`~kitty.errors.UserError`, so the CLI shows its one line, and an
    :class:`ImportError`, so ``except ImportError`` around an optional import still works.
    """


def require_matplotlib() -> None:
    """Import matplotlib, or raise :class:`ChartsNotInstalledError` if it is not installed.

    Raises:
        ChartsNotInstalledError: matplotlib is missing (not when it is installed but broken:
            that error is raised as it is).
    """
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError as missing:
        if missing.name != "matplotlib":
            raise
        raise ChartsNotInstalledError(
            f"charts need matplotlib, which is not installed; add it with: {CHARTS_INSTALL}"
        ) from None
