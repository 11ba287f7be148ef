"""What a chat answer says beyond its text: text parts, reasoning, cached prompt tokens."""

from __future__ import annotations

from langchain_core.messages import BaseMessage


def answer_text(message: BaseMessage) -> str:
    """The text parts of an answer, joined (image or other parts left out)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = [
        p.get("text", "") if isinstance(p, dict) else str(p)
        for p in content
        if not isinstance(p, dict) or p.get("type") in (None, "text")
    ]
    return "".join(parts)


def cached_prompt_tokens(message: BaseMessage) -> int:
    """Prompt tokens the server served from its cache for this answer (0 if not reported).

    llama.cpp reports them as ``usage.prompt_tokens_details.cached_tokens`` (LangChain's
    ``input_token_details.cache_read``) and in its own ``timings.cache_n``.
    """
    usage = getattr(message, "usage_metadata", None) or {}
    cached = (usage.get("input_token_details") or {}).get("cache_read")
    if cached is None:
        metadata = getattr(message, "response_metadata", None) or {}
        cached = (metadata.get("timings") or {}).get("cache_n")
    return int(cached) if isinstance(cached, int | float) and cached > 0 else 0


def reasoning_of(message: BaseMessage) -> str | None:
    """A thinking model's reasoning text, if the server sent any."""
    extra = message.additional_kwargs or {}
    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
    return reasoning if isinstance(reasoning, str) and reasoning.strip() else None


__all__ = ["answer_text", "cached_prompt_tokens", "reasoning_of"]
