"""The HTTP brain service: ``create_app(settings)`` builds the FastAPI application.

Routes: ``POST /api/query/parallel`` (the seed's contract), ``POST
/api/query/parallel/stream`` (server-sent progress events, then the result), ``GET
/api/endpoints`` (fleet probes + the service's slot limiters), ``GET /metrics``
(Prometheus, :mod:`kitty.service._metrics`), ``GET /healthz`` (liveness, no auth) and the
OpenAPI docs. Every request runs its own graph run; runs
share only the endpoint limiters.

The app is put together here from its parts: the routes (:mod:`kitty.service._routes`),
the error handlers (:mod:`kitty.service._errors`), the security middleware
(:mod:`kitty.service._security`) and the lifespan below (admission store, embedded fleet,
checkpointer, retention).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from endpoints import load_fleet
from endpoints.calls import process_tracing
from graph import Context
from kitty.service._admission import RunAdmission, run_leases_for
from kitty.service._background import BackgroundRuns, background_routes
from kitty.service._errors import RequestError, install_error_handlers
from kitty.service._metrics import MULTIPROC_ENV, ServiceMetrics, metrics_routes, service_tools
from kitty.service._openai import openai_routes
from kitty.service._openai_errors import OpenAIErrorShape
from kitty.service._openapi import install_openapi
from kitty.service._retention import start_retention
from kitty.service._routes import (
    HEALTH_PATH,
    Service,
    fleet_routes,
    health_routes,
    query_routes,
    query_spec,
)
from kitty.service._run_board import run_board_for
from kitty.service._runs import RunSpec
from kitty.service._schemas import QueryRequest
from kitty.service._security import (
    BearerTokenMiddleware,
    BodySizeLimitMiddleware,
    HostCheckMiddleware,
    is_loopback,
)
from kitty.service._settings import ServiceSettings
from kitty.telemetry import tracing_session

logger = logging.getLogger("kitty.service")

DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")

DESCRIPTION = """
Parallel multi-agent orchestration on a fleet of local model servers (llama.cpp, Ollama).

A query is planned as a DAG of tasks for specialist agents; every task runs as soon as its
own dependencies are done and a slot is free on its endpoint; the results are synthesized
into one answer plus an optional voice summary.

**Auth**: when the service was started with `KITTY_API_TOKEN` (or user tokens), every
route except `/healthz` needs `Authorization: Bearer <token>`, and this document says so;
without a token it declares no security.

**Errors** always have the shape `{"error": ..., "field": ...}`: 400 bad JSON, unusable
plan or a `Host` the service does not answer, 401 missing/wrong token, 413 body too large,
409 the request's `thread_id` is already running, 422 invalid field, 429 too many runs in
flight (see `Retry-After`), 503 fleet, checkpoint store or slot store cannot serve,
500 internal error (with an `error_id` found in the service log).
"""


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the service for ``settings`` (defaults: loopback, ``$KITTY_API_TOKEN``).

    The fleet file is loaded here, so a bad ``--fleet`` fails at once with a
    ``FleetError`` naming the fix.

    Args:
        settings: Service configuration.

    Returns:
        The FastAPI application (serve it with uvicorn, see :mod:`kitty.service._server`).
    """
    settings = settings or ServiceSettings()
    config = load_fleet(settings.fleet)
    metrics = ServiceMetrics(
        config,
        tools=service_tools(settings.context_overrides),
        multiprocess_dir=os.environ.get(MULTIPROC_ENV),
    )
    admission = RunAdmission(
        settings.max_concurrent_runs,
        settings.retry_after_s,
        leases=run_leases_for(config.coordination),
        service=settings.service_name or f"{settings.host}:{settings.port}",
        on_store_down=config.coordination.on_store_down,
        expected_processes=config.coordination.expected_processes,
        on_reject=metrics.admission_rejected,
    )
    service = Service.build(settings, config, admission, observers=(metrics,))
    background = BackgroundRuns(run_board_for(config.coordination))
    app = FastAPI(
        title="kitty-orchestrator brain service",
        summary="Run a goal as parallel agent tasks on a local model fleet.",
        description=DESCRIPTION,
        version=_package_version(),
        lifespan=_lifespan(service, background),
    )
    app.state.settings = settings
    app.state.fleet_config = config
    app.state.checkpointer = settings.checkpointer
    app.state.admission = admission
    install_error_handlers(app)
    _add_security_middleware(app, settings)
    app.add_middleware(OpenAIErrorShape)  # outermost: /v1 errors in OpenAI's shape
    app.include_router(query_routes(service))
    app.include_router(fleet_routes(service))
    app.include_router(health_routes())
    app.include_router(openai_routes(service))
    app.include_router(metrics_routes(metrics))
    app.include_router(background_routes(background))
    install_openapi(
        app,
        auth=bool(settings.api_token or settings.user_tokens),
        max_query_chars=settings.max_query_chars,
        max_images=Context.build(**settings.context_overrides).max_images,
    )
    return app


def _package_version() -> str:
    try:
        return version("kitty-orchestrator")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def _lifespan(
    service: Service, background: BackgroundRuns
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Startup and shutdown: admission store, embedded fleet, checkpointer, retention.

    The checkpointer entered here is put on ``app.state.checkpointer`` for the routes.
    """
    settings, config, admission = service.settings, service.config, service.admission

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # Spans exported while the service runs when OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT
            # is set (serve --otlp-endpoint sets it); flushed last, after the runs stopped.
            stack.enter_context(tracing_session(process_tracing(), os.environ))
            await admission.check()  # a store refusing us fails at start, not mid-run
            stack.callback(admission.close)
            if settings.start_embedded and config.embedded:
                from ops import ensure_embedded_fleet

                logger.info("making sure the embedded fleet %s is serving", config.name)
                await asyncio.to_thread(ensure_embedded_fleet, config)
            checkpointer = settings.checkpointer
            if checkpointer is None and settings.checkpointer_factory is not None:
                checkpointer = await stack.enter_async_context(settings.checkpointer_factory())
            app.state.checkpointer = checkpointer
            if settings.keep_days is not None and checkpointer is not None:
                await start_retention(
                    stack, checkpointer, settings.keep_days, settings.retention_interval_s
                )

            async def background_spec(body: QueryRequest) -> RunSpec:
                if checkpointer is None:
                    raise RequestError(
                        503,
                        "background runs need a service that saves checkpoints (a takeover "
                        "continues from them); start it with --checkpoint PATH|URL",
                    )
                return await query_spec(service, checkpointer, body)

            # Stopped first (pushed last): its runs stop while the checkpointer is open.
            await background.start(admission, background_spec)
            stack.push_async_callback(background.stop)
            logger.info(
                "kitty service ready: fleet %s, auth %s",
                config.name,
                "bearer token" if settings.api_token else "off",
            )
            yield

    return lifespan


def _add_security_middleware(app: FastAPI, settings: ServiceSettings) -> None:
    """Host check, bearer token and body size limit, in the order they must run.

    Starlette runs the middleware added last first. The Host and the token are checked
    before any body is read, so a client without the token cannot make the service buffer
    a body (security review finding 4); the size limit then guards the admitted ones.
    """
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.api_token or settings.user_tokens:
        public = {HEALTH_PATH, *(DOCS_PATHS if settings.public_docs else ())}
        app.add_middleware(
            BearerTokenMiddleware,
            token=settings.api_token,
            public_paths=public,
            user_tokens=settings.user_tokens,
        )
    if bool(settings.allowed_hosts) or is_loopback(settings.host):
        app.add_middleware(HostCheckMiddleware, allowed_hosts=settings.allowed_hosts)
