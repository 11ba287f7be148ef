"""The one call layer: a tier chain called under slot limits, with fallback, as one outcome.

Small wrappers compose here (fallback, slot limit, trace span, slow-or-down policy, busy
retry, chat send); :func:`process_tracing` is where the process's spans go.
"""

from endpoints.calls._attempt import Attempt, AttemptFailed, CallObserver, NoObserver, Sender
from endpoints.calls._busy_retry import BusyRetry
from endpoints.calls._call import call_tiers, tier_chain
from endpoints.calls._chat import ChatSend, chat_model_for
from endpoints.calls._fallback import Fallback
from endpoints.calls._outcome import CallOutcome, CallStatus, ModelCall
from endpoints.calls._request import (
    CallLimits,
    MessageBuilder,
    ModelRequest,
    ModelSettings,
    ResponseFormat,
    ToolBinding,
)
from endpoints.calls._responses import answer_text, cached_prompt_tokens, reasoning_of
from endpoints.calls._slot_limit import SlotLimited
from endpoints.calls._slow_or_down import SlowOrDown, describe_error, is_timeout
from endpoints.calls._traced import TRACING, Traced, process_tracing

__all__ = [
    "TRACING",
    "Attempt",
    "AttemptFailed",
    "BusyRetry",
    "CallLimits",
    "CallObserver",
    "CallOutcome",
    "CallStatus",
    "ChatSend",
    "Fallback",
    "MessageBuilder",
    "ModelCall",
    "ModelRequest",
    "ModelSettings",
    "NoObserver",
    "ResponseFormat",
    "Sender",
    "SlotLimited",
    "SlowOrDown",
    "ToolBinding",
    "Traced",
    "answer_text",
    "cached_prompt_tokens",
    "call_tiers",
    "chat_model_for",
    "describe_error",
    "is_timeout",
    "process_tracing",
    "reasoning_of",
    "tier_chain",
]
