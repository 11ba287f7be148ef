"""Shared fixtures: the embedded llama.cpp fleet (started once per session), fake fleets."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from endpoints.config import FleetConfig, load_fleet
from endpoints.runtime import reset_runtime
from tests.fake_chat import FakeChat
from tests.helpers import offline_fleet
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer


@pytest.fixture(scope="session", autouse=True)
def _private_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep test runs (and the CLI subprocesses they start) out of ~/.kitty."""
    previous = os.environ.get("KITTY_CHECKPOINTS")
    os.environ["KITTY_CHECKPOINTS"] = str(tmp_path_factory.mktemp("kitty") / "checkpoints.sqlite")
    yield
    if previous is None:
        os.environ.pop("KITTY_CHECKPOINTS", None)
    else:
        os.environ["KITTY_CHECKPOINTS"] = previous


@pytest.fixture(scope="session")
def embedded_config() -> FleetConfig:
    """The shipped embedded fleet profile."""
    return load_fleet("embedded")


@pytest.fixture(scope="session")
def embedded_fleet(embedded_config: FleetConfig) -> Iterator[FleetConfig]:
    """Real llama.cpp servers (xllamacpp + SmolLM2-135M) for integration tests.

    Started once for the session; reused if something already serves the ports
    (e.g. ``kitty-orch fleet up`` in another terminal).
    """
    from ops.embedded import EmbeddedFleet

    os.environ.setdefault("KITTY_FLEET", "embedded")
    with EmbeddedFleet(embedded_config):
        reset_runtime()
        yield embedded_config


@pytest.fixture
def fresh_fleet_state() -> Iterator[None]:
    """No live state left over from another test, before or after (one process runtime)."""
    reset_runtime()
    yield
    reset_runtime()


@dataclass
class FakeFleet:
    """A fleet file whose servers do not run, its chat models scripted by ``chat``.

    Attributes:
        path: The fleet file, for ``fleet=`` (tiers as in the embedded profile, endpoints
            ``fake-<tier>`` with 2 slots on loopback ports where nothing listens).
        chat: The fake model factory installed on its runtime.
    """

    path: str
    chat: FakeChat


@pytest.fixture
def fake_fleet(tmp_path: Path, fresh_fleet_state: None) -> FakeFleet:
    """Graph runs without servers: every model call is answered by a :class:`FakeChat`."""
    path = str(offline_fleet(tmp_path))
    return FakeFleet(path=path, chat=FakeChat().install(path))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free port for the module's tests (slot leases)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster for the session (checkpoints, memory, shared threads).

    Its directory is made under the system temp dir, not pytest's: pytest's is private to
    root, and the cluster belongs to the ``postgres`` user when the tests run as root.
    """
    directory = Path(tempfile.mkdtemp(prefix="kitty-postgres-"))
    server = PostgresServer(directory)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


class _OtlpReceiver(BaseHTTPRequestHandler):
    posts: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.posts.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A loopback OTLP/HTTP receiver: its base URL and the (path, body) of each POST."""
    posts: list[tuple[str, bytes]] = []
    handler = type("Handler", (_OtlpReceiver,), {"posts": posts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", posts
    server.shutdown()
    server.server_close()
