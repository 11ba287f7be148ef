"""The service's routes: queries (plain and streamed), thread resumes, fleet probes, liveness.

Each group is an :class:`~fastapi.APIRouter` built over one :class:`Service`: what every
route of one app shares (its settings, fleet and run admission), passed in explicitly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response, Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from endpoints import FleetConfig, get_runtime, probe_all
from graph import (
    AnswerDelta,
    PhaseStarted,
    PlanApproval,
    PlanReady,
    TaskFallback,
    TaskFinished,
    TaskQueued,
    TaskStarted,
    TaskToolCall,
    TaskWaiting,
    check_goal_fits,
)
from kitty.errors import PlanError
from kitty.service._admission import AdmissionTicket, RunAdmission
from kitty.service._callers import OPERATOR, Caller, caller_of, memory_user
from kitty.service._errors import RequestError
from kitty.service._openapi import event_stream
from kitty.service._runs import (
    RunObserver,
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
    StreamError,
)
from kitty.service._settings import ServiceSettings

logger = logging.getLogger("kitty.service")

HEALTH_PATH = "/healthz"

# Seconds one event may take to reach a stream's client. A client that stops reading is
# dropped after this, so it cannot hold a run place (and its run's slots) for ever.
SEND_TIMEOUT_S = 30.0

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
    403: {
        "model": ErrorResponse,
        "description": "A user token naming another user (field 'user').",
    },
    409: {
        "model": ErrorResponse,
        "description": "The request's thread_id is already running (in any worker).",
    },
    413: {
        "model": ErrorResponse,
        "description": "Request body over the size limit, or an image over image_max_bytes.",
    },
    415: {"model": ErrorResponse, "description": "An image that is not an image by content."},
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
`task_fallback`, `task_tool_call`, `task_finished`, `answer_delta` (event name = the event's
`kind`; data = the event as JSON, always with `run_id`), `plan_approval` when the run waits
for its plan to be approved, then a final `result` event whose data is the same body as
`POST /api/query/parallel` returns, or an `error` event (`{"error", "field", "status"}`).
Each event's data schema is in the event's `contentSchema`. Closing the connection cancels
the run and frees its slots."""


# The progress events of a run, by SSE event name (= the event's kind).
PROGRESS_EVENTS: dict[str, type[BaseModel]] = {
    "phase_started": PhaseStarted,
    "plan_ready": PlanReady,
    "task_waiting": TaskWaiting,
    "task_queued": TaskQueued,
    "task_started": TaskStarted,
    "task_fallback": TaskFallback,
    "task_tool_call": TaskToolCall,
    "task_finished": TaskFinished,
    "answer_delta": AnswerDelta,
}
_STREAM_EVENTS: dict[str, type[BaseModel]] = {
    **PROGRESS_EVENTS,
    "plan_approval": PlanApproval,
    "result": QueryResponse,
    "error": StreamError,
}


@dataclass(frozen=True)
class Service:
    """What the routes of one app share.

    Attributes:
        settings: The service's settings.
        config: Its fleet, loaded once at startup.
        fleet: The key runs name the fleet by (its file, or the profile name).
        largest_ctx: The fleet's largest context: the most ``max_tokens`` a given plan's
            task may ask for.
        admission: Admission of runs (the concurrent-run cap and running threads).
        observers: Who sees every run's events (metrics, traces).
    """

    settings: ServiceSettings
    config: FleetConfig
    fleet: str
    largest_ctx: int
    admission: RunAdmission
    observers: tuple[RunObserver, ...] = ()

    @classmethod
    def build(
        cls,
        settings: ServiceSettings,
        config: FleetConfig,
        admission: RunAdmission,
        observers: tuple[RunObserver, ...] = (),
    ) -> Service:
        """The shared part of an app for ``settings`` on the loaded fleet ``config``."""
        return cls(
            settings=settings,
            config=config,
            fleet=config.source or settings.fleet or config.name,
            largest_ctx=max(endpoint.ctx for endpoint in config.all_endpoints()),
            admission=admission,
            observers=observers,
        )


class _AdmittedStream(EventSourceResponse):
    """An event stream that gives its run's admission back however the stream ends.

    Released around the whole response (not in the generator's ``finally``): a client
    that leaves before the first event means the generator never starts, so its
    ``finally`` would never run.
    """

    def __init__(self, *args: Any, ticket: AdmissionTicket, **kwargs: Any) -> None:
        kwargs.setdefault("send_timeout", SEND_TIMEOUT_S)
        super().__init__(*args, **kwargs)
        self._ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._ticket.release()


