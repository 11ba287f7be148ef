"""Fallback over a tier chain: the first candidate endpoint that answers, answers.

Candidates come from :meth:`~endpoints.fleet.FleetRuntime.candidates` (primary tier
first, least-loaded healthy replica first, benched servers last). For each, the prompt is
built for *that* endpoint (budgets differ: a fallback may have a smaller context); a
builder raising :class:`~kitty.errors.PromptTooLong` skips it before a slot is taken.
A request the server rejected (4xx) ends the call: another server would refuse it too.
The call never raises for endpoint trouble: its :class:`CallOutcome` says what happened.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence

from langchain_core.messages import BaseMessage

from endpoints.calls._attempt import Attempt, AttemptFailed, CallObserver, NoObserver, Sender
from endpoints.calls._outcome import CallOutcome
from endpoints.calls._request import MessageBuilder, ModelRequest
from endpoints.calls._responses import answer_text, reasoning_of
from endpoints.config import EndpointConfig
from endpoints.fleet import EndpointHandle, FleetRuntime, affinity_applies
from endpoints.slots import SlotTimeoutError
from kitty.errors import PromptTooLong


async def _messages_for(
    messages: Sequence[BaseMessage] | MessageBuilder, endpoint: EndpointConfig
) -> Sequence[BaseMessage]:
    if callable(messages):
        built = messages(endpoint)
        return await built if inspect.isawaitable(built) else built
    return messages


def _add_attempt(outcome: CallOutcome, attempt: Attempt) -> None:
    """What one endpoint's attempt adds to the call's outcome."""
    # A lost lease queued the attempt again: each queue counts as a try of the endpoint.
    outcome.attempts += [attempt.handle.name] * max(attempt.queues - 1, 0)
    outcome.queued_s += attempt.queued_s
    outcome.calls += attempt.calls
    outcome.latency_s += sum(call.latency_s for call in attempt.calls)
    if attempt.slot is not None:
        outcome.slot = attempt.slot
    if attempt.calls:
        outcome.started_at = outcome.started_at or attempt.calls[0].started_at


def _answered(outcome: CallOutcome, attempt: Attempt, response: BaseMessage) -> CallOutcome:
    usage = dict(getattr(response, "usage_metadata", None) or {})
    metadata = getattr(response, "response_metadata", None) or {}
    outcome.ok = True
    outcome.error = None
    outcome.message = response
    outcome.text = answer_text(response)
    outcome.reasoning = reasoning_of(response)
    endpoint = attempt.handle.config
    outcome.model = metadata.get("model_name") or metadata.get("model") or endpoint.model
    outcome.finish_reason = metadata.get("finish_reason") or metadata.get("done_reason")
    outcome.fallback_used = attempt.fallback
    outcome.prompt_tokens = int(usage.get("input_tokens") or 0)
    outcome.completion_tokens = int(usage.get("output_tokens") or 0)
    outcome.cached_prompt_tokens = attempt.calls[-1].cached_prompt_tokens if attempt.calls else 0
    outcome.finished_at = time.time()
    return outcome


class Fallback:
    """Tries the candidates of a tier chain in order, each through the wrapped sender."""

    def __init__(self, runtime: FleetRuntime, inner: Sender) -> None:
        self.runtime = runtime
        self.inner = inner

    async def _ranked(self, tiers: list[str]) -> tuple[list[EndpointHandle], dict[str, bool]]:
        candidates = self.runtime.candidates(tiers)
        # Awaited before ranking: a task that yields between ranking the replicas and
        # queueing on one would rank on loads that the tasks started beside it have
        # changed since.
        affinity = {h.name: await affinity_applies(h.config, h.limiter) for h in candidates}
        if len(candidates) > 1:
            candidates = self.runtime.candidates(tiers)
        return candidates, affinity

    async def call(
        self,
        request: ModelRequest,
        messages: Sequence[BaseMessage] | MessageBuilder,
        observer: CallObserver | None = None,
    ) -> CallOutcome:
        """The outcome of the first candidate that answers (or of the last failure)."""
        observer = observer or NoObserver()
        outcome = CallOutcome(ok=False)
        tiers = list(request.tiers)
        ranking = time.perf_counter()
        candidates, affinity = await self._ranked(tiers)
        # Preparing the call: a first /props read for affinity can take a while.
        outcome.prepare_s += time.perf_counter() - ranking
        if not candidates:
            outcome.error = f"no endpoint serves tiers {tiers}"
            return outcome

        def move_on(index: int, error: str) -> None:
            outcome.error = error
            if index + 1 < len(candidates):
                observer.fell_back(candidates[index], error, candidates[index + 1])

        for index, handle in enumerate(candidates):
            endpoint = handle.config
            outcome.attempts.append(endpoint.name)
            outcome.endpoint, outcome.tier = endpoint.name, handle.tier
            preparing = time.perf_counter()
            try:
                prompt = await _messages_for(messages, endpoint)
            except PromptTooLong as exc:
                move_on(index, f"{endpoint.name}: {exc}")
                continue
            finally:
                outcome.prepare_s += time.perf_counter() - preparing
            attempt = Attempt(
                handle,
                request,
                prompt,
                observer,
                fallback=handle.tier != tiers[0],
                affine=affinity.get(endpoint.name, False),
            )
            try:
                response = await self.inner.send(attempt)
            except SlotTimeoutError as exc:
                _add_attempt(outcome, attempt)
                move_on(index, str(exc))
                continue
            except AttemptFailed as exc:
                _add_attempt(outcome, attempt)
                if exc.status == "rejected":
                    outcome.error = exc.error
                    outcome.finished_at = time.time()
                    return outcome
                move_on(index, exc.error)
                continue
            _add_attempt(outcome, attempt)
            return _answered(outcome, attempt, response)
        outcome.finished_at = time.time()
        if len(candidates) > 1:
            outcome.error = f"all endpoints failed (tried {', '.join(outcome.attempts)}); " + (
                f"last: {outcome.error or 'unknown error'}"
            )
        return outcome


__all__ = ["Fallback"]
