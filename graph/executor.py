"""One model call, done right: slot, timeout, busy retry, fallback chain, usage.

Every model call of the graph (planner, agent tasks, synthesizer, summarizer) goes
through :func:`call_model`. It walks the endpoint candidates of a tier chain (primary
tier first, least-loaded healthy replica first), holds a slot of the endpoint's limiter
for the duration of the request, and never raises for endpoint trouble: the outcome
says what happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig

from endpoints.config import EndpointConfig
from endpoints.limiter import SlotTimeoutError
from endpoints.models import is_busy_error, is_endpoint_failure
from endpoints.pool import EndpointHandle, FleetRuntime

BUSY_BACKOFF_S = 0.5


class CallObserver(Protocol):
    """Hooks for progress events around a model call."""

    def queued(self, handle: EndpointHandle) -> None:
        """Waiting for a slot on ``handle``."""

    def started(self, handle: EndpointHandle, slot: int, fallback: bool) -> None:
        """Holding ``slot`` on ``handle``; the request is under way."""

    def fell_back(self, handle: EndpointHandle, error: str, next_handle: EndpointHandle) -> None:
        """``handle`` failed with ``error``; ``next_handle`` is tried next."""


class _NoObserver:
    def queued(self, handle: EndpointHandle) -> None:
        pass

    def started(self, handle: EndpointHandle, slot: int, fallback: bool) -> None:
        pass

    def fell_back(self, handle: EndpointHandle, error: str, next_handle: EndpointHandle) -> None:
        pass


@dataclass
class CallOutcome:
    """What a model call produced, successful or not."""

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
    queued_s: float = 0.0
    latency_s: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def describe_error(exc: BaseException, endpoint: EndpointConfig) -> str:
    """One line saying what went wrong with a call to ``endpoint``, and what to do."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    if isinstance(exc, TimeoutError) or "timeout" in name.lower():
        return f"{endpoint.name}: no answer within the timeout ({name})"
    if is_busy_error(exc):
        return f"{endpoint.name}: server busy (queue full): {text or name}"
    if is_endpoint_failure(exc):
        if "connect" in name.lower() or "connection" in text.lower():
            return f"{endpoint.name}: cannot connect to {endpoint.base_url} (server down?)"
        return f"{endpoint.name}: server error: {text or name}"
    return f"{endpoint.name}: request rejected: {text or name}"


def _text_of(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = [
        p.get("text", "") if isinstance(p, dict) else str(p)
        for p in content
        if not isinstance(p, dict) or p.get("type") in (None, "text")
    ]
    return "".join(parts)


def _reasoning_of(message: BaseMessage) -> str | None:
    extra = message.additional_kwargs or {}
    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
    return reasoning if isinstance(reasoning, str) and reasoning.strip() else None


async def _invoke_with_busy_retry(
    model: BaseChatModel,
    messages: Sequence[BaseMessage],
    config: RunnableConfig | None,
    timeout_s: float,
    busy_retries: int,
) -> BaseMessage:
    attempt = 0
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                return await model.ainvoke(list(messages), config=config)
        except Exception as exc:
            if attempt < busy_retries and is_busy_error(exc):
                await asyncio.sleep(BUSY_BACKOFF_S * 2**attempt)
                attempt += 1
                continue
            raise


async def call_model(
    runtime: FleetRuntime,
    tiers: list[str],
    messages: Sequence[BaseMessage],
    build_model: Callable[[EndpointConfig], BaseChatModel],
    *,
    observer: CallObserver | None = None,
    config: RunnableConfig | None = None,
    slot_timeout_s: float | None = 600.0,
    call_timeout_s: float | None = None,
    busy_retries: int = 3,
) -> CallOutcome:
    """Run one chat call on the first endpoint of ``tiers`` that answers.

    Args:
        runtime: The fleet's live routing state.
        tiers: Tier chain, primary first (e.g. an agent's primary and fallback tier).
        messages: Chat messages to send.
        build_model: Makes the chat model for a chosen endpoint.
        observer: Progress hooks (queued, started, fell back).
        config: LangChain run config (tags/metadata show up in the ``messages`` stream).
        slot_timeout_s: Most seconds to wait for a slot on one endpoint.
        call_timeout_s: Most seconds one request may take (default: endpoint timeout).
        busy_retries: Retries with backoff on "server busy" before moving on.

    Returns:
        The outcome; ``ok`` is False when every candidate failed or the request was
        rejected (a 4xx is not retried elsewhere: another server would refuse it too).
    """
    observer = observer or _NoObserver()
    outcome = CallOutcome(ok=False)
    candidates = runtime.candidates(tiers)
    if not candidates:
        outcome.error = f"no endpoint serves tiers {tiers}"
        return outcome
    for index, handle in enumerate(candidates):
        endpoint = handle.config
        fallback = handle.tier != tiers[0]
        outcome.attempts.append(endpoint.name)
        outcome.endpoint, outcome.tier = endpoint.name, handle.tier
        observer.queued(handle)
        queued_at = time.perf_counter()
        try:
            slot = await handle.limiter.acquire(slot_timeout_s)
        except SlotTimeoutError as exc:
            outcome.queued_s += time.perf_counter() - queued_at
            outcome.error = str(exc)
            if index + 1 < len(candidates):
                observer.fell_back(handle, outcome.error, candidates[index + 1])
            continue
        outcome.queued_s += time.perf_counter() - queued_at
        outcome.slot = slot
        started = time.perf_counter()
        outcome.started_at = outcome.started_at or time.time()
        try:
            observer.started(handle, slot, fallback)
            model = build_model(endpoint)
            response = await _invoke_with_busy_retry(
                model,
                messages,
                config,
                # llama.cpp calls stream, so the client's read timeout only catches
                # stalls; this bounds the whole call.
                call_timeout_s or endpoint.timeout_s,
                busy_retries,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outcome.latency_s += time.perf_counter() - started
            outcome.error = describe_error(exc, endpoint)
            if not (is_endpoint_failure(exc) or is_busy_error(exc)):
                outcome.finished_at = time.time()
                return outcome
            runtime.record_failure(handle)
            if index + 1 < len(candidates):
                observer.fell_back(handle, outcome.error, candidates[index + 1])
            continue
        finally:
            handle.limiter.release(slot)
        elapsed = time.perf_counter() - started
        runtime.record_success(handle, elapsed)
        usage: dict[str, Any] = dict(getattr(response, "usage_metadata", None) or {})
        metadata = getattr(response, "response_metadata", None) or {}
        outcome.ok = True
        outcome.error = None
        outcome.text = _text_of(response)
        outcome.reasoning = _reasoning_of(response)
        outcome.model = metadata.get("model_name") or metadata.get("model") or endpoint.model
        outcome.fallback_used = fallback
        outcome.latency_s += elapsed
        outcome.prompt_tokens = int(usage.get("input_tokens") or 0)
        outcome.completion_tokens = int(usage.get("output_tokens") or 0)
        outcome.finished_at = time.time()
        return outcome
    outcome.finished_at = time.time()
    if len(candidates) > 1:
        outcome.error = f"all endpoints failed (tried {', '.join(outcome.attempts)}); last: " + (
            outcome.error or "unknown error"
        )
    return outcome
