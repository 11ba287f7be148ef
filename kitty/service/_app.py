"""The HTTP brain service: ``create_app(settings)`` builds the FastAPI application.

Routes: ``POST /api/query/parallel`` (the seed's contract), ``POST
/api/query/parallel/stream`` (server-sent progress events, then the result), ``GET
/api/endpoints`` (fleet probes + the service's slot limiters), ``GET /healthz``
(liveness, no auth) and the OpenAPI docs. Every request runs its own graph run; runs
share only the endpoint limiters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, Request, Response, Security
from fastapi.security import HTTPBearer
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from endpoints.clients.probes import probe_all
from endpoints.config import FleetConfig, load_fleet
from endpoints.fleet import get_runtime
from graph import check_goal_fits
from kitty.errors import PlanError
from kitty.service._admission import AdmissionTicket, RunAdmission, run_leases_for
from kitty.service._errors import RequestError, install_error_handlers
from kitty.service._retention import start_retention
from kitty.service._runs import (
    RunSpec,
    build_resume,
    build_run,
    load_request_images,
    run_unless_disconnected,
    stream_events,
)
from kitty.service._schemas import (
    EndpointInfo,
    EndpointsResponse,
    ErrorResponse,
    HealthResponse,
    LimiterInfo,
    QueryRequest,
    QueryResponse,
)
from kitty.service._security import (
    BearerTokenMiddleware,
    BodySizeLimitMiddleware,
    HostCheckMiddleware,
    is_loopback,
)
from kitty.service._settings import ServiceSettings

logger = logging.getLogger("kitty.service")

HEALTH_PATH = "/healthz"
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")

DESCRIPTION = """
Parallel multi-agent orchestration on a fleet of local model servers (llama.cpp, Ollama).

A query is planned as a DAG of tasks for specialist agents; every task runs as soon as its
own dependencies are done and a slot is free on its endpoint; the results are synthesized
into one answer plus an optional voice summary.

**Auth**: when the service was started with `KITTY_API_TOKEN`, every route except
`/healthz` needs `Authorization: Bearer <token>`.

**Errors** always have the shape `{"error": ..., "field": ...}`: 400 bad JSON, unusable
plan or a `Host` the service does not answer, 401 missing/wrong token, 413 body too large,
409 the request's `thread_id` is already running, 422 invalid field, 429 too many runs in
flight (see `Retry-After`), 503 fleet, checkpoint store or slot store cannot serve,
500 internal error (with an `error_id` found in the service log).
"""

_bearer = HTTPBearer(
    auto_error=False,
    description="The service's KITTY_API_TOKEN (only when the service was started with one).",
)
_AUTH = [Security(_bearer)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "Invalid JSON, an unusable plan, or a Host header not served.",
    },
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
    409: {
        "model": ErrorResponse,
        "description": "The request's thread_id is already running (in any worker).",
    },
    413: {"model": ErrorResponse, "description": "Request body over the size limit."},
    422: {"model": ErrorResponse, "description": "A field is missing or invalid."},
    429: {
        "model": ErrorResponse,
        "description": "Too many runs in flight; retry after the Retry-After seconds.",
    },
    500: {"model": ErrorResponse, "description": "Internal error (see error_id in the log)."},
    503: {
        "model": ErrorResponse,
        "description": "The fleet or the checkpoint store cannot serve the run.",
    },
}

_STREAM_DOC = """Server-sent events, one per progress step:

