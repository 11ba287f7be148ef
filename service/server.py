"""Serve the app with uvicorn, loopback first, loud when exposed without a token."""

from __future__ import annotations

import logging

import uvicorn

from service.app import create_app
from service.security import exposure_warning, is_loopback
from service.settings import ServiceSettings

logger = logging.getLogger("kitty.service")


def make_server(settings: ServiceSettings, *, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for the service (not started; call ``run()`` or ``serve()``).

    Logs a loud warning when binding beyond loopback without an API token.
    """
    warning = exposure_warning(settings.host, settings.api_token)
    if warning:
        logger.warning(warning)
    elif not is_loopback(settings.host):
        logger.info("serving on %s; every route but /healthz needs the bearer token", settings.host)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def serve(settings: ServiceSettings, *, log_level: str = "info") -> None:
    """Run the service until interrupted (blocks)."""
    make_server(settings, log_level=log_level).run()
