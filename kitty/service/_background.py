"""Background runs that outlive the worker, and the host, that started them.

``POST /api/runs`` records the run on the :mod:`board <kitty.service._run_board>` and
answers ``202`` with its thread id at once. Every worker of the service runs a
:class:`BackgroundRunner` that looks at the open runs about twice a second and takes one
by *admitting* it: the admission's thread lease (one holder per thread, in the shared
Redis, renewed by a heartbeat) is the run's ownership, and its run place keeps the
service's run limit. So:

- a run is executed by one worker at a time (a second admission of the thread is 409);
- when that worker dies (kill -9, a lost host), its leases expire within the lease TTL
  and another worker's next look admits the thread and continues it from its checkpoint:
  LangGraph's durable checkpoints plus the completion registry mean no finished task
  runs again;
- when the run limit is reached, a run stays ``queued`` until a place frees, across
  every worker and takeover alike;
- a worker that shuts down cleanly gives its leases back at once, so another one takes
  its runs over on its next look.

A run that keeps killing the workers that take it is not retried for ever: after
``MAX_ATTEMPTS`` takeovers it is marked failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from graph import PhaseStarted, PlanApproval, PlanReady, RunFinished, TaskFinished
from kitty.errors import UserError
from kitty.service._admission import AdmissionTicket, RunAdmission
from kitty.service._callers import caller_of, memory_user
from kitty.service._errors import RequestError, log_internal_error, new_error_id
from kitty.service._openapi import event_stream
from kitty.service._routes import _AUTH as AUTH
from kitty.service._routes import _ERRORS as ERRORS
from kitty.service._routes import PROGRESS_EVENTS
from kitty.service._run_board import ENDED, RunBoard, StoredRun, ThreadState
from kitty.service._runs import RunSpec, run_events
from kitty.service._schemas import ErrorResponse, QueryRequest, QueryResponse

logger = logging.getLogger("kitty.service")

# Seconds between two looks at the open runs.
POLL_S = 0.5
# Workers that may start a run before it is marked failed (each start after the first is a
# takeover from a worker that died).
MAX_ATTEMPTS = 3
# Seconds without an event before a stream reader re-reads the record (a run that ended
# while the reader's subscription was being set up, or a worker that died quietly).
STREAM_RECHECK_S = 5.0

SpecBuilder = Callable[[QueryRequest], Awaitable[RunSpec]]


def worker_name() -> str:
    """This worker, as the records name it: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


