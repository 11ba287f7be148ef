"""llama.cpp wire details the graph needs: token counts, token cuts and busy slots.

The graph budgets prompts in the model's own tokens and, after a timed-out request, waits
for the server to stop it; both speak llama.cpp's HTTP protocol, which lives here:
``POST /tokenize`` and ``/detokenize`` (the model's tokenizer, no slot needed) and
``GET /slots`` (each slot's ``is_processing``). Every function answers ``None`` when the
engine cannot tell (Ollama, a server without ``/slots``, a network error): callers then
fall back to a safe bound instead of failing.
"""

from __future__ import annotations

from typing import Any

import httpx

from endpoints.clients._chat_models import loop_http_client
from endpoints.config import EndpointConfig
from endpoints.runtime import process_runtime

TOKENIZER_TIMEOUT_S = 10.0
SLOTS_TIMEOUT_S = 1.0
# /detokenize of a cut inside a multi-byte character ends in U+FFFD: drop it.
_REPLACEMENT_CHARACTER = "\ufffd"


def _client(client: httpx.AsyncClient | None) -> httpx.AsyncClient:
    return client if client is not None else loop_http_client()


async def tokenize(
    endpoint: EndpointConfig,
    text: str,
    client: httpx.AsyncClient | None = None,
    timeout: float = TOKENIZER_TIMEOUT_S,
) -> list[int] | None:
    """The model's token ids for ``text`` (llama.cpp ``/tokenize``), or ``None``.

    Args:
        endpoint: The server whose model's tokenizer counts.
        text: Text to tokenize (no special tokens added).
        client: HTTP client (default: the running loop's shared one).
        timeout: Seconds for the request.

    Returns:
        The token ids; ``None`` for Ollama (no tokenizer endpoint) or when the call fails.
    """
    if endpoint.kind != "llamacpp":
        return None
    try:
        response = await _client(client).post(
            f"{endpoint.base_url}/tokenize", json={"content": text}, timeout=timeout
        )
        response.raise_for_status()
        tokens = response.json()["tokens"]
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return None
    return tokens if isinstance(tokens, list) else None


async def count_tokens(
    endpoint: EndpointConfig, text: str, client: httpx.AsyncClient | None = None
) -> int | None:
    """Tokens of ``text`` for the endpoint's model, or ``None`` when it cannot count."""
    tokens = await tokenize(endpoint, text, client)
    return None if tokens is None else len(tokens)


async def cut_to_tokens(
    endpoint: EndpointConfig,
    text: str,
    budget_tokens: int,
    client: httpx.AsyncClient | None = None,
    *,
    reserve_tokens: int = 0,
) -> str | None:
    """``text`` if it has at most ``budget_tokens`` tokens, else a cut; ``None`` if unknown.

    Args:
        endpoint: The server whose model's tokenizer counts.
        text: Text to cut.
        budget_tokens: Most tokens the result may have.
        client: HTTP client (default: the running loop's shared one).
        reserve_tokens: Tokens a cut leaves free (for a note appended to it): a cut is
            the detokenized first ``budget_tokens - reserve_tokens`` tokens.
    """
    tokens = await tokenize(endpoint, text, client)
    if tokens is None:
        return None
    if len(tokens) <= budget_tokens:
        return text
    keep = max(budget_tokens - reserve_tokens, 0)
    try:
        response = await _client(client).post(
            f"{endpoint.base_url}/detokenize",
            json={"tokens": tokens[:keep]},
            timeout=TOKENIZER_TIMEOUT_S,
        )
        response.raise_for_status()
        content = response.json()["content"]
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return None
    return content.rstrip(_REPLACEMENT_CHARACTER) if isinstance(content, str) else None


async def fetch_slots(
    client: httpx.AsyncClient, base_url: str, timeout: float = SLOTS_TIMEOUT_S
) -> list[dict[str, Any]]:
    """Return llama.cpp's ``/slots`` list (each with ``id`` and ``is_processing``).

    Raises:
        httpx.HTTPError: The server did not answer, or ``/slots`` is off (``--no-slots``).
    """
    response = await client.get(f"{base_url}/slots", timeout=timeout)
    response.raise_for_status()
    slots = response.json()
    return slots if isinstance(slots, list) else []


