"""``python -m bench``: the same as ``kitty-orch bench``."""

import typer

from kitty.bench.command import bench

if __name__ == "__main__":
    typer.run(bench)
