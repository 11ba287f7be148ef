"""Import each command module so its commands register on :data:`kitty.cli.app.app`."""

from kitty.cli import (
    bench,  # noqa: F401
    fleet,  # noqa: F401
    fleet_plan,  # noqa: F401
    resume,  # noqa: F401
    run,  # noqa: F401
    serve,  # noqa: F401
)
