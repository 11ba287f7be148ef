"""How the app is put together: the order its security checks run in, and its limits."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from kitty.service import ServiceSettings, create_app
from kitty.service._server import MAX_CONNECTIONS, _uvicorn_options

CHUNK = b"x" * (1024 * 1024)


async def call(
    app: Any, headers: list[tuple[bytes, bytes]], host: bytes = b"127.0.0.1:8000"
) -> tuple[int, int]:
    """POST a chunked 40 MiB body; (status, body chunks the app read)."""
    read = 0
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": CHUNK, "more_body": read < 40}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/api/query/parallel",
        "raw_path": b"/api/query/parallel",
        "query_string": b"",
        "headers": [(b"host", host), *headers],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return int(start["status"]), read


async def test_a_request_without_the_token_is_refused_before_its_body_is_read() -> None:
    """Security review finding 4: the body limit ran first, so anyone could make the
    service buffer up to max_body_bytes per connection without the token."""
    app = create_app(ServiceSettings(fleet="embedded", start_embedded=False, api_token="t0k"))
    status, chunks_read = await call(app, [])
    assert status == 401
    assert chunks_read == 0


async def test_a_request_for_another_host_is_refused_before_its_body_is_read() -> None:
    app = create_app(ServiceSettings(fleet="embedded", start_embedded=False, api_token="t0k"))
    status, chunks_read = await call(app, [], host=b"rebound.example:8000")
    assert status == 400 and chunks_read == 0


async def test_with_the_token_an_oversized_body_is_still_refused() -> None:
    settings = ServiceSettings(
        fleet="embedded", start_embedded=False, api_token="t0k", max_body_bytes=2 * 1024 * 1024
    )
    app = create_app(settings)
    status, chunks_read = await call(app, [(b"authorization", b"Bearer t0k")])
    assert status == 413
    assert chunks_read > 0


def test_uvicorn_bounds_its_connections() -> None:
    options = _uvicorn_options(ServiceSettings(fleet="embedded"), "info")
    assert options["limit_concurrency"] == MAX_CONNECTIONS
