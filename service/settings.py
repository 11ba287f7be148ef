"""Settings of the HTTP brain service: bind address, limits, auth, default run settings."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from graph.context import Context

TOKEN_ENV_VAR = "KITTY_API_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_MAX_QUERY_CHARS = 8_000
MAX_TASKS_LIMIT = 20

# Context fields a request sets itself (or the service's fleet); not overridable per service.
_REQUEST_FIELDS = frozenset({"fleet", "max_tasks", "voice"})
# Context fields the HTTP contract cannot serve (a run stopping for a plan decision).
_UNSUPPORTED_FIELDS = frozenset({"approve_plan"})
_context_adapter: TypeAdapter[Context] = TypeAdapter(Context)


def _token_from_env() -> str | None:
    return (os.environ.get(TOKEN_ENV_VAR) or "").strip() or None


def context_field_names() -> list[str]:
    """Run settings (:class:`~graph.context.Context` fields) a service may preset."""
    excluded = _REQUEST_FIELDS | _UNSUPPORTED_FIELDS
    return [f.name for f in dataclasses.fields(Context) if f.name not in excluded]


def check_context_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Validate default run settings and coerce their types (``"32"`` -> ``32``).

    Raises:
        ValueError: An unknown field, a field set by each request, or a bad value; the
            message names the field and what is allowed.
    """
    allowed = context_field_names()
    for key in overrides:
        if key in _REQUEST_FIELDS:
            raise ValueError(
                f"run setting {key!r} is chosen per request or by --fleet; remove it from the "
                "service's default run settings"
            )
        if key in _UNSUPPORTED_FIELDS:
            raise ValueError(
                f"run setting {key!r} is not available in the HTTP service (a run cannot "
                "stop and wait for a decision there); use the Python API or the CLI"
            )
        if key not in allowed:
            raise ValueError(f"unknown run setting {key!r}; known: {', '.join(allowed)}")
    try:
        context = _context_adapter.validate_python(dict(overrides))
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise ValueError(f"run setting {field!r}: {error['msg']}") from None
    return {key: getattr(context, key) for key in overrides}


def parse_context_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn ``KEY=VALUE`` strings (CLI ``--context``) into validated run settings.

    ``none``/``null`` (any case) mean ``None``.

    Raises:
        ValueError: A pair without ``=`` or an invalid setting.
    """
    raw: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"run setting {pair!r} is not KEY=VALUE; e.g. --context synthesis_max_tokens=256"
            )
        raw[key.strip()] = None if value.strip().lower() in {"none", "null"} else value.strip()
    return check_context_overrides(raw)


class ServiceSettings(BaseModel):
    """Configuration of one service instance.

    Attributes:
        host: Interface to bind; loopback by default. Any other address logs a loud
            warning when no API token is set.
        port: TCP port.
        fleet: Fleet profile name or path every run uses (``None``: ``$KITTY_FLEET`` or
            ``embedded``).
        api_token: Bearer token required on every route but ``/healthz`` (default
            ``$KITTY_API_TOKEN``; ``None`` disables auth).
        max_body_bytes: Largest request body accepted; bigger ones get 413.
        max_query_chars: Longest ``query`` accepted; longer ones get 422.
        public_docs: Serve ``/docs``, ``/redoc`` and ``/openapi.json`` without the token.
        start_embedded: On startup, start the embedded fleet when the fleet is embedded
            and nothing serves it yet.
        probe_timeout_s: Seconds per probe request of ``GET /api/endpoints``.
        context_overrides: Default run settings (:class:`~graph.context.Context` fields
            other than fleet/max_tasks/voice), e.g. ``{"synthesis_max_tokens": 256}``.
        checkpointer: LangGraph checkpointer passed to every run (``None``: no
            checkpointing).
        checkpointer_factory: Alternative to ``checkpointer``: a callable returning an
            async context manager that yields a checkpointer; entered at startup and
            exited at shutdown (e.g. ``lambda: AsyncSqliteSaver.from_conn_string(path)``).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    host: str = DEFAULT_HOST
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    fleet: str | None = None
    api_token: str | None = Field(default_factory=_token_from_env, repr=False)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)
    max_query_chars: int = Field(default=DEFAULT_MAX_QUERY_CHARS, ge=1)
    public_docs: bool = False
    start_embedded: bool = True
    probe_timeout_s: float = Field(default=2.0, gt=0)
    context_overrides: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    checkpointer: Any | None = None
    checkpointer_factory: Callable[[], AbstractAsyncContextManager[Any]] | None = None

    @field_validator("api_token")
    @classmethod
    def _blank_token_is_none(cls, value: str | None) -> str | None:
        return (value or "").strip() or None

    @field_validator("context_overrides")
    @classmethod
    def _check_overrides(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_context_overrides(value)