`phase_started`, `plan_ready`, `task_waiting`, `task_queued`, `task_started`,
`task_fallback`, `task_finished` (event name = the event's `kind`; data = the event as
JSON, always with `run_id`), then a final `result` event whose data is the same body as
`POST /api/query/parallel` returns, or an `error` event (`{"error", "field", "status"}`).
Closing the connection cancels the run and frees its slots."""


def _package_version() -> str:
    try:
        return version("kitty-orchestrator")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def _fleet_key(config: FleetConfig, settings: ServiceSettings) -> str:
    return config.source or settings.fleet or config.name


class _AdmittedStream(EventSourceResponse):
    """An event stream that gives its run's admission back however the stream ends.

    Released around the whole response (not in the generator's ``finally``): a client
    that leaves before the first event means the generator never starts, so its
    ``finally`` would never run.
    """

    def __init__(self, *args: Any, ticket: AdmissionTicket, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._ticket.release()


def _checks_host(settings: ServiceSettings) -> bool:
    return bool(settings.allowed_hosts) or is_loopback(settings.host)


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
    fleet = _fleet_key(config, settings)
    largest_ctx = max(endpoint.ctx for endpoint in config.all_endpoints())
    admission = RunAdmission(
        settings.max_concurrent_runs,
        settings.retry_after_s,
        leases=run_leases_for(config.coordination),
        service=f"{settings.host}:{settings.port}",
        on_store_down=config.coordination.on_store_down,
        expected_processes=config.coordination.expected_processes,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await admission.check()  # a store refusing us fails at start, not mid-run
            stack.callback(admission.close)
            if settings.start_embedded and config.embedded:
                from ops.embedded import ensure_embedded_fleet

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
            logger.info(
                "kitty service ready: fleet %s, auth %s",
                config.name,
                "bearer token" if settings.api_token else "off",
            )
            yield

    app = FastAPI(
        title="kitty-orchestrator brain service",
        summary="Run a goal as parallel agent tasks on a local model fleet.",
        description=DESCRIPTION,
        version=_package_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.fleet_config = config
    app.state.checkpointer = settings.checkpointer
    app.state.admission = admission
    install_error_handlers(app)

    if settings.api_token:
        public = {HEALTH_PATH, *(DOCS_PATHS if settings.public_docs else ())}
        app.add_middleware(BearerTokenMiddleware, token=settings.api_token, public_paths=public)
    if _checks_host(settings):
        app.add_middleware(HostCheckMiddleware, allowed_hosts=settings.allowed_hosts)
    # Added last, so it runs first: oversized bodies are refused before anything else.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)

    async def _spec(request: Request, body: QueryRequest) -> Any:
        spec = build_run(
            body,
            fleet=fleet,
            max_query_chars=settings.max_query_chars,
            context_overrides=settings.context_overrides,
            checkpointer=request.app.state.checkpointer,
            max_task_tokens=largest_ctx,
        )
        try:  # in tokens of the fleet's smallest context, before any work starts
            await check_goal_fits(body.query, get_runtime(fleet))
        except PlanError as exc:
            raise RequestError(422, f"field 'query': {exc}", "query") from None
        spec.kwargs["images"] = await load_request_images(body.images, spec, config.fetch)
        return spec

    @app.post(
        "/api/query/parallel",
        response_model=QueryResponse,
        responses=_ERRORS,
        dependencies=_AUTH,
        tags=["query"],
        summary="Run a goal as parallel agent tasks and return the answer",
    )
    async def query_parallel(request: Request, body: QueryRequest) -> Any:
        """Run a goal as parallel agent tasks and return the answer.

        Plans the query (or takes the given plan), runs every task as soon as its
        dependencies are done, synthesizes one answer and, with ``voice_mode``, a short
        voice summary. Task failures do not fail the request: they are in ``tasks`` and
        named in ``response``. Disconnecting cancels the run. Beyond the service's
        ``--max-concurrent-runs`` the answer is 429 with ``Retry-After``. With a
        ``thread_id`` (and a checkpointing service) the run continues that thread's
        unfinished work; a thread already running gets 409.
        """
        spec = await _spec(request, body)
        return await _run_admitted(request, spec, await admission.admit())

    async def _run_admitted(request: Request, spec: RunSpec, ticket: AdmissionTicket) -> Any:
        try:
            result = await run_unless_disconnected(request, spec)
        finally:
            await ticket.release()
        if result is None:
            logger.info("client disconnected; run cancelled")
            return Response(status_code=499)
        logger.info(
            "run %s: %d tasks in %.2fs", result.run_id, len(result.tasks), result.metrics.wall_s
        )
        return QueryResponse.from_result(result)

    @app.post(
        "/api/query/parallel/stream",
        responses={
            200: {
                "description": _STREAM_DOC,
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_ERRORS,
        },
        response_class=EventSourceResponse,
        dependencies=_AUTH,
        tags=["query"],
        summary="Run a goal and stream its progress as server-sent events",
    )
    async def query_parallel_stream(request: Request, body: QueryRequest) -> EventSourceResponse:
        """Run a goal and stream its progress as server-sent events.

        Same run as ``POST /api/query/parallel``, streamed: progress events, then
        ``result``. Request errors (bad plan, too long query, too many runs in flight)
        are plain 4xx responses before the stream starts.
        """
        spec = await _spec(request, body)
        ticket = await admission.admit()
        return _AdmittedStream(stream_events(spec), ping=15, ticket=ticket)

    @app.post(
        "/api/threads/{thread_id}/resume",
        response_model=QueryResponse,
        responses=_ERRORS,
        dependencies=_AUTH,
        tags=["query"],
        summary="Continue a checkpointed run's unfinished work",
    )
    async def resume_thread(request: Request, thread_id: str) -> Any:
        """Continue the unfinished work of a checkpoint thread and return the answer.

        Tasks that finished are not run again; the thread's saved settings are used. Needs
        a service started with ``--checkpoint``. A thread already running, in this or any
        other worker sharing the slot store, gets 409; one with nothing left to do, 409
        too. Counts against ``--max-concurrent-runs`` like a new run.
        """
        spec = build_resume(
            thread_id,
            fleet=fleet,
            context_overrides=settings.context_overrides,
            checkpointer=request.app.state.checkpointer,
        )
        return await _run_admitted(request, spec, await admission.admit(thread_id))

    @app.get(
        "/api/endpoints",
        response_model=EndpointsResponse,
        responses={401: _ERRORS[401], 500: _ERRORS[500]},
        dependencies=_AUTH,
        tags=["fleet"],
        summary="Probe every endpoint of the service's fleet",
    )
    async def list_endpoints() -> EndpointsResponse:
        """Probe every endpoint of the service's fleet.

        Health, busy/total slots, context per slot, model and probe latency of every
        server, plus this service's limiter for it (slots in use, tasks queued) and,
        with a shared slot store, the leases and waiters of every process using it.
        """
        runtime = get_runtime(config)
        limiters = runtime.limiters()
        tiers = config.tiers_by_endpoint()
        endpoints = config.all_endpoints()
        statuses = await probe_all(endpoints, timeout=settings.probe_timeout_s)
        # Fresh fleet-wide figures: the limiters only see them when this process asks.
        shared = await runtime.lease_counts()
        infos = []
        for endpoint, status in zip(endpoints, statuses, strict=True):
            limiter = limiters.get(endpoint.name)
            stats = limiter.stats() if limiter is not None else None
            leases, store_queued = shared.get(endpoint.name, (None, None))
            infos.append(
                EndpointInfo(
                    name=endpoint.name,
                    tiers=tiers.get(endpoint.name, []),
                    kind=endpoint.kind,
                    base_url=endpoint.base_url,
                    health=status.health,
                    detail=status.detail,
                    busy_slots=status.busy_slots,
                    total_slots=status.total_slots or endpoint.slots,
                    n_ctx=status.n_ctx or endpoint.ctx,
                    model=status.model or endpoint.model,
                    latency_ms=status.latency_ms,
                    limiter=None
                    if stats is None
                    else LimiterInfo(
                        capacity=stats.capacity,
                        in_use=stats.in_use,
                        queued=stats.queued,
                        peak_in_use=stats.peak_in_use,
                        acquired=stats.acquired,
                        store=stats.store,
                        leases=stats.leases if leases is None else leases,
                        store_queued=stats.store_queued if store_queued is None else store_queued,
                    ),
                )
            )
        return EndpointsResponse(
            fleet=config.name,
            healthy=all(s.healthy for s in statuses),
            endpoints=infos,
        )

    @app.get(
        HEALTH_PATH,
        response_model=HealthResponse,
        tags=["service"],
        summary="Liveness (no auth, does not probe the fleet)",
    )
    async def healthz() -> HealthResponse:
        """Answers as long as the service process serves requests."""
        return HealthResponse()

    return app
