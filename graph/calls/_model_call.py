"""One model call, done right: prompt per endpoint, slot, timeout, busy retry, fallback.

Every model call of the graph (planner, agent tasks, synthesizer, summarizer) goes
through :func:`call_model`. It walks the endpoint candidates of a tier chain (primary
tier first, least-loaded healthy replica first); for each it builds the messages for
*that* endpoint (budgets differ: a fallback may have a smaller context), holds a slot of
the endpoint's limiter for the duration of the request, and never raises for endpoint
trouble: the outcome says what happened, with one :class:`~graph.schemas.ModelCall`
record per request.

A timeout is "slow", not "down": a quick health probe decides. A slow server is not
benched (the next candidate is tried, no cooldown), and our slot is released only once
the server has stopped the abandoned request, so the next task does not queue behind it
inside llama.cpp. Connection errors and 5xx answers are "down" and count towards the
endpoint's cooldown.

Slots are granted by the run's ``slot_order`` (see :class:`~endpoints.slots._limiter.SlotLimiter`):
priority with least attained service across runs (the run is the call's ``kitty_run_id``),
or FIFO. On llama.cpp a call goes to a free slot that last served its system prompt and
names it with ``id_slot`` (:mod:`endpoints.fleet._affinity`); the prompt tokens the server
took from its cache are recorded per request.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from endpoints.clients import ainvoke_chat, is_busy_error, is_endpoint_failure, probes
from endpoints.clients import llamacpp as engine
from endpoints.config import EndpointConfig
from endpoints.fleet import EndpointHandle, FleetRuntime, affinity_applies, pin_slot, prefix_key
from endpoints.slots import LEASE_LOST, SlotOrder, SlotTimeoutError
from graph.calls._budget import PromptTooLong
from graph.calls._responses import answer_text, cached_prompt_tokens, reasoning_of
from graph.schemas import CallStatus, ModelCall

logger = logging.getLogger("kitty.graph")

BUSY_BACKOFF_S = 0.5
# Times one call goes back to the queue after its shared slot lease was lost mid-call.
MAX_LEASE_REQUEUES = 3
# After a timeout: poll /slots this long at most for the server to drop the request.
SERVER_STOP_WAIT_S = 2.0
SERVER_STOP_POLL_S = 0.05

MessageBuilder = Callable[[EndpointConfig], Awaitable[Sequence[BaseMessage]]]
ModelBuilder = Callable[[EndpointConfig], BaseChatModel | Runnable[Any, Any]]


class CallObserver(Protocol):
    """Hooks for progress events around a model call."""

    def queued(self, handle: EndpointHandle) -> None:
        """Waiting for a slot on ``handle``."""

    def started(self, handle: EndpointHandle, slot: int, fallback: bool) -> None:
        """Holding ``slot`` on ``handle``; the request is under way."""

    def finished(self, handle: EndpointHandle, call: ModelCall) -> None:
        """A request on ``handle`` ended (answered, failed or cancelled)."""

    def fell_back(self, handle: EndpointHandle, error: str, next_handle: EndpointHandle) -> None:
        """``handle`` failed with ``error``; ``next_handle`` is tried next."""


class _NoObserver:
    def queued(self, handle: EndpointHandle) -> None:
        pass

    def started(self, handle: EndpointHandle, slot: int, fallback: bool) -> None:
        pass

    def finished(self, handle: EndpointHandle, call: ModelCall) -> None:
        pass

    def fell_back(self, handle: EndpointHandle, error: str, next_handle: EndpointHandle) -> None:
        pass


@dataclass
class CallOutcome:
    """What a model call produced, successful or not.

    ``latency_s`` sums the requests of :attr:`calls`; each record says which endpoint
    spent how long. ``prepare_s`` is the time spent building prompts (token counts),
    ``queued_s`` the time spent waiting for slots.
    """

    ok: bool
    text: str = ""
    reasoning: str | None = None
    error: str | None = None
    endpoint: str | None = None
    tier: str | None = None
    slot: int | None = None
    model: str | None = None
    fallback_used: bool = False
    attempts: list[str] = field(default_factory=list)
    calls: list[ModelCall] = field(default_factory=list)
    prepare_s: float = 0.0
    queued_s: float = 0.0
    latency_s: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    finish_reason: str | None = None
    message: BaseMessage | None = None

    @property
    def truncated(self) -> bool:
        """True when the answer stopped at the completion cap."""
        return self.finish_reason == "length"


def is_timeout(exc: BaseException) -> bool:
    """True for a request that ran out of time (ours, the client's or the socket's)."""
    return isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower()


def describe_error(exc: BaseException, endpoint: EndpointConfig) -> str:
    """One line saying what went wrong with a call to ``endpoint``, and what to do."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    if is_timeout(exc):
        return f"{endpoint.name}: no answer within the timeout ({name})"
    if is_busy_error(exc):
        return f"{endpoint.name}: server busy (queue full): {text or name}"
    if is_endpoint_failure(exc):
        if "connect" in name.lower() or "connection" in text.lower():
            return f"{endpoint.name}: cannot connect to {endpoint.base_url} (server down?)"
        return f"{endpoint.name}: server error: {text or name}"
    return f"{endpoint.name}: request rejected: {text or name}"


