"""Error responses: one JSON shape (:class:`~service.schemas.ErrorResponse`), no tracebacks.

Validation problems name the field; bad plans are 400, fleet problems 503, anything
unexpected a generic 500 with an error id that is also in the service log.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from endpoints.config import FleetError
from graph.plan_validation import PlanError

logger = logging.getLogger("kitty.service")


class RequestError(Exception):
    """A request the service refuses, with a status, a message and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def error_body(message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON body of an error response."""
    return {"error": message, "field": field, **{k: v for k, v in extra.items() if v}}


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


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
            "message": str(e.get("msg", "")).removeprefix("Value error, "),
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
    msg = str(first.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    return 422, error_body(f"field {field!r}: {msg}", field, details=details)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    status, body = describe_validation(list(exc.errors()), request.headers.get("content-type"))
    return JSONResponse(body, status_code=status)


async def _request_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    return JSONResponse(error_body(exc.message, exc.field), status_code=exc.status)


async def _plan_error_handler(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(error_body(str(exc), "plan"), status_code=400)


async def _fleet_error_handler(request: Request, exc: Exception) -> JSONResponse:
    message = f"the service's fleet cannot serve this run: {exc}"
    return JSONResponse(error_body(message), status_code=503)


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


def new_error_id() -> str:
    """A short id tying a 500 response to its log record."""
    return uuid.uuid4().hex[:12]


def internal_error_body(error_id: str) -> dict[str, Any]:
    """The body of a 500: no exception text, only where to look."""
    return error_body(
        f"internal error; the service log has the details under error id {error_id}",
        error_id=error_id,
    )


async def _internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    error_id = new_error_id()
    logger.error(
        "error id %s: %s %s failed",
        error_id,
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return JSONResponse(internal_error_body(error_id), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register every error handler on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(RequestError, _request_error_handler)
    app.add_exception_handler(PlanError, _plan_error_handler)
    app.add_exception_handler(FleetError, _fleet_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(Exception, _internal_error_handler)
