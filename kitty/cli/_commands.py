"""Import each command module so its commands register on :data:`kitty.cli._app.app`."""

from kitty.cli import (
    _bench,  # noqa: F401
    _fleet,  # noqa: F401
    _fleet_plan,  # noqa: F401
    _resume,  # noqa: F401
    _run,  # noqa: F401
    _serve,  # noqa: F401
)
