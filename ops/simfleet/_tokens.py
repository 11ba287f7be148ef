"""SIMULATED tokens: prompt-size estimate, completion length and deterministic filler text."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

SIMULATED_LABEL = "[SIMULATED]:"


def _text_of(content: Any, image_tokens: int, chars_per_token: float) -> tuple[int, int]:
    """Return (characters, image tokens) of a message ``content``."""
    if content is None:
        return 0, 0
    if isinstance(content, str):
        return len(content), 0
    chars, images = 0, 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                chars += len(part)
            elif isinstance(part, Mapping):
                kind = part.get("type")
                if kind == "text":
                    chars += len(str(part.get("text", "")))
                elif kind in {"image_url", "image", "input_image"}:
                    images += image_tokens
                else:
                    chars += len(json.dumps(part))
        return chars, images
    return len(json.dumps(content)), 0


def count_prompt_tokens(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None = None,
    *,
    chars_per_token: float = 4.0,
    image_tokens: int = 256,
    per_message_overhead: int = 4,
) -> int:
    """Estimate prompt tokens: ``ceil(chars / chars_per_token)`` + overhead per message.

    Args:
        messages: OpenAI/Ollama chat messages (``content`` as text or parts).
        tools: Tool definitions; their JSON is counted like text.
        chars_per_token: Characters per token (4 is a common rule of thumb).
        image_tokens: Tokens counted per image part.
        per_message_overhead: Chat-template tokens per message (role markers).

    Returns:
        The estimated prompt token count.
    """
    total = 0
    for message in messages:
        chars, images = _text_of(message.get("content"), image_tokens, chars_per_token)
        if message.get("tool_calls"):
            chars += len(json.dumps(message["tool_calls"]))
        images += image_tokens * len(message.get("images") or [])
        total += math.ceil(chars / chars_per_token) + images + per_message_overhead
    if tools:
        total += math.ceil(len(json.dumps(list(tools))) / chars_per_token)
    return total


def plan_completion(
    *,
    max_tokens: int | None,
    ignore_eos: bool,
    typical: int,
    room: int,
) -> tuple[int, Literal["stop", "length"]]:
    """Decide how many tokens a SIMULATED completion has and why it stops.

    Args:
        max_tokens: The request's cap (``None``: unlimited, as llama.cpp's ``-1``).
        ignore_eos: Generate until the cap (llama.cpp ``ignore_eos``).
        typical: Length of a completion that ends on its own.
        room: Context tokens left after the prompt.

    Returns:
        ``(tokens, finish_reason)``.
    """
    if ignore_eos:
        tokens = room if max_tokens is None else max_tokens
    else:
        tokens = typical if max_tokens is None else min(max_tokens, typical)
    reason: Literal["stop", "length"] = (
        "length" if max_tokens is not None and tokens >= max_tokens else "stop"
    )
    if tokens >= room:
        tokens, reason = room, "length"
    return max(0, tokens), reason


_FILLER_WORDS = (
    " the", " sim", " ran", " one", " new", " day", " and", " fed", " two",
    " old", " map", " got", " big", " kit", " for", " all", " out", " now",
    " set", " tok", " run", " cat", " sky", " was",
)  # fmt: skip
_LABEL_PIECES = ("[SIM", "ULAT", "ED]:")  # SIMULATED_LABEL in 4-character tokens


def filler_pieces(tokens: int, seed: int = 0) -> list[str]:
    """Deterministic SIMULATED output: ``tokens`` pieces of exactly 4 characters.

    The text starts with ``[SIMULATED]:`` and continues with short words chosen from
    ``seed``, so the same request always gets the same answer.
    """
    pieces = list(_LABEL_PIECES[:tokens])
    words = len(_FILLER_WORDS)
    pieces.extend(_FILLER_WORDS[(seed + 7 * i) % words] for i in range(tokens - len(pieces)))
    return pieces


def split_pieces(text: str, width: int = 4) -> list[str]:
    """Split text into ``width``-character pieces (the SIMULATED tokens of a JSON answer)."""
    return [text[i : i + width] for i in range(0, len(text), width)] or [""]
