"""Token budgets: prompts sized for the endpoint actually called, in its model's tokens.

Budgets come from the endpoint's per-slot context: context - completion cap - the fixed
part of the prompt - a margin for the chat template. The fixed part is counted and long
texts (dependency results, answers to summarize) are cut with the model's own tokenizer
(:mod:`endpoints.clients.llamacpp`). Where no tokenizer answers (Ollama, a network error) a bound
that no tokenizer exceeds stands in: one token per UTF-8 byte, plus one. Byte-level BPE
never makes more tokens than bytes; measured on SmolLM2, two characters per token is no
bound at all (CJK text is 1.5 tokens a character, digits one each).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from endpoints.clients import llamacpp as engine
from endpoints.config import EndpointConfig
from kitty.errors import PlanError, PromptTooLong

if TYPE_CHECKING:
    from endpoints.fleet import FleetRuntime

PROMPT_MARGIN_TOKENS = 64
TRUNCATION_MARK = "\n[... cut to fit the context window]"
# SentencePiece may put a word-start token before the first byte.
_SAFE_EXTRA_TOKENS = 1
# Room a goal must leave in the smallest context: the agent's instructions, the task
# description and a short answer.
GOAL_RESERVE_TOKENS = 512


def safe_token_bound(text: str) -> int:
    """Tokens ``text`` has at most, for any tokenizer: its UTF-8 bytes, plus one."""
    return len(text.encode("utf-8")) + _SAFE_EXTRA_TOKENS


def estimate_tokens(text: str) -> int:
    """Rough token count (about 4 characters per token) for display, never for budgets."""
    return max(1, len(text) // 4)


def certainly_fits(text: str, budget_tokens: int) -> bool:
    """True when ``text`` fits ``budget_tokens`` whatever the tokenizer."""
    return safe_token_bound(text) <= budget_tokens


async def count_tokens(text: str, endpoint: EndpointConfig) -> int:
    """Tokens of ``text`` for the endpoint's model; the safe bound if it cannot count."""
    counted = await engine.count_tokens(endpoint, text)
    return counted if counted is not None else safe_token_bound(text)


def _cut_by_bytes(text: str, budget_tokens: int) -> str:
    room = max(budget_tokens - _SAFE_EXTRA_TOKENS, 0)
    return text.encode("utf-8")[:room].decode("utf-8", errors="ignore")


async def trim_to_tokens(text: str, budget_tokens: int, endpoint: EndpointConfig) -> str:
    """Cut ``text`` to at most ``budget_tokens`` tokens of the endpoint's model.

    A cut text ends with :data:`TRUNCATION_MARK`, counted inside the budget. Uses the
    server's tokenizer; without one (Ollama, a failed call) cuts by the safe bound
    (never over budget, maybe under).
    """
    if certainly_fits(text, budget_tokens):
        return text
    mark_tokens = safe_token_bound(TRUNCATION_MARK)
    budget_tokens = max(budget_tokens, 0)
    cut = await engine.cut_to_tokens(
        endpoint, text, budget_tokens, reserve_tokens=min(mark_tokens, budget_tokens)
    )
    if cut == text:
        return text
    if budget_tokens <= mark_tokens:
        return TRUNCATION_MARK.strip()
    if cut is None:
        cut = _cut_by_bytes(text, budget_tokens - mark_tokens)
    return cut + TRUNCATION_MARK


async def room_after(
    fixed_text: str, endpoint: EndpointConfig, max_tokens: int, *, shares: Sequence[str] = ()
) -> int:
    """Tokens left on ``endpoint`` for variable text once ``fixed_text`` and the answer fit.

    With ``shares`` (the texts the caller will cut to equal shares of the room, each with
    its heading), no tokenizer is asked when every one of them certainly fits its share
    of the room that the safe bound of ``fixed_text`` leaves: the caller then cuts nothing
    with either room, so the prompt is the same and the ``/tokenize`` round trip is saved.

    Args:
        fixed_text: The part of the prompt that is never cut (instructions, goal, task).
        endpoint: The endpoint the prompt is for.
        max_tokens: The answer's completion cap.
        shares: Texts to be cut to ``room // len(shares)`` tokens each (headings included).

    Returns:
        The budget (0 when only the fixed part fits; the answer may then be cut short).

    Raises:
        PromptTooLong: The fixed part alone does not fit the endpoint's context.
    """
    if shares:
        bound_room = endpoint.ctx - max_tokens - safe_token_bound(fixed_text) - PROMPT_MARGIN_TOKENS
        share = bound_room // len(shares)
        # one token more than the part's own bound: the caller bounds heading and text
        # apart, each with its own extra token
        if bound_room > 0 and all(
            safe_token_bound(part) + _SAFE_EXTRA_TOKENS <= share for part in shares
        ):
            return bound_room
    fixed = await count_tokens(fixed_text, endpoint)
    _refuse_overflow(fixed, endpoint)
    return max(endpoint.ctx - max_tokens - fixed - PROMPT_MARGIN_TOKENS, 0)


async def ensure_fits(fixed_text: str, endpoint: EndpointConfig) -> None:
    """Check that a prompt that is never cut fits ``endpoint`` (counted only if in doubt).

    Raises:
        PromptTooLong: It does not fit the endpoint's context.
    """
    if not certainly_fits(fixed_text, endpoint.ctx - PROMPT_MARGIN_TOKENS):
        _refuse_overflow(await count_tokens(fixed_text, endpoint), endpoint)


def _refuse_overflow(fixed: int, endpoint: EndpointConfig) -> None:
    if fixed + PROMPT_MARGIN_TOKENS > endpoint.ctx:
        raise PromptTooLong(
            f"the prompt's fixed part is {fixed} tokens and does not fit the "
            f"{endpoint.ctx}-token context of {endpoint.name}; shorten the goal or the "
            "task description, or give the endpoint a larger ctx"
        )


async def check_goal_fits(
    goal: str, fleet_runtime: FleetRuntime, *, reserve_tokens: int = GOAL_RESERVE_TOKENS
) -> None:
    """Refuse a goal that cannot fit the smallest context of the fleet, before any call.

    Every prompt of a run (planner, each task, the synthesizer) carries the goal
    verbatim, and any call may fall back to the endpoint with the smallest context.

    Args:
        goal: The goal text.
        fleet_runtime: The fleet whose endpoints may be called.
        reserve_tokens: Room the goal must leave for instructions and an answer.

    Raises:
        PlanError: The goal plus ``reserve_tokens`` exceeds that endpoint's context;
            the message gives both figures and what to do.
    """
    handles = fleet_runtime.all_handles()
    if not handles:
        return
    smallest = min((h.config for h in handles), key=lambda e: e.ctx)
    if certainly_fits(goal, smallest.ctx - reserve_tokens):
        return  # short enough for any tokenizer: no round trip
    counted = await engine.count_tokens(smallest, goal)
    tokens = counted if counted is not None else safe_token_bound(goal)
    if tokens + reserve_tokens <= smallest.ctx:
        return
    size = f"{tokens} tokens" if counted is not None else f"at most {tokens} tokens"
    raise PlanError(
        f"the goal is {size} and the smallest slot context is {smallest.ctx} tokens on "
        f"endpoint {smallest.name}, which must also hold about {reserve_tokens} tokens of "
        f"instructions and answer; shorten the goal to under "
        f"{max(smallest.ctx - reserve_tokens, 0)} tokens, or raise ctx for that endpoint "
        "in the fleet file (and its server's context size)"
    )
