"""Import each command module so its commands register on :data:`cli.app.app`."""

from cli import fleet  # noqa: F401