def _run_of(config: RunnableConfig | None) -> str | None:
    """The run a call belongs to: its ``kitty_run_id`` metadata (task calls carry it)."""
    run = ((config or {}).get("metadata") or {}).get("kitty_run_id")
    return run if isinstance(run, str) and run else None


def slot_order_of_run() -> SlotOrder:
    """The current graph run's ``slot_order`` setting (``priority`` outside a run)."""
    from langgraph.runtime import get_runtime

    try:
        context = get_runtime().context
    except (RuntimeError, KeyError, AttributeError):
        return "priority"
    order = context.get("slot_order") if isinstance(context, dict) else None
    order = getattr(context, "slot_order", order)
    return "fifo" if order == "fifo" else "priority"


async def _invoke_with_busy_retry(
    model: BaseChatModel | Runnable[Any, Any],
    messages: Sequence[BaseMessage],
    config: RunnableConfig | None,
    timeout_s: float,
    busy_retries: int,
) -> BaseMessage:
    attempt = 0
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                return await ainvoke_chat(model, messages, config)
        except Exception as exc:
            if attempt < busy_retries and is_busy_error(exc):
                await asyncio.sleep(BUSY_BACKOFF_S * 2**attempt)
                attempt += 1
                continue
            raise


async def _classify(
    exc: Exception, endpoint: EndpointConfig
) -> tuple[CallStatus, str, probes.QuickHealth | None]:
    """Status and error line of a failed request (and the server's health after a timeout).

    A timeout is "slow" unless a quick health check finds the server down.
    """
    error = describe_error(exc, endpoint)
    if is_timeout(exc):
        health = await probes.quick_health(endpoint)
        if health == "down":
            return "down", f"{error}; the server no longer answers (down?)", health
        return (
            "slow",
            f"{error}; the server is alive, so it is slow, not down: raise task_timeout_s "
            "or lower max_tokens",
            health,
        )
    if is_busy_error(exc):
        return "busy", error, None
    if is_endpoint_failure(exc):
        return "down", error, None
    return "rejected", error, None


async def _await_server_stop(handle: EndpointHandle) -> None:
    """Hold our slot until the server has stopped the request we abandoned (bounded).

    llama.cpp stops a slot when it notices the client went away; until then a request
    given our slot would queue behind the dead one inside the server. Done when
    ``/slots`` shows no more busy slots than our other holders, or fewer than at first.
    """
    deadline = time.monotonic() + SERVER_STOP_WAIT_S
    first: int | None = None
    while True:
        busy = await engine.busy_slots(handle.config)
        if busy is None:
            return  # no /slots (Ollama, --no-slots): nothing to watch
        others = handle.limiter.stats().in_use - 1
        if busy <= others or (first is not None and busy < first):
            return
        first = busy if first is None else first
        if time.monotonic() >= deadline:
            logger.info(
                "endpoint %s still busy %.0fs after a timeout", handle.name, SERVER_STOP_WAIT_S
            )
            return
        await asyncio.sleep(SERVER_STOP_POLL_S)