class BackgroundRunner:
    """Takes open runs off the board, one admission each, and executes them.

    Args:
        board: Where runs are recorded.
        admission: The service's admission (thread leases = run ownership, run limit).
        build_spec: Turns a stored request into the run's arguments (the same checks as a
            query; images are loaded again, so a takeover needs no files of the first worker).
        worker: This worker's name on the records.
        poll_s: Seconds between looks at the open runs.
    """

    def __init__(
        self,
        board: RunBoard,
        admission: RunAdmission,
        build_spec: SpecBuilder,
        *,
        worker: str | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        self.board = board
        self.admission = admission
        self.build_spec = build_spec
        self.worker = worker or worker_name()
        self.poll_s = poll_s
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        """Start looking at the board (on the running loop)."""
        self._loop_task = asyncio.create_task(self._look_forever(), name="kitty-background-runs")

    def wake(self) -> None:
        """Look at the board now (a run was just submitted here)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop looking and stop this worker's runs.

        Their leases are given back at once, so another worker continues them.
        """
        tasks = [t for t in [self._loop_task, *self._running.values()] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _look_forever(self) -> None:
        while True:
            try:
                await self.look_once()
            except Exception:  # the board's store was unreachable: look again later
                logger.warning("background runs: could not read the run board", exc_info=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            self._wake.clear()

    async def look_once(self) -> None:
        """Take every open run that no live worker holds and that the run limit admits."""
        for thread_id in await self.board.open_threads():
            if thread_id in self._running:
                continue
            try:
                ticket = await self.admission.admit(thread_id, quiet=True)
            except RequestError:  # held by a live worker (409), the limit (429), store (503)
                continue
            self._running[thread_id] = asyncio.create_task(
                self._execute(thread_id, ticket), name=f"kitty-run-{thread_id}"
            )

    async def _execute(self, thread_id: str, ticket: AdmissionTicket) -> None:
        try:
            stored = await self.board.load(thread_id)
            if stored is None or stored.state.state in ENDED:
                return  # ended between the look and the admission
            await self._run(stored)
        finally:
            self._running.pop(thread_id, None)
            await ticket.release()

    async def _run(self, stored: StoredRun) -> None:
        state = stored.state
        if state.attempts >= MAX_ATTEMPTS:
            await self._end(
                stored,
                "failed",
                error=f"the run was started by {state.attempts} workers and none finished "
                "it (each stopped without a word: killed, out of memory?); it is not "
                "started again. Look at the workers' logs, then submit it again",
            )
            return
        state.state, state.worker, state.attempts = "running", self.worker, state.attempts + 1
        state.started_at = state.started_at or time.time()
        await self.board.save(stored)
        await self._publish(state.thread_id, "state", state.model_dump_json())
        try:
            spec = await self.build_spec(stored.request)
            spec.kwargs["thread_id"] = state.thread_id
            async with contextlib.aclosing(run_events(spec)) as events:
                async for event in events:
                    await self._observe(stored, event)
        except asyncio.CancelledError:
            logger.info(
                "run %s stopped with this worker; another one continues it", state.thread_id
            )
            raise
        except UserError as exc:
            await self._end(stored, "failed", error=str(exc))
        except Exception as exc:
            error_id = new_error_id()
            log_internal_error(error_id, f"background run {state.thread_id} failed", exc)
            await self._end(stored, "failed", error=f"internal error (error_id {error_id})")

    async def _observe(self, stored: StoredRun, event: Any) -> None:
        state = stored.state
        if isinstance(event, RunFinished):
            result = QueryResponse.from_result(event.result)
            await self._end(stored, "done", result=result)
            return
        if isinstance(event, PlanApproval):
            await self._end(stored, "interrupted")
            return
        changed = True
        if isinstance(event, PlanReady):
            state.tasks_total, state.phase = len(event.plan.tasks), "tasks"
        elif isinstance(event, PhaseStarted):
            state.phase = event.phase
        elif isinstance(event, TaskFinished):
            state.tasks = [t for t in state.tasks if t.task_id != event.result.task_id]
            state.tasks.append(event.result)
            state.tasks_done = len(state.tasks)
        else:
            changed = False
        if changed:
            await self.board.save(stored)
        kind = getattr(event, "kind", None)
        if kind is not None:
            await self._publish(state.thread_id, str(kind), event.model_dump_json())

    async def _end(
        self,
        stored: StoredRun,
        outcome: str,
        *,
        error: str | None = None,
        result: QueryResponse | None = None,
    ) -> None:
        state = stored.state
        state.state = outcome  # type: ignore[assignment]  # one of ENDED, by the callers
        state.finished_at, state.error, state.result = time.time(), error, result
        if result is not None:
            state.tasks_total, state.tasks_done = len(result.tasks), len(result.tasks)
            state.tasks = list(result.tasks)
        await self.board.save(stored)
        if result is not None:
            await self._publish(state.thread_id, "result", result.model_dump_json())
        await self._publish(state.thread_id, "state", state.model_dump_json())

    async def _publish(self, thread_id: str, event: str, data: str) -> None:
        try:
            await self.board.publish(thread_id, event, data)
        except Exception:  # a reader misses a live event; the record has the truth
            logger.warning("could not publish %s of run %s", event, thread_id, exc_info=True)


def new_run(request: QueryRequest) -> StoredRun:
    """A queued run for ``request`` on its thread (a new thread id when it names none)."""
    thread_id = request.thread_id or uuid.uuid4().hex
    return StoredRun(
        request=request.model_copy(update={"thread_id": thread_id}),
        state=ThreadState(thread_id=thread_id, state="queued", submitted_at=time.time()),
    )


async def stream_thread(board: RunBoard, thread_id: str) -> AsyncIterator[ServerSentEvent]:
    """The run's state now, then its live events until it ends.

    Events: ``state`` (the :class:`ThreadState`, first and whenever the state changes),
    the progress events of the query stream (``plan_ready``, ``task_started``,
    ``task_finished``...) and, when done, ``result``. The stream ends once the run ended.
    """
    async with board.events(thread_id) as events:
        stored = await board.load(thread_id)
        if stored is None:
            return
        yield ServerSentEvent(event="state", data=stored.state.model_dump_json())
        if stored.state.result is not None:
            yield ServerSentEvent(event="result", data=stored.state.result.model_dump_json())
        ended = stored.state.state in ENDED
        while not ended:
            item = await events.next(STREAM_RECHECK_S)
            if item is None:  # quiet: maybe it ended before we subscribed
                stored = await board.load(thread_id)
                if stored is None or stored.state.state in ENDED:
                    if stored is not None:
                        yield ServerSentEvent(event="state", data=stored.state.model_dump_json())
                    return
                continue
            event, data = item
            yield ServerSentEvent(event=event, data=data)
            if event == "state":
                ended = json.loads(data).get("state") in ENDED


@dataclass
class BackgroundRuns:
    """A service's background runs: the board, and this worker's runner once started.

    Attributes:
        board: Where runs are recorded.
        check: The query's checks (length, plan, goal size, images) and the run's
            arguments; ``None`` until the service started (its checkpointer is open).
        runner: This worker's runner, ``None`` until the service started.
    """

    board: RunBoard
    check: SpecBuilder | None = None
    runner: BackgroundRunner | None = None

    async def start(self, admission: RunAdmission, check: SpecBuilder) -> None:
        """Start this worker's runner (from the service's lifespan)."""
        self.check = check
        self.runner = BackgroundRunner(self.board, admission, check)
        self.runner.start()

    async def stop(self) -> None:
        """Stop the runner (its runs continue on other workers) and close the board."""
        if self.runner is not None:
            await self.runner.stop()
        await self.board.close()


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No background run on that thread."}
}


def background_routes(background: BackgroundRuns) -> APIRouter:
    """``POST /api/runs``, ``GET /api/threads/{id}`` and ``GET /api/threads/{id}/stream``."""
    router = APIRouter(tags=["background runs"])

    @router.post(
        "/api/runs",
        status_code=202,
        response_model=ThreadState,
        responses=ERRORS,
        dependencies=AUTH,
        summary="Submit a run that executes in the background and survives its worker",
    )
    async def submit_run(body: QueryRequest, request: Request, response: Response) -> ThreadState:
        """Submit a run: ``202`` with its thread id at once; it runs on some worker.

        Same body as ``POST /api/query/parallel``. Follow it with ``GET
        /api/threads/{thread_id}`` (state, progress, result) or ``.../stream`` (live
        events). If the worker executing it dies, another worker of the service (any host
        sharing its Redis and checkpoint store) continues it within the lease TTL plus a
        second, without running its finished tasks again. A thread whose run has not
        ended gets 409.
        """
        if background.check is None or background.runner is None:
            raise RequestError(503, "the service is still starting; retry in a second")
        # The caller's user is fixed now: the worker that runs it trusts the stored request.
        body = body.model_copy(update={"user": memory_user(caller_of(request), body.user)})
        await background.check(body)
        stored = new_run(body)
        if not await background.board.submit(stored):
            raise RequestError(
                409,
                f"thread {stored.state.thread_id!r} already has a run that has not ended; "
                "follow it with GET /api/threads/{id}, or submit on another thread",
                "thread_id",
            )
        background.runner.wake()
        response.headers["Location"] = f"/api/threads/{stored.state.thread_id}"
        return stored.state

    @router.get(
        "/api/threads/{thread_id}",
        response_model=ThreadState,
        responses={**_NOT_FOUND, 401: ERRORS[401]},
        dependencies=AUTH,
        summary="A background run's state, progress and, when done, its result",
    )
    async def thread_state(thread_id: str) -> ThreadState:
        """State (queued, running, interrupted, done, failed), progress and result."""
        stored = await background.board.load(thread_id)
        if stored is None:
            raise RequestError(404, _unknown(thread_id), "thread_id")
        return stored.state

    @router.get(
        "/api/threads/{thread_id}/stream",
        response_class=EventSourceResponse,
        responses={
            200: event_stream(
                "Server-sent events: `state`, then the run's progress events and, when "
                "done, `result`; ends when the run ends.",
                {"state": ThreadState, **PROGRESS_EVENTS, "result": QueryResponse},
            ),
            **_NOT_FOUND,
            401: ERRORS[401],
        },
        dependencies=AUTH,
        summary="Stream a background run's events from now on",
    )
    async def thread_stream(thread_id: str) -> EventSourceResponse:
        """The run's state, then its events from now on, until it ends.

        Closing the stream does not stop the run (it belongs to no connection).
        """
        if await background.board.load(thread_id) is None:
            raise RequestError(404, _unknown(thread_id), "thread_id")
        return EventSourceResponse(stream_thread(background.board, thread_id), ping=15)

    return router


def _unknown(thread_id: str) -> str:
    return (
        f"no background run on thread {thread_id!r} (submitted with POST /api/runs); "
        "check the id, or it ended more than 7 days ago"
    )
