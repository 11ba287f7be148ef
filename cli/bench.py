"""``kitty-orch bench``: the benchmark command of :mod:`bench.command`, on this app."""

from __future__ import annotations

from bench.command import bench
from cli.app import app
from cli.errors import shows_errors

app.command("bench")(shows_errors(bench))
