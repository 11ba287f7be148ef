"""Settings of the HTTP brain service: bind address, limits, auth, default run settings."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from graph import MAX_TASKS, Context
from kitty.errors import SettingsError, format_validation_error
from kitty.service._callers import (
    MIN_TOKEN_CHARS,
    USER_TOKENS_ENV_VAR,
    check_user,
    parse_user_tokens,
)

TOKEN_ENV_VAR = "KITTY_API_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# Room for the largest request: 4 images of 8 MB, base64-encoded (x4/3), plus the query.
DEFAULT_MAX_BODY_BYTES = 48 * 1024 * 1024
DEFAULT_MAX_QUERY_CHARS = 8_000
# Runs in flight at once before new ones get 429. Tasks beyond the fleet's slots already
# wait in the slot limiters; this bounds how many whole runs may pile up there.
DEFAULT_MAX_CONCURRENT_RUNS = 32
DEFAULT_RETRY_AFTER_S = 5
DEFAULT_RETENTION_INTERVAL_S = 3600.0
MAX_TASKS_LIMIT = MAX_TASKS
# The model id of the service's own fleet on the OpenAI-compatible door (``/v1/models``).
DEFAULT_MODEL_ID = "kitty-orchestrator"

# Context fields a request sets itself (or the service's fleet); not overridable per service.
_REQUEST_FIELDS = frozenset({"fleet", "max_tasks", "voice", "conversation"})
# Context fields the HTTP contract cannot serve (a run stopping for a plan decision).
_UNSUPPORTED_FIELDS = frozenset({"approve_plan"})
# A host name or IP, optionally ``*.``-prefixed, optionally with a port; or [IPv6]:port.
_HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9_.-]+(:\d+)?|\[[0-9a-f:.]+\](:\d+)?", re.IGNORECASE)
# A model id of the OpenAI-compatible door (``--model NAME=FLEET``).
_MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")


def _token_from_env() -> str | None:
    return (os.environ.get(TOKEN_ENV_VAR) or "").strip() or None


def _user_tokens_from_env() -> dict[str, str]:
    return parse_user_tokens(os.environ.get(USER_TOKENS_ENV_VAR, ""))


def context_field_names() -> list[str]:
    """Run settings (:class:`~graph.Context` fields) a service may preset."""
    excluded = _REQUEST_FIELDS | _UNSUPPORTED_FIELDS
    return [name for name in Context.setting_names() if name not in excluded]


def check_context_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Validate default run settings and coerce their types (``"32"`` -> ``32``).

    Raises:
        SettingsError: An unknown field, a field set by each request, or a bad value; the
            message names the field and what is allowed.
    """
    allowed = context_field_names()
    for key in overrides:
        if key in _REQUEST_FIELDS:
            raise SettingsError(
                f"run setting {key!r} is chosen per request or by --fleet; remove it from the "
                "service's default run settings"
            )
        if key in _UNSUPPORTED_FIELDS:
            raise SettingsError(
                f"run setting {key!r} is not available in the HTTP service (a run cannot "
                "stop and wait for a decision there); use the Python API or the CLI"
            )
        if key not in allowed:
            raise SettingsError(f"unknown run setting {key!r}; known: {', '.join(allowed)}")
    try:
        context = Context.model_validate(dict(overrides))
    except ValidationError as exc:
        raise SettingsError(
            f"invalid run setting: {format_validation_error(exc.errors())}"
        ) from None
    return {key: getattr(context, key) for key in overrides}