async def query_spec(
    service: Service,
    checkpointer: Any | None,
    body: QueryRequest,
    caller: Caller = OPERATOR,
    *,
    images: bool = True,
) -> RunSpec:
    """A query's run, checked before it is admitted: length, plan, goal size, images.

    The run's memory notes are the caller's (see :mod:`kitty.service._callers`). With
    ``images=False`` the images are left for :func:`admitted_images`, after admission: an
    image is fetched and decoded only for a run that will run.

    Raises:
        RequestError: The request cannot run as asked (the status and field say why).
    """
    settings = service.settings
    user = memory_user(caller, body.user)
    spec = build_run(
        body,
        fleet=service.fleet,
        max_query_chars=settings.max_query_chars,
        context_overrides=settings.context_overrides,
        checkpointer=checkpointer,
        max_task_tokens=service.largest_ctx,
    )
    spec.observers = service.observers
    if user is not None:
        spec.kwargs["user_id"] = user
    try:  # in tokens of the fleet's smallest context, before any work starts
        await check_goal_fits(body.query, get_runtime(service.fleet))
    except PlanError as exc:
        raise RequestError(422, f"field 'query': {exc}", "query") from None
    if images:
        spec.kwargs["images"] = await load_request_images(body.images, spec, service.config.fetch)
    return spec


async def admitted_images(
    service: Service, spec: RunSpec, body: QueryRequest, ticket: AdmissionTicket
) -> None:
    """Load the request's images into ``spec`` once admitted; a refusal frees the place."""
    try:
        spec.kwargs["images"] = await load_request_images(body.images, spec, service.config.fetch)
    except BaseException:
        await ticket.release()
        raise


async def _query_spec(service: Service, request: Request, body: QueryRequest) -> RunSpec:
    """:func:`query_spec` with the checkpointer the request's app opened."""
    return await query_spec(service, request.app.state.checkpointer, body, caller_of(request))


async def _run_admitted(request: Request, spec: RunSpec, ticket: AdmissionTicket) -> Any:
    """Run to the end under ``ticket``: the response body, or 499 when the client left."""
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


def query_routes(service: Service) -> APIRouter:
    """``POST /api/query/parallel`` (+ ``/stream``) and ``POST /api/threads/{id}/resume``."""
    router = APIRouter(tags=["query"])

    @router.post(
        "/api/query/parallel",
        response_model=QueryResponse,
        responses=_ERRORS,
        dependencies=_AUTH,
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
        checkpointer = request.app.state.checkpointer
        spec = await query_spec(service, checkpointer, body, caller_of(request), images=False)
        ticket = await service.admission.admit(body.thread_id)
        await admitted_images(service, spec, body, ticket)
        return await _run_admitted(request, spec, ticket)

    @router.post(
        "/api/query/parallel/stream",
        responses={200: event_stream(_STREAM_DOC, _STREAM_EVENTS), **_ERRORS},
        response_class=EventSourceResponse,
        dependencies=_AUTH,
        summary="Run a goal and stream its progress as server-sent events",
    )
    async def query_parallel_stream(request: Request, body: QueryRequest) -> EventSourceResponse:
        """Run a goal and stream its progress as server-sent events.

        Same run as ``POST /api/query/parallel``, streamed: progress events, then
        ``result``. Request errors (bad plan, too long query, too many runs in flight)
        are plain 4xx responses before the stream starts.
        """
        checkpointer = request.app.state.checkpointer
        spec = await query_spec(service, checkpointer, body, caller_of(request), images=False)
        ticket = await service.admission.admit(body.thread_id)
        await admitted_images(service, spec, body, ticket)
        return _AdmittedStream(stream_events(spec), ping=15, ticket=ticket)

    @router.post(
        "/api/threads/{thread_id}/resume",
        response_model=QueryResponse,
        responses=_ERRORS,
        dependencies=_AUTH,
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
            fleet=service.fleet,
            context_overrides=service.settings.context_overrides,
            checkpointer=request.app.state.checkpointer,
        )
        spec.observers = service.observers
        return await _run_admitted(request, spec, await service.admission.admit(thread_id))

    return router


def fleet_routes(service: Service) -> APIRouter:
    """``GET /api/endpoints``: probes of the fleet beside the service's own limiters."""
    router = APIRouter(tags=["fleet"])

    @router.get(
        "/api/endpoints",
        response_model=EndpointsResponse,
        responses={401: _ERRORS[401], 500: _ERRORS[500]},
        dependencies=_AUTH,
        summary="Probe every endpoint of the service's fleet",
    )
    async def list_endpoints() -> EndpointsResponse:
        """Probe every endpoint of the service's fleet.

        Health, busy/total slots, context per slot, model and probe latency of every
        server, plus this service's limiter for it (slots in use, tasks queued) and,
        with a shared slot store, the leases and waiters of every process using it.
        """
        return await _endpoints_report(service)

    return router


async def _endpoints_report(service: Service) -> EndpointsResponse:
    config = service.config
    runtime = get_runtime(config)
    limiters = runtime.limiters()
    tiers = config.tiers_by_endpoint()
    endpoints = config.all_endpoints()
    statuses = await probe_all(endpoints, timeout=service.settings.probe_timeout_s)
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


def health_routes() -> APIRouter:
    """``GET /healthz``: liveness, without auth and without probing the fleet."""
    router = APIRouter(tags=["service"])

    @router.get(
        HEALTH_PATH,
        response_model=HealthResponse,
        summary="Liveness (no auth, does not probe the fleet)",
    )
    async def healthz() -> HealthResponse:
        """Answers as long as the service process serves requests."""
        return HealthResponse()

    return router
