"""``kitty-orch bench``: the benchmark command of :mod:`kitty.bench.command`, on this app."""

from __future__ import annotations

from kitty.bench.command import bench
from kitty.cli._app import app
from kitty.cli._errors import shows_errors

app.command("bench")(shows_errors(bench))
