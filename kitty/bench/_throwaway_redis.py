"""A Redis for the benchmarks: ``$KITTY_SLOT_STORE`` when set, else a throwaway server."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

from endpoints.slots import SLOT_STORE_ENV


@contextlib.contextmanager
def redis_url() -> Iterator[str | None]:
    """The Redis to measure: ``$KITTY_SLOT_STORE``, a throwaway server, or none."""
    configured = os.environ.get(SLOT_STORE_ENV, "")
    if configured.startswith("redis"):
        yield configured
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", folder]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(10)
