"""Errors of the OpenAI-compatible door in OpenAI's shape, with the service's statuses.

OpenAI clients read ``{"error": {"message", "type", "param", "code"}}``. The routes of
the door answer in that shape themselves; :class:`OpenAIErrorShape` rewrites what other
layers answer on a ``/v1`` path (the security middleware's 401, 413 and Host 400, a 404
for a path the door does not have) from the service's ``{"error", "field"}`` shape, so
every answer a client of the door gets has one shape.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kitty.errors import UserError
from kitty.service._errors import (
    internal_error_body,
    log_internal_error,
    new_error_id,
    user_error_response,
)

OPENAI_PREFIX = "/v1"

# OpenAI's error type and code for each of the service's statuses.
_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    422: ("invalid_request_error", "invalid_value"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    503: ("server_error", "service_unavailable"),
}


def is_openai_path(path: str) -> bool:
    """True for the door's paths (``/v1`` and below)."""
    return path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")


def openai_error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body for ``status`` (type and default code from the status)."""
    kind, default_code = _KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {
        "error": {"message": message, "type": kind, "param": param, "code": code or default_code}
    }


def openai_error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error response in OpenAI's shape."""
    body = openai_error_body(status, message, param=param, code=code)
    return JSONResponse(body, status_code=status, headers=headers or None)


def user_error_as_openai(exc: UserError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, OpenAI body and headers answering a user error (as the service would)."""
    status, body, headers = user_error_response(exc)
    return status, openai_error_body(status, body["error"], param=body.get("field")), headers


def internal_error_as_openai(exc: BaseException, what: str) -> dict[str, Any]:
    """OpenAI's body of a 500: no exception text, the error id the log has it under."""
    error_id = new_error_id()
    log_internal_error(error_id, what, exc)
    return openai_error_body(500, internal_error_body(error_id)["error"])


def reshape(status: int, payload: bytes) -> bytes | None:
    """The service's JSON error body in OpenAI's shape (``None``: leave it as it is)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return None  # already OpenAI's shape, or not an error body
    field = body.get("field")
    shaped = openai_error_body(
        status, body["error"], param=field if isinstance(field, str) else None
    )
    return json.dumps(shaped).encode()


class OpenAIErrorShape:
    """Rewrite ``{"error", "field"}`` error answers on ``/v1`` paths into OpenAI's shape.

    Only JSON answers with a 4xx/5xx status are read (buffered, then sent rewritten);
    everything else, streams included, passes untouched.

    Args:
        app: The wrapped ASGI app (the whole stack, security middleware included).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass requests on; rewrite error bodies of ``/v1`` requests."""
        if scope["type"] != "http" or not is_openai_path(str(scope.get("path", ""))):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def shaped_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and _is_json_error(message):
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            payload = b"".join(chunks)
            payload = reshape(int(start["status"]), payload) or payload
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            headers.append((b"content-length", str(len(payload)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": payload})

        await self.app(scope, receive, shaped_send)


def _is_json_error(message: Message) -> bool:
    if int(message.get("status", 200)) < 400:
        return False
    for key, value in message.get("headers", []):
        if key.lower() == b"content-type":
            return bytes(value).lower().startswith(b"application/json")
    return False
