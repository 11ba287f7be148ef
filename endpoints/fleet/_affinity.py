"""Prefix-cache affinity on llama.cpp: send a task to the server slot that holds its prefix.

llama.cpp keeps each slot's last prompt in its KV cache and reuses the common prefix of
the next prompt on that slot. An agent's fixed prefix (its system prompt, then its tool
schemas) is byte-identical across tasks and runs, so a task of an agent that ran on a
slot before finds most of its prompt cached there. The limiter picks a free slot that
last served the same :func:`prefix_key` (else the least recently used free one) and the
request names it with ``id_slot`` (:func:`pin_slot`), which llama.cpp honours on
``/v1/chat/completions`` (verified on the embedded server: the request runs on that slot,
``/slots`` shows it, and the second call reports the prefix as cached).

``id_slot`` is sent only where our slot numbers *are* the server's slots
(:func:`affinity_applies`): a llama.cpp endpoint whose limiter is this process's alone
(the ``local`` store) and as large as the server's ``/props`` ``total_slots``. A busy
slot named by ``id_slot`` makes llama.cpp wait for exactly that slot, so it is never sent
to Ollama, to a deliberately capped server (fewer limiter slots than server slots), or
with a shared Redis store, where every process numbers its own leases from 0 (and the
degraded mode of a store that is down): there the server picks its slot itself.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

import httpx
from langchain_core.messages import BaseMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableSequence

from endpoints.clients import loop_http_client
from endpoints.config import EndpointConfig
from endpoints.runtime import ServerSlotCount, process_runtime
from endpoints.slots import SlotLimiter

PROPS_TIMEOUT_S = 1.0
# A server's slot count changes only by a restart; an unreadable /props is asked again soon.
_KNOWN_TTL_S = 300.0
_UNKNOWN_TTL_S = 30.0


def _text(message: BaseMessage) -> str:
    content = message.content
    return content if isinstance(content, str) else json.dumps(content, sort_keys=True)


def prefix_key(messages: Sequence[BaseMessage]) -> str | None:
    """A short hash of a call's fixed prefix: its system prompt.

    An agent's system prompt names the tools it is offered (sorted), so agents with other
    tools get other keys. ``None`` when the call has no system prompt (nothing fixed).
    """
    if not messages or not isinstance(messages[0], SystemMessage):
        return None
    return hashlib.sha256(_text(messages[0]).encode()).hexdigest()[:16]


def _with_slot(body: Any, slot: int) -> dict[str, Any]:
    return {**dict(body or {}), "id_slot": slot}


def pin_slot(model: Any, slot: int) -> Any:
    """``model`` with ``id_slot = slot`` in its llama.cpp request body (``extra_body``).

    Walks bindings and sequences (``bind_tools``, structured output) to the chat model; a
    binding's own ``extra_body`` wins over the model's, so it is extended where it is.
    Anything without an ``extra_body`` (a fake model, Ollama) comes back unchanged.
    """
    if isinstance(model, RunnableBinding):
        if "extra_body" in model.kwargs:
            kwargs = {**model.kwargs, "extra_body": _with_slot(model.kwargs["extra_body"], slot)}
            return model.model_copy(update={"kwargs": kwargs})
        return model.model_copy(update={"bound": pin_slot(model.bound, slot)})
    if isinstance(model, RunnableSequence):
        first: Runnable[Any, Any] = pin_slot(model.first, slot)
        return model.model_copy(update={"first": first})
    if "extra_body" in getattr(type(model), "model_fields", {}):
        return model.model_copy(update={"extra_body": _with_slot(model.extra_body, slot)})
    return model


async def server_slot_count(
    endpoint: EndpointConfig, client: httpx.AsyncClient | None = None
) -> int | None:
    """The server's ``/props`` ``total_slots`` (cached), or ``None`` when unknown."""
    known = process_runtime().server_slots.get(endpoint.base_url)
    now = time.monotonic()
    if known is not None and now < known.valid_until:
        return known.count
    count: int | None = None
    try:
        response = await (client or loop_http_client()).get(
            f"{endpoint.base_url}/props", timeout=PROPS_TIMEOUT_S
        )
        response.raise_for_status()
        value = response.json().get("total_slots")
        count = value if isinstance(value, int) and value > 0 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        count = None
    process_runtime().server_slots[endpoint.base_url] = ServerSlotCount(
        count, now + (_KNOWN_TTL_S if count is not None else _UNKNOWN_TTL_S)
    )
    return count


async def affinity_applies(endpoint: EndpointConfig, limiter: SlotLimiter) -> bool:
    """Whether slot numbers of ``limiter`` name the server's own slots (``id_slot`` is safe).

    A llama.cpp endpoint, counted by this process alone, as many limiter slots as the
    server reports.
    """
    if endpoint.kind != "llamacpp" or not limiter.numbers_are_server_slots:
        return False
    return await server_slot_count(endpoint) == limiter.capacity
