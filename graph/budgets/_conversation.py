"""Earlier turns of a chat, sized to a prompt's budget: the oldest are dropped first.

The planner and the synthesizer quote a goal's earlier conversation (a chat front end
sends the whole history with every message). It gets what is left of the endpoint's
context once the fixed prompt and the answer fit, at most the run's
``conversation_max_tokens``; the newest turns are kept whole while they fit, and a newest
turn too long for the whole budget is cut (its start kept).
"""

from __future__ import annotations

from collections.abc import Sequence

from endpoints.config import EndpointConfig
from graph import prompts
from graph.budgets._budget import (
    PROMPT_MARGIN_TOKENS,
    certainly_fits,
    count_tokens,
    room_after,
    safe_token_bound,
    trim_to_tokens,
)
from graph.context import ConversationTurn

# A turn is joined to the next with a newline: one token more than the turn's own.
_JOIN_TOKENS = 1


async def fit_conversation(
    turns: Sequence[ConversationTurn],
    *,
    fixed_text: str,
    endpoint: EndpointConfig,
    max_tokens: int,
    cap_tokens: int,
    room_divisor: int = 1,
) -> str:
    """The framed earlier conversation that fits beside ``fixed_text`` on ``endpoint``.

    Args:
        turns: Earlier turns, oldest first.
        fixed_text: The rest of the prompt, never cut (instructions, goal...).
        endpoint: The endpoint the prompt is for.
        max_tokens: The call's completion cap.
        cap_tokens: Most tokens the conversation may take (``conversation_max_tokens``).
        room_divisor: Take at most this fraction (1/n) of the room left, so other
            variable text (the synthesizer's task results) keeps the rest.

    Returns:
        :func:`graph.prompts.conversation_block` of the newest turns that fit (it says how
        many older turns were left out), or ``""`` when none does.

    Raises:
        PromptTooLong: ``fixed_text`` alone does not fit the endpoint's context.
    """
    if not turns or cap_tokens <= 0:
        return ""
    lines = [prompts.conversation_turn(turn.role, turn.content) for turn in turns]
    whole = prompts.conversation_block(lines)
    bound_room = endpoint.ctx - max_tokens - safe_token_bound(fixed_text) - PROMPT_MARGIN_TOKENS
    if certainly_fits(whole, min(cap_tokens, bound_room // room_divisor)):
        return whole  # no tokenizer round trip for a short history
    room = await room_after(fixed_text, endpoint, max_tokens)
    budget = min(cap_tokens, room // room_divisor)
    frame = prompts.conversation_block([""], dropped=len(lines))
    left = budget - await count_tokens(frame, endpoint)
    kept: list[str] = []
    for line in reversed(lines):  # newest first
        if left <= _JOIN_TOKENS:
            break
        tokens = await count_tokens(line, endpoint) + _JOIN_TOKENS
        if tokens <= left:
            kept.append(line)
            left -= tokens
            continue
        if not kept:  # the newest turn alone is too long: keep its start
            kept.append(await trim_to_tokens(line, left - _JOIN_TOKENS, endpoint))
        break
    kept.reverse()
    return prompts.conversation_block(kept, dropped=len(lines) - len(kept))