def count_busy(slots: list[dict[str, Any]]) -> int:
    """Number of slots a ``/slots`` answer reports as processing."""
    return sum(1 for slot in slots if slot.get("is_processing"))


async def busy_slots(
    endpoint: EndpointConfig,
    client: httpx.AsyncClient | None = None,
    timeout: float = SLOTS_TIMEOUT_S,
) -> int | None:
    """Slots of the server processing a request now, or ``None`` when it cannot tell."""
    if endpoint.kind != "llamacpp":
        return None
    try:
        return count_busy(await fetch_slots(_client(client), endpoint.base_url, timeout))
    except (httpx.HTTPError, ValueError):
        return None


async def template_supports_tools(
    endpoint: EndpointConfig, client: httpx.AsyncClient | None = None
) -> bool:
    """Whether the server parses OpenAI ``tools`` with its chat template.

    llama.cpp reports it in ``/props`` ``chat_template_caps.supports_tools``; a template
    without tool support makes the server ignore ``tools`` entirely (no schema in the
    prompt, plain text back). Ollama has no such report, and neither has a server whose
    ``/props`` cannot be read: there the fleet file's ``supports_tools`` decides.
    """
    if endpoint.kind != "llamacpp":
        return endpoint.supports_tools
    # /props answers once per server start; a template change needs a restart anyway.
    known = process_runtime().tool_support.get(endpoint.base_url)
    if known is not None:
        return known
    try:
        response = await _client(client).get(f"{endpoint.base_url}/props", timeout=SLOTS_TIMEOUT_S)
        response.raise_for_status()
        caps = response.json().get("chat_template_caps") or {}
    except (httpx.HTTPError, TypeError, ValueError, AttributeError):
        return endpoint.supports_tools
    supported = bool(caps.get("supports_tools"))
    process_runtime().tool_support[endpoint.base_url] = supported
    return supported


def mark_tool_calls_unconstrained(endpoint: EndpointConfig) -> None:
    """Remember that the server ignored a required tool call.

    Its template analysis failed; from now on the orchestrator constrains that endpoint's
    calls itself.
    """
    process_runtime().tool_support[endpoint.base_url] = False


async def endpoint_supports_vision(
    endpoint: EndpointConfig, client: httpx.AsyncClient | None = None
) -> bool:
    """Whether the endpoint can be sent images: the fleet file says so and the server agrees.

    The fleet file's ``supports_vision`` is required. A llama.cpp server must also report
    ``/props`` ``modalities.vision`` (true only when it was started with ``--mmproj``); a
    server whose ``/props`` cannot be read or lacks ``modalities`` counts as blind, so an
    image is never sent to a model that would drop it. Ollama has no such report: there
    the fleet file decides.
    """
    if not endpoint.supports_vision:
        return False
    if endpoint.kind != "llamacpp":
        return True
    # Like the tool report: a server gains or loses its projector only by a restart.
    known = process_runtime().vision_support.get(endpoint.base_url)
    if known is not None:
        return known
    reported = await server_reports_vision(endpoint, client)
    if reported is None:
        return False  # not cached: the server may still be starting
    process_runtime().vision_support[endpoint.base_url] = reported
    return reported


async def server_reports_vision(
    endpoint: EndpointConfig, client: httpx.AsyncClient | None = None
) -> bool | None:
    """The server's own ``/props`` ``modalities.vision`` (``None``: Ollama, or unreadable).

    Unlike :func:`endpoint_supports_vision` this ignores the fleet file: it names the cause
    when the two disagree.
    """
    if endpoint.kind != "llamacpp":
        return None
    try:
        response = await _client(client).get(f"{endpoint.base_url}/props", timeout=SLOTS_TIMEOUT_S)
        response.raise_for_status()
        modalities = response.json().get("modalities")
    except (httpx.HTTPError, TypeError, ValueError, AttributeError):
        return None
    return bool(modalities.get("vision")) if isinstance(modalities, dict) else None
