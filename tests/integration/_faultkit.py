"""Helpers for the fault tests: endpoints with fault-test defaults and servers to break.

The shared embedded fleet (ports 28083-28087) is never touched: faults are injected on
servers these helpers start on free ports (a llama.cpp server in a subprocess that can be
SIGKILLed, a socket that accepts and never answers, ports where nothing listens). Fleet
files, ports and slot probes come from :mod:`tests.helpers`.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers import endpoint_spec, smollm2_launch

ROOT = Path(__file__).resolve().parents[2]


def endpoint(
    name: str,
    port: int,
    *,
    kind: str = "llamacpp",
    model: str = "smollm2-test",
    slots: int = 2,
    timeout_s: float = 60,
    launch: bool = False,
) -> dict[str, Any]:
    """An endpoint table for ``write_fleet`` (``launch``: embedded SmolLM2 settings)."""
    return endpoint_spec(
        name,
        port,
        kind=kind,
        model=model,
        slots=slots,
        ctx=2048,
        timeout_s=timeout_s,
        launch=smollm2_launch(batch_size=512, ubatch_size=512) if launch else None,
    )


class ServerProcess:
    """An embedded llama.cpp server in its own process (so it can be SIGKILLed).

    Args:
        fleet_path: An ``embedded = true`` fleet file with the server's endpoint.
        port: Its port, to wait for ``/health``.
    """

    def __init__(self, fleet_path: str | Path, port: int) -> None:
        code = (
            "import sys, time\n"
            "from ops.embedded import EmbeddedFleet\n"
            "fleet = EmbeddedFleet(sys.argv[1]).start()\n"
            "print('up', flush=True)\n"
            "time.sleep(3600)\n"
        )
        self.port = port
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(fleet_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "up":
            self.kill()
            raise RuntimeError(f"private llama.cpp server on port {port} did not start")

    def kill(self) -> None:
        """SIGKILL the server process."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


class BlackHole:
    """A TCP server that accepts connections, reads requests and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.setblocking(False)
            self._held.append(conn)  # kept open, never answered

    def close(self) -> None:
        """Stop accepting and drop every held connection."""
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            with contextlib.suppress(OSError):
                conn.close()
        self.sock.close()


@contextlib.contextmanager
def dead_ports(count: int) -> Iterator[list[int]]:
    """Ports bound but not listening: connections are refused at once."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        yield [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()
