"""Token budgets for dependency results handed to a task.

Budgets come from the endpoint's per-slot context: context - completion cap - the rest of
the prompt. Texts are cut by tokens, not characters: llama.cpp's ``/tokenize`` and
``/detokenize`` do the counting with the model's own tokenizer. A cheap upper-bound
estimate decides whether counting is needed at all, so short inputs cost no round trip.
"""

from __future__ import annotations

import httpx

from endpoints.config import EndpointConfig

# SentencePiece/BPE tokenizers average 3-4 characters per token on English; two
# characters per token is a safe upper bound for deciding that no cut is needed.
_SAFE_CHARS_PER_TOKEN = 2
PROMPT_MARGIN_TOKENS = 64
TRUNCATION_MARK = "\n[... cut to fit the context window]"


def estimate_tokens(text: str) -> int:
    """Rough token count (about 4 characters per token) for budgeting decisions."""
    return max(1, len(text) // 4)


def certainly_fits(text: str, budget_tokens: int) -> bool:
    """True when ``text`` fits ``budget_tokens`` even at two characters per token."""
    return len(text) <= budget_tokens * _SAFE_CHARS_PER_TOKEN


async def trim_to_tokens(
    text: str, budget_tokens: int, endpoint: EndpointConfig, client: httpx.AsyncClient
) -> str:
    """Cut ``text`` to at most ``budget_tokens`` tokens of the endpoint's model.

    Uses llama.cpp ``/tokenize`` + ``/detokenize``; for Ollama, or when those calls fail,
    falls back to the 2-characters-per-token bound (never over budget, maybe under).
    """
    if budget_tokens <= 0:
        return TRUNCATION_MARK.strip()
    if certainly_fits(text, budget_tokens):
        return text
    if endpoint.kind == "llamacpp":
        try:
            tokens = (
                await client.post(
                    f"{endpoint.base_url}/tokenize", json={"content": text}, timeout=10.0
                )
            ).json()["tokens"]
            if len(tokens) <= budget_tokens:
                return text
            cut = (
                await client.post(
                    f"{endpoint.base_url}/detokenize",
                    json={"tokens": tokens[:budget_tokens]},
                    timeout=10.0,
                )
            ).json()["content"]
            return cut + TRUNCATION_MARK
        except (httpx.HTTPError, KeyError, ValueError):
            pass
    return text[: budget_tokens * _SAFE_CHARS_PER_TOKEN] + TRUNCATION_MARK


def dependency_budget(endpoint: EndpointConfig, max_tokens: int, prompt_text: str) -> int:
    """Tokens left for dependency results on ``endpoint`` after the prompt and the answer."""
    return endpoint.ctx - max_tokens - estimate_tokens(prompt_text) - PROMPT_MARGIN_TOKENS
