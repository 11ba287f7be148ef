"""Token budgets: prompts sized in the model's own tokens for the endpoint actually called.

Message builders cut long texts to fit; a prompt whose fixed part does not fit raises
:class:`~kitty.errors.PromptTooLong`, and the call layer tries the next endpoint. A chat's
earlier turns get what is left, oldest dropped first (:func:`fit_conversation`).
"""

from graph.budgets._budget import (
    check_goal_fits,
    ensure_fits,
    room_after,
    safe_token_bound,
    trim_to_tokens,
)
from graph.budgets._conversation import fit_conversation

__all__ = [
    "check_goal_fits",
    "ensure_fits",
    "fit_conversation",
    "room_after",
    "safe_token_bound",
    "trim_to_tokens",
]
