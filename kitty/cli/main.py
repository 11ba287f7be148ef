"""Entry point of ``kitty-orch``: imports every command module, then runs the app."""

from __future__ import annotations

import sys

from kitty.cli import _commands  # noqa: F401  (registers the commands)
from kitty.cli._app import app


def main() -> None:
    """Run the CLI; errors a user can fix print one line and exit non-zero."""
    sys.exit(app())


if __name__ == "__main__":
    main()
