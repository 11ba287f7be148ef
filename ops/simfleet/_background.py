"""Serving ASGI apps: uvicorn servers on one background thread, on pre-bound sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kitty.errors import SimFleetError

if TYPE_CHECKING:  # uvicorn loads with the first server, not with the package
    import uvicorn


def _bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` (0 = any free port).

    Raises:
        SimFleetError: The port is taken; the message names it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it headers and body leave in two segments and wait ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SimFleetError(
            f"cannot listen on {host}:{port} ({exc.strerror}); stop whatever uses that port "
            "or give the endpoint another port in the fleet file"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class BackgroundServers:
    """Serve ASGI apps with uvicorn on one background thread and event loop.

    Sockets are bound in :meth:`start` (in the caller's thread), so a taken port raises a
    clear error instead of uvicorn's ``sys.exit``. Before stopping, each app's optional
    ``app.state.before_stop()`` hook runs on the server loop (to end hanging requests).
    """

    def __init__(
        self,
        apps: Sequence[tuple[Any, str, int]],
        *,
        name: str = "kitty-sim",
        log_level: str = "warning",
        graceful_s: float = 1.0,
    ) -> None:
        self._apps = list(apps)
        self._name = name
        self._log_level = log_level
        self._graceful_s = graceful_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._servers: list[uvicorn.Server] = []
        self.ports: list[int] = []

    @property
    def running(self) -> bool:
        """True while the server thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout_s: float = 15.0) -> list[int]:
        """Bind every socket, start the servers and wait until they accept connections.

        Returns:
            The bound ports, in the order of the apps.

        Raises:
            SimFleetError: A port is taken or a server failed to start.
        """
        if self.running:
            return self.ports
        sockets: list[socket.socket] = []
        try:
            for _, host, port in self._apps:
                sockets.append(_bind_socket(host, port))
        except SimFleetError:
            for sock in sockets:
                sock.close()
            raise
        self.ports = [sock.getsockname()[1] for sock in sockets]
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._thread_main, args=(sockets,), name=self._name, daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise SimFleetError(f"servers did not start within {timeout_s:g}s")
        if self._error is not None:
            error = self._error
            self.stop()
            raise SimFleetError(f"server failed to start: {error!r}") from error
        return self.ports

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every server and join the thread (in-flight requests are cancelled)."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and self._stop_event is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._stop_event.set)
        thread.join(timeout_s)
        if thread.is_alive() and loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._force_exit)
            thread.join(timeout_s)
        self._thread = None

    def _force_exit(self) -> None:
        for server in self._servers:
            server.force_exit = True

    def _thread_main(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(sockets))
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
        finally:
            for sock in sockets:
                sock.close()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None
            self._ready.set()

    async def _serve(self, sockets: list[socket.socket]) -> None:
        import uvicorn

        self._stop_event = asyncio.Event()
        self._servers = [
            uvicorn.Server(
                uvicorn.Config(
                    app,
                    host=host,
                    port=sock.getsockname()[1],
                    log_config=None,
                    log_level=self._log_level,
                    access_log=False,
                    lifespan="on",
                    # Annotated int, but uvicorn only hands it to asyncio.wait_for, which
                    # takes fractions (the fake servers of the tests stop in 0.5 s).
                    timeout_graceful_shutdown=self._graceful_s,  # type: ignore[arg-type]
                )
            )
            for (app, host, _), sock in zip(self._apps, sockets, strict=True)
        ]
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, sock in zip(self._servers, sockets, strict=True)
        ]
        while not all(server.started for server in self._servers):
            failed = next((task for task in tasks if task.done()), None)
            if failed is not None:
                failed.result()  # raises the startup error
                raise SimFleetError("a server exited during startup")
            await asyncio.sleep(0.005)
        self._ready.set()
        await self._stop_event.wait()
        for app, _, _ in self._apps:
            hook = getattr(getattr(app, "state", None), "before_stop", None)
            if callable(hook):
                hook()
        for server in self._servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
