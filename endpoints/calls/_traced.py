"""Traced: a ``chat`` span around each request to one endpoint (OpenTelemetry, GenAI conventions).

It sits inside the slot limit, so a span is a request that held a slot: the endpoint, the
slot, the time queued for it, the server's address, the model asked for and the one that
answered, token usage. A failed request's span carries its class (``slow``, ``down``,
``busy``, ``rejected``, ``cancelled``) as ``error.type``; a fallback is a failed span
followed by another. The span is current while the request runs, so its parent is the
task's span (or the run's, for the planner, synthesizer and summarizer).

The process's tracer provider is kept in the process runtime (:data:`TRACING`), not in
OpenTelemetry's set-once global: tests install an in-memory exporter there and
``reset_runtime()`` removes it (see :class:`kitty.telemetry.Tracing`).
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import BaseMessage

from endpoints.calls._attempt import Attempt, Sender
from endpoints.calls._responses import cached_prompt_tokens
from endpoints.runtime import ProcessRuntime, RuntimeSlot, process_runtime
from kitty.telemetry import ChatTarget, Tracing, chat_span, finish_chat_span, provider_name

TRACING = RuntimeSlot("where this process's spans go (an installed tracer provider)", Tracing)


def process_tracing(runtime: ProcessRuntime | None = None) -> Tracing:
    """The tracing of this process (or of ``runtime``): install a provider on it to export."""
    return (runtime or process_runtime()).get(TRACING)


def _phase(tags: Sequence[str]) -> str | None:
    """``planner``, ``task``, ``synthesizer``... from a request's ``kitty:*`` tag."""
    return next((tag.split(":", 1)[1] for tag in tags if tag.startswith("kitty:")), None)


class Traced:
    """Runs the wrapped sender inside a ``chat`` span of the attempt's request."""

    def __init__(self, tracing: Tracing, inner: Sender) -> None:
        self.tracing = tracing
        self.inner = inner

    async def send(self, attempt: Attempt) -> BaseMessage:
        """The wrapped sender's answer; its failure fails the span and passes through."""
        endpoint, request = attempt.handle.config, attempt.request
        task_id = request.metadata.get("kitty_task_id")
        target = ChatTarget(
            model=endpoint.model,
            provider=provider_name(endpoint.kind),
            base_url=endpoint.base_url,
            endpoint=endpoint.name,
            tier=attempt.handle.tier,
            slot=attempt.slot,
            queued_s=attempt.queued_s,
            fallback=attempt.fallback,
        )
        with chat_span(
            self.tracing.tracer(),
            target,
            max_tokens=request.model.max_tokens,
            temperature=request.model.temperature,
            run_id=request.run_id,
            task_id=task_id if isinstance(task_id, str) else None,
            phase=_phase(request.tags),
        ) as span:
            response = await self.inner.send(attempt)
            usage = getattr(response, "usage_metadata", None) or {}
            metadata = getattr(response, "response_metadata", None) or {}
            finish_chat_span(
                span,
                model=metadata.get("model_name") or metadata.get("model"),
                input_tokens=usage.get("input_tokens"),
                output_tokens=usage.get("output_tokens"),
                cached_input_tokens=cached_prompt_tokens(response) or None,
                finish_reason=metadata.get("finish_reason") or metadata.get("done_reason"),
            )
            return response


__all__ = ["TRACING", "Traced", "process_tracing"]
