"""Error responses: one JSON shape (:class:`~kitty.service._schemas.ErrorResponse`), no tracebacks.

The split follows the project's error tree (:mod:`kitty.errors`): a
:class:`~kitty.errors.UserError` is answered with its own text and a 4xx (or 503 when the
service's own setup is at fault: fleet, checkpoint store); anything else is a bug and
gets a generic 500 with an error id that is also in the service log. Validation problems
of the request body name the field.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kitty.errors import (
    CheckpointError,
    FleetError,
    NothingToResume,
    PlanApprovalRequired,
    PlanError,
    SettingsError,
    SlotTimeoutError,
    UserError,
    new_error_id,
)

__all__ = [
    "RequestError",
    "describe_validation",
    "error_body",
    "install_error_handlers",
    "internal_error_body",
    "new_error_id",
    "user_error_response",
]

logger = logging.getLogger("kitty.service")

# Seconds a client is told to wait after a slot timeout (the fleet is saturated).
SLOT_TIMEOUT_RETRY_AFTER_S = 5

_REQUEST_PARTS = ("body", "query", "path", "header")


class RequestError(UserError):
    """A request the service refuses, with a status, a message and the field at fault.

    Attributes:
        status: HTTP status of the answer.
        message: What was wrong and what to do.
        field: The request part at fault (``query``, ``plan.tasks.0.max_tokens``...).
        headers: Extra response headers (``Retry-After`` on a 429).
    """

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def error_body(message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON body of an error response."""
    return {"error": message, "field": field, **{k: v for k, v in extra.items() if v}}


def user_error_response(exc: UserError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers answering a :class:`~kitty.errors.UserError`.

    Bad plans are 400, bad settings 422, a thread with nothing to resume or a plan
    waiting for a decision 409; the fleet or checkpoint store failing the run is the
    service's own setup, so 503. Any other user error is a 400 with its text.
    """
    if isinstance(exc, RequestError):
        return exc.status, error_body(exc.message, exc.field), exc.headers
    if isinstance(exc, PlanError):
        return 400, error_body(str(exc), "plan"), {}
    if isinstance(exc, FleetError):
        return 503, error_body(f"the service's fleet cannot serve this run: {exc}"), {}
    if isinstance(exc, SlotTimeoutError):
        headers = {"Retry-After": str(SLOT_TIMEOUT_RETRY_AFTER_S)}
        return 503, error_body(f"the service's fleet is saturated: {exc}"), headers
    if isinstance(exc, CheckpointError):
        return 503, error_body(f"the service's checkpoint store failed: {exc}"), {}
    if isinstance(exc, SettingsError):
        return 422, error_body(str(exc)), {}
    if isinstance(exc, NothingToResume | PlanApprovalRequired):
        return 409, error_body(str(exc)), {}
    return 400, error_body(str(exc)), {}


# The HTTP contract answers with the field apart from the message (``field``, ``details``),
# which a one-line ``format_validation_error`` cannot give; these two keep that shape.
def _field_of(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in _REQUEST_PARTS:
        parts = parts[1:]
    return ".".join(parts) or "body"


def _message_of(error: Mapping[str, Any]) -> str:
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")


def describe_validation(
    errors: list[dict[str, Any]], content_type: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Status and body for FastAPI validation errors (first problem first).

    Args:
        errors: ``RequestValidationError.errors()``.
        content_type: The request's ``Content-Type`` (a non-JSON one explains a body
            that is not an object).
    """
    first = errors[0]
    kind = str(first.get("type", ""))
    field = _field_of(first.get("loc", ()))
    details = [
        {
            "field": _field_of(e.get("loc", ())),
            "message": _message_of(e),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]
    if kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        loc = list(first.get("loc", ()))
        position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
        message = "request body is not valid JSON"
        if reason:
            message += f": {reason}"
        if position is not None:
            message += f" at character {position}"
        message += '; send a JSON object such as {"query": "..."}'
        details = [{"field": "body", "message": message, "type": kind}]
        return 400, error_body(message, "body", details=details)
    if field == "body" and kind == "missing":
        message = 'request body is missing; send a JSON object such as {"query": "..."}'
        return 422, error_body(message, "body", details=details)
    if field == "body" and "json" not in (content_type or "").lower():
        message = (
            "request body must be JSON sent with the header 'Content-Type: application/json' "
            f"(got {content_type or 'no Content-Type'})"
        )
        return 422, error_body(message, "body", details=details)
    if field == "body":
        message = 'request body must be a JSON object such as {"query": "..."}'
        return 422, error_body(message, "body", details=details)
    if kind == "extra_forbidden":
        message = f"unknown field {field!r}; remove it (see /docs for the request schema)"
        return 422, error_body(message, field, details=details)
    if kind == "missing":
        return 422, error_body(f"field {field!r} is required", field, details=details)
    return 422, error_body(f"field {field!r}: {details[0]['message']}", field, details=details)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    status, body = describe_validation(list(exc.errors()), request.headers.get("content-type"))
    return JSONResponse(body, status_code=status)


async def _user_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UserError)
    status, body, headers = user_error_response(exc)
    return JSONResponse(body, status_code=status, headers=headers or None)


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


def internal_error_body(error_id: str) -> dict[str, Any]:
    """The body of a 500: no exception text, only where to look."""
    return error_body(
        f"internal error; the service log has the details under error id {error_id}",
        error_id=error_id,
    )


def log_internal_error(error_id: str, what: str, exc: BaseException) -> None:
    """Log a bug with its traceback under ``error_id`` (the id the client was given)."""
    logger.error("error id %s: %s", error_id, what, exc_info=(type(exc), exc, exc.__traceback__))


async def _internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    error_id = new_error_id()
    log_internal_error(error_id, f"{request.method} {request.url.path} failed", exc)
    return JSONResponse(internal_error_body(error_id), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register every error handler on ``app``: validation, user errors, HTTP, the rest."""
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(UserError, _user_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(Exception, _internal_error_handler)
