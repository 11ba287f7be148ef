"""The HTTP brain service (``kitty-orch serve``): FastAPI app, security middleware, uvicorn runner.

- :func:`create_app` builds the app for :class:`ServiceSettings`; :func:`make_server` and
  :func:`serve` run it under uvicorn (:func:`check_workers` checks a multi-worker setup).
- The HTTP contract: :class:`QueryRequest`, :class:`QueryResponse`, :class:`ErrorResponse`.
- Settings helpers: :func:`parse_context_pairs` (``--set NAME=VALUE`` items),
  :func:`exposure_warning`, and the defaults (``DEFAULT_*``, :data:`TOKEN_ENV_VAR`).

Example:
    >>> from kitty.service import ServiceSettings, create_app
    >>> app = create_app(ServiceSettings(fleet="embedded"))
"""

from kitty.service._app import create_app
from kitty.service._schemas import ErrorResponse, QueryRequest, QueryResponse
from kitty.service._security import exposure_warning
from kitty.service._server import check_workers, make_server, serve
from kitty.service._settings import (
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENT_RUNS,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_PORT,
    TOKEN_ENV_VAR,
    ServiceSettings,
    parse_context_pairs,
)

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONCURRENT_RUNS",
    "DEFAULT_MAX_QUERY_CHARS",
    "DEFAULT_PORT",
    "TOKEN_ENV_VAR",
    "ErrorResponse",
    "QueryRequest",
    "QueryResponse",
    "ServiceSettings",
    "check_workers",
    "create_app",
    "exposure_warning",
    "make_server",
    "parse_context_pairs",
    "serve",
]
