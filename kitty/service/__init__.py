"""The HTTP brain service: FastAPI app, security middleware, uvicorn runner.

Example:
    >>> from service import ServiceSettings, create_app
    >>> app = create_app(ServiceSettings(fleet="embedded"))
"""

from kitty.service.app import create_app
from kitty.service.schemas import ErrorResponse, QueryRequest, QueryResponse
from kitty.service.settings import TOKEN_ENV_VAR, ServiceSettings

__all__ = [
    "TOKEN_ENV_VAR",
    "ErrorResponse",
    "QueryRequest",
    "QueryResponse",
    "ServiceSettings",
    "create_app",
]
