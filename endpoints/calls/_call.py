"""The one way to call a model: a tier chain under slot limits, with fallback.

The wrappers compose from the outside in, as pydantic-ai's ``FallbackModel`` and
``ConcurrencyLimitedModel`` wrap a model::

    Fallback            candidates of the chain, prompt built per endpoint, one outcome
      SlotLimited       a slot held around each request; a lost lease queues it again
        Traced          a ``chat`` span around the request (OpenTelemetry; no-op when off)
          SlowOrDown    a failure classified; health and cooldown kept; slow waits for stop
            BusyRetry   "server busy" asked again after a backoff
              ChatSend  the endpoint's chat model built for the request, and asked
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import BaseMessage

from endpoints.calls._attempt import CallObserver
from endpoints.calls._busy_retry import BusyRetry
from endpoints.calls._chat import ChatSend
from endpoints.calls._fallback import Fallback
from endpoints.calls._outcome import CallOutcome
from endpoints.calls._request import MessageBuilder, ModelRequest
from endpoints.calls._slot_limit import SlotLimited
from endpoints.calls._slow_or_down import SlowOrDown
from endpoints.calls._traced import Traced, process_tracing
from endpoints.fleet import FleetRuntime


def tier_chain(runtime: FleetRuntime) -> Fallback:
    """The composed call wrappers for ``runtime``'s fleet (spans to the process's tracing)."""
    sender = SlowOrDown(runtime, BusyRetry(ChatSend(runtime)))
    return Fallback(runtime, SlotLimited(Traced(process_tracing(), sender)))


async def call_tiers(
    runtime: FleetRuntime,
    request: ModelRequest,
    messages: Sequence[BaseMessage] | MessageBuilder,
    *,
    observer: CallObserver | None = None,
) -> CallOutcome:
    """Run one chat call on the first endpoint of ``request.tiers`` that answers.

    Args:
        runtime: The fleet's live routing state.
        request: What to ask for and within which limits.
        messages: The messages, or an async ``endpoint -> messages`` builder called for
            each endpoint tried; a builder raising :class:`~kitty.errors.PromptTooLong`
            skips that endpoint.
        observer: Progress hooks (queued, started, finished, fell back).

    Returns:
        The outcome; ``ok`` is False when every candidate failed or the request was
        rejected (a 4xx is not retried elsewhere: another server would refuse it too).
    """
    return await tier_chain(runtime).call(request, messages, observer)


__all__ = ["call_tiers", "tier_chain"]