def parse_context_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn ``KEY=VALUE`` strings (``kitty-orch serve --set``) into validated run settings.

    ``none``/``null`` (any case) mean ``None``.

    Raises:
        SettingsError: A pair without ``=`` or an invalid setting.
    """
    raw: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SettingsError(
                f"run setting {pair!r} is not KEY=VALUE; e.g. --set synthesis_max_tokens=256"
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
            ``$KITTY_API_TOKEN``; ``None`` disables auth unless ``user_tokens`` are set).
            It is the operator's: its runs may name the ``user`` whose notes they use.
        user_tokens: User name -> token (default ``$KITTY_USER_TOKENS``,
            ``alice=TOKEN,bob=TOKEN``): each user's runs use that user's memory notes
            only (see :mod:`kitty.service._callers`).
        service_name: The name that services sharing one Redis count their run limit
            under (default: ``host:port``): give every host of one service the same name
            so ``max_concurrent_runs`` holds for them all.
        max_body_bytes: Largest request body accepted; bigger ones get 413.
        max_query_chars: Longest ``query`` accepted; longer ones get 422.
        public_docs: Serve ``/docs``, ``/redoc`` and ``/openapi.json`` without the token.
        start_embedded: On startup, start the embedded fleet when the fleet is embedded
            and nothing serves it yet.
        probe_timeout_s: Seconds per probe request of ``GET /api/endpoints``.
        context_overrides: Default run settings (:class:`~graph.Context` fields
            other than fleet/max_tasks/voice), e.g. ``{"synthesis_max_tokens": 256}``.
        checkpointer: LangGraph checkpointer passed to every run (``None``: no
            checkpointing).
        checkpointer_factory: Alternative to ``checkpointer``: a callable returning an
            async context manager that yields a checkpointer; entered at startup and
            exited at shutdown (e.g. ``lambda: AsyncSqliteSaver.from_conn_string(path)``).
        allowed_hosts: Host names (``kitty.lan``, ``*.example.org``, optional port
            ignored) accepted in the ``Host`` header besides the loopback names. The check
            is on when the service binds a loopback address (no token by default, so a
            DNS-rebinding page must not reach it) or when this list is not empty; a
            service bound beyond loopback without it accepts any host, as before.
        max_concurrent_runs: Runs in flight at once; more get 429 with ``Retry-After``.
            ``0``: no limit.
        retry_after_s: Seconds the 429 tells a client to wait.
        keep_days: Delete checkpoint threads whose last checkpoint is older than this
            many days, at startup and every ``retention_interval_s`` (``None``: keep all).
        retention_interval_s: Seconds between retention sweeps.
        models: Extra workflows of the OpenAI-compatible door: model id -> fleet profile
            name or path (``--model NAME=FLEET``). ``/v1/models`` lists
            ``kitty-orchestrator`` (the service's fleet) and these; each fleet is loaded
            when the app is built.
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
    allowed_hosts: list[str] = Field(default_factory=list)
    max_concurrent_runs: int = Field(default=DEFAULT_MAX_CONCURRENT_RUNS, ge=0)
    retry_after_s: int = Field(default=DEFAULT_RETRY_AFTER_S, ge=1)
    keep_days: float | None = Field(default=None, gt=0)
    retention_interval_s: float = Field(default=DEFAULT_RETENTION_INTERVAL_S, gt=0)
    models: dict[str, str] = Field(default_factory=dict)
    user_tokens: dict[str, str] = Field(default_factory=_user_tokens_from_env, repr=False)
    service_name: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _check_user_tokens(self) -> ServiceSettings:
        for user, token in self.user_tokens.items():
            check_user(user, "user_tokens: user")
            if len(token) < MIN_TOKEN_CHARS:
                raise ValueError(
                    f"the token of user {user!r} has {len(token)} characters; use at least "
                    f"{MIN_TOKEN_CHARS}"
                )
            if token == self.api_token:
                raise ValueError(
                    f"user {user!r} has the operator's token ({TOKEN_ENV_VAR}); give every "
                    "user a token of their own"
                )
        return self

    @field_validator("api_token")
    @classmethod
    def _blank_token_is_none(cls, value: str | None) -> str | None:
        return (value or "").strip() or None

    @field_validator("context_overrides")
    @classmethod
    def _check_overrides(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_context_overrides(value)

    @field_validator("models")
    @classmethod
    def _check_models(cls, value: dict[str, str]) -> dict[str, str]:
        for name, fleet in value.items():
            if not _MODEL_NAME_PATTERN.fullmatch(name) or name == DEFAULT_MODEL_ID:
                raise ValueError(
                    f"model name {name!r} is not usable: use 1-64 letters, digits and . _ : / -"
                    f", starting with a letter or digit, other than {DEFAULT_MODEL_ID} (the "
                    "service's own fleet)"
                )
            if not fleet.strip():
                raise ValueError(f"model {name!r} names no fleet; write NAME=FLEET")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        hosts = [h.strip().lower() for h in value if h.strip()]
        for host in hosts:
            if not _HOST_PATTERN.fullmatch(host):
                raise ValueError(
                    f"allowed host {host!r} is not a host name; give names such as "
                    "kitty.lan, 192.168.1.10 or *.example.org (no scheme, no path)"
                )
        return hosts
