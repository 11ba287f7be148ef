"""What a Redis error means for the slot store: unreachable (wait or degrade) or refused.

Unreachable (connection refused, timeout, a reset socket) may heal: the store waits for
Redis or degrades, as its policy says. Refused (wrong password, no such database) will
not: retrying cannot help, so the store fails every waiter with a message naming the fix.
"""

from __future__ import annotations

from redis import exceptions as redis_errors

UNREACHABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    OSError,
)
"""Errors of a Redis that does not answer (now)."""

STORE_ERRORS: tuple[type[BaseException], ...] = (*UNREACHABLE, redis_errors.ResponseError)
"""Every error a store command can raise because of Redis itself."""


def fatal_problem(exc: BaseException) -> str | None:
    """What is wrong when Redis answers but refuses us (retrying will not help)."""
    text = str(exc)
    if isinstance(exc, redis_errors.AuthenticationError) or "NOAUTH" in text:
        first = text.splitlines()[0] if text else type(exc).__name__
        return f"Redis refused the credentials ({first}); put the right password in the URL"
    if isinstance(exc, redis_errors.ResponseError) and "DB index" in text:
        return f"Redis has no such database ({text}); use a db the server has (0-15 by default)"
    return None