async def _messages_for(
    messages: Sequence[BaseMessage] | MessageBuilder, endpoint: EndpointConfig
) -> Sequence[BaseMessage]:
    if callable(messages):
        built = messages(endpoint)
        return await built if inspect.isawaitable(built) else built
    return messages


def _end_call(
    outcome: CallOutcome,
    observer: CallObserver,
    handle: EndpointHandle,
    call: ModelCall,
    started: float,
    status: CallStatus,
    error: str | None = None,
) -> float:
    call.latency_s = time.perf_counter() - started
    call.status, call.error = status, error
    outcome.calls.append(call)
    outcome.latency_s += call.latency_s
    observer.finished(handle, call)
    return call.latency_s


async def call_model(
    runtime: FleetRuntime,
    tiers: list[str],
    messages: Sequence[BaseMessage] | MessageBuilder,
    build_model: ModelBuilder,
    *,
    observer: CallObserver | None = None,
    config: RunnableConfig | None = None,
    slot_timeout_s: float | None = 600.0,
    call_timeout_s: float | None = None,
    busy_retries: int = 3,
    priority: float = 0.0,
    run_key: str | None = None,
    slot_order: SlotOrder | None = None,
) -> CallOutcome:
    """Run one chat call on the first endpoint of ``tiers`` that answers.

    Args:
        runtime: The fleet's live routing state.
        tiers: Tier chain, primary first (e.g. an agent's primary and fallback tier).
        messages: Chat messages to send, or an async ``endpoint -> messages`` builder
            called for each endpoint tried (budgets for that endpoint's context). A
            builder raising :class:`~graph.calls._budget.PromptTooLong` skips the endpoint.
        build_model: Makes the chat model for a chosen endpoint.
        observer: Progress hooks (queued, started, finished, fell back).
        config: LangChain run config (tags/metadata show up in the ``messages`` stream).
        slot_timeout_s: Most seconds to wait for a slot on one endpoint.
        call_timeout_s: Most seconds one request may take (default: endpoint timeout).
        busy_retries: Retries with backoff on "server busy" before moving on.
        priority: Slot priority: a higher one is granted first (a task's later tool
            rounds go ahead of tasks that have not started).
        run_key: The run whose attained service orders this call among other runs'
            (default: ``config`` metadata ``kitty_run_id``; none: no fairness term).
        slot_order: ``priority`` or ``fifo`` (default: the graph run's ``slot_order``
            setting, ``priority`` outside a run).

    Returns:
        The outcome; ``ok`` is False when every candidate failed or the request was
        rejected (a 4xx is not retried elsewhere: another server would refuse it too).
    """
    observer = observer or _NoObserver()
    outcome = CallOutcome(ok=False)
    run_key = run_key or _run_of(config)
    slot_order = slot_order or slot_order_of_run()
    candidates = runtime.candidates(tiers)
    if not candidates:
        outcome.error = f"no endpoint serves tiers {tiers}"
        return outcome
    # Awaited before ranking: a task that yields between ranking the replicas and queueing
    # on one would rank on loads that the tasks started beside it have changed since.
    affinity = {h.config.name: await affinity_applies(h.config, h.limiter) for h in candidates}
    if len(candidates) > 1:
        candidates = runtime.candidates(tiers)

    def move_on(index: int, error: str) -> None:
        outcome.error = error
        if index + 1 < len(candidates):
            observer.fell_back(candidates[index], error, candidates[index + 1])

    requeues = 0
    # A call whose shared lease was lost is tried again on the same endpoint: the list
    # grows while it is walked.
    candidates = list(candidates)
    for index, handle in enumerate(candidates):
        endpoint = handle.config
        fallback = handle.tier != tiers[0]
        outcome.attempts.append(endpoint.name)
        outcome.endpoint, outcome.tier = endpoint.name, handle.tier
        preparing = time.perf_counter()
        try:
            prompt = await _messages_for(messages, endpoint)
        except PromptTooLong as exc:
            outcome.prepare_s += time.perf_counter() - preparing
            move_on(index, f"{endpoint.name}: {exc}")
            continue
        outcome.prepare_s += time.perf_counter() - preparing
        affine = affinity.get(endpoint.name, False)
        observer.queued(handle)
        queued_at = time.perf_counter()
        try:
            slot = await handle.limiter.acquire(
                slot_timeout_s,
                priority=priority,
                run=run_key,
                prefer=prefix_key(prompt) if affine else None,
                order=slot_order,
            )
        except SlotTimeoutError as exc:
            outcome.queued_s += time.perf_counter() - queued_at
            move_on(index, str(exc))
            continue
        outcome.queued_s += time.perf_counter() - queued_at
        outcome.slot = slot
        started = time.perf_counter()
        call = ModelCall(endpoint=endpoint.name, slot=slot, started_at=time.time())
        outcome.started_at = outcome.started_at or call.started_at
        try:
            observer.started(handle, slot, fallback)
            model = build_model(endpoint)
            if affine:  # our slot number is the server's: keep the prefix's KV cache
                model = pin_slot(model, slot)
            response = await _invoke_with_busy_retry(
                model,
                prompt,
                config,
                # llama.cpp calls stream, so the client's read timeout only catches
                # stalls; this bounds the whole call.
                call_timeout_s or endpoint.timeout_s,
                busy_retries,
            )
        except asyncio.CancelledError:
            if not handle.limiter.was_lost(slot) or requeues >= MAX_LEASE_REQUEUES:
                _end_call(outcome, observer, handle, call, started, "cancelled", "cancelled")
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # our own stop, not the caller's cancellation
            _end_call(outcome, observer, handle, call, started, "requeued", LEASE_LOST)
            requeues += 1
            candidates.insert(index + 1, handle)
            continue
        except Exception as exc:
            status, error, health = await _classify(exc, endpoint)
            _end_call(outcome, observer, handle, call, started, status, error)
            if status == "rejected":
                outcome.error = error
                outcome.finished_at = time.time()
                return outcome
            if status == "slow":
                runtime.record_slow(handle)
                if health == "up":  # a hung server would not answer /slots either
                    await _await_server_stop(handle)
            else:
                runtime.record_failure(handle)
            move_on(index, error)
            continue
        finally:
            handle.limiter.release(slot)
        call.cached_prompt_tokens = cached_prompt_tokens(response)
        runtime.record_success(handle, _end_call(outcome, observer, handle, call, started, "ok"))
        usage: dict[str, Any] = dict(getattr(response, "usage_metadata", None) or {})
        metadata = getattr(response, "response_metadata", None) or {}
        outcome.ok = True
        outcome.error = None
        outcome.message = response
        outcome.text = answer_text(response)
        outcome.reasoning = reasoning_of(response)
        outcome.model = metadata.get("model_name") or metadata.get("model") or endpoint.model
        outcome.finish_reason = metadata.get("finish_reason") or metadata.get("done_reason")
        outcome.fallback_used = fallback
        outcome.prompt_tokens = int(usage.get("input_tokens") or 0)
        outcome.completion_tokens = int(usage.get("output_tokens") or 0)
        outcome.cached_prompt_tokens = call.cached_prompt_tokens
        outcome.finished_at = time.time()
        return outcome
    outcome.finished_at = time.time()
    if len(candidates) > 1:
        outcome.error = f"all endpoints failed (tried {', '.join(outcome.attempts)}); last: " + (
            outcome.error or "unknown error"
        )
    return outcome
