"""One model call done right: the prompt sized for the endpoint called, slot, timeout, fallback.

Token budgets and what an answer says beyond its text live here too.
"""

from graph.calls._budget import (
    PromptTooLong,
    check_goal_fits,
    ensure_fits,
    room_after,
    safe_token_bound,
    trim_to_tokens,
)
from graph.calls._model_call import (
    CallOutcome,
    MessageBuilder,
    ModelBuilder,
    call_model,
    slot_order_of_run,
)

__all__ = [
    "CallOutcome",
    "MessageBuilder",
    "ModelBuilder",
    "PromptTooLong",
    "call_model",
    "check_goal_fits",
    "ensure_fits",
    "room_after",
    "safe_token_bound",
    "slot_order_of_run",
    "trim_to_tokens",
]
