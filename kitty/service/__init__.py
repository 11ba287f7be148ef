"""The HTTP brain service: FastAPI app, security middleware, uvicorn runner.

Example:
    >>> from service import ServiceSettings, create_app
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
