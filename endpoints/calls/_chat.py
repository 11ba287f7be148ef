"""The innermost sender: builds the endpoint's chat model for the request and asks it.

The model gets the request's settings, then its tools (bound natively, or constrained
by a JSON schema where the server does not parse calls) or its response format, then
the slot it holds when slot numbers are the server's (prefix affinity, ``id_slot``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable

from endpoints.calls._attempt import Attempt
from endpoints.calls._request import ModelRequest, ToolBinding
from endpoints.clients import ainvoke_chat, constrain_to_json_schema, json_schema_format
from endpoints.config import EndpointConfig
from endpoints.fleet import FleetRuntime, pin_slot

ChatRunnable = BaseChatModel | Runnable[Any, Any]


def bind_tools(
    model: BaseChatModel, endpoint: EndpointConfig, binding: ToolBinding
) -> ChatRunnable:
    """``model`` with the offered tools: bound natively, or constrained by our schema."""
    if not binding.native.get(endpoint.name, False):
        if endpoint.kind == "llamacpp":
            # In the request body, not as ``response_format``: LangChain would then parse
            # the answer itself and raise on a call cut at the cap instead of letting us
            # say so to the model.
            body = dict(getattr(model, "extra_body", None) or {})
            body["response_format"] = json_schema_format(binding.call_schema, "tool_call")
            return model.bind(extra_body=body)
        return constrain_to_json_schema(model, endpoint, binding.call_schema, name="tool_call")
    tools = list(binding.tools)
    if endpoint.kind == "ollama":
        return model.bind_tools(tools)  # Ollama has no tool_choice
    return model.bind_tools(tools, tool_choice=binding.choice, parallel_tool_calls=False)


def chat_model_for(
    runtime: FleetRuntime, endpoint: EndpointConfig, request: ModelRequest
) -> ChatRunnable:
    """The chat model a request is sent to on ``endpoint`` (before any slot pin)."""
    settings = request.model
    model = runtime.chat_model(
        endpoint,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        thinking=settings.thinking,
        extra=settings.extra,
        timeout_s=settings.timeout_s,
    )
    if request.tools is not None:
        return bind_tools(model, endpoint, request.tools)
    if request.response_format is not None:
        form = request.response_format
        return constrain_to_json_schema(model, endpoint, form.schema_for(endpoint), name=form.name)
    return model


class ChatSend:
    """Sends the attempt's prompt to its endpoint's chat model, within the call timeout."""

    def __init__(self, runtime: FleetRuntime) -> None:
        self.runtime = runtime

    async def send(self, attempt: Attempt) -> BaseMessage:
        """The model's answer (the client's errors and :class:`TimeoutError` pass through)."""
        endpoint, request = attempt.handle.config, attempt.request
        model = chat_model_for(self.runtime, endpoint, request)
        if attempt.affine and attempt.slot is not None:
            model = pin_slot(model, attempt.slot)  # our slot is the server's: keep its cache
        # llama.cpp calls stream, so the client's read timeout only catches stalls; this
        # bounds the whole call.
        async with asyncio.timeout(request.limits.call_timeout_s or endpoint.timeout_s):
            return await ainvoke_chat(model, attempt.prompt, request.runnable_config())


__all__ = ["ChatSend", "bind_tools", "chat_model_for"]
