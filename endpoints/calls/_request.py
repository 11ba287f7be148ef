"""What a model call asks for, as one typed request.

The tier chain, the model's settings, tools or a response format, the slot's priority and
run, and the limits of the wait and of the request.

One typed :class:`ModelRequest` replaces a dozen keyword arguments; its parts are frozen,
so a caller derives a variant with :func:`dataclasses.replace` (a tool round with its own
cap, say) without touching the original.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool

from endpoints.config import EndpointConfig, ThinkingLevel
from endpoints.slots import SlotOrder

MessageBuilder = Callable[[EndpointConfig], Awaitable[Sequence[BaseMessage]]]
"""``endpoint -> messages``: the prompt for one candidate endpoint (budgets differ by
context). Raising :class:`~kitty.errors.PromptTooLong` skips that endpoint."""


@dataclass(frozen=True)
class ModelSettings:
    """How the chat model is built for each endpoint tried (as for ``make_chat_model``).

    Attributes:
        temperature: Sampling temperature.
        max_tokens: Completion cap (``None``: the server's default).
        thinking: Reasoning effort (``None``: the endpoint's setting).
        extra: Engine parameters merged into the request body.
        timeout_s: The client's request timeout (``None``: the endpoint's ``timeout_s``).
    """

    temperature: float = 0.7
    max_tokens: int | None = None
    thinking: ThinkingLevel | None = None
    extra: dict[str, Any] | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class CallLimits:
    """How long a call may wait and run, and how often a busy server is asked again.

    Attributes:
        slot_timeout_s: Most seconds to wait for a slot on one endpoint (``None``: forever).
        call_timeout_s: Most seconds one request may take (``None``: the endpoint's
            ``timeout_s``). It bounds the whole streamed answer, not only a read.
        busy_retries: Retries with backoff on "server busy" before moving on.
    """

    slot_timeout_s: float | None = 600.0
    call_timeout_s: float | None = None
    busy_retries: int = 3


@dataclass(frozen=True)
class ToolBinding:
    """Tools offered to one call, and how each endpoint takes them.

    Attributes:
        tools: The tools offered.
        choice: The wire ``tool_choice``: ``auto`` or ``required``.
        call_schema: A JSON schema of one call, for servers that do not parse tool calls
            themselves: the answer is then constrained to it.
        native: Endpoint name -> whether its server parses tool calls itself (read when
            the model is built, so a caller may change it between calls).
    """

    tools: Sequence[BaseTool]
    choice: Literal["auto", "required"]
    call_schema: dict[str, Any]
    native: Mapping[str, bool]


@dataclass(frozen=True)
class ResponseFormat:
    """A JSON schema the answer must match.

    Attributes:
        name: The schema's name on the wire.
        schema: The schema.
        loose_schema: A looser one for engines whose grammar may lack tuples (Ollama);
            ``None``: the same schema everywhere.
    """

    name: str
    schema: dict[str, Any]
    loose_schema: dict[str, Any] | None = None

    def schema_for(self, endpoint: EndpointConfig) -> dict[str, Any]:
        """The schema that ``endpoint``'s engine can take."""
        if endpoint.kind == "ollama" and self.loose_schema is not None:
            return self.loose_schema
        return self.schema


@dataclass(frozen=True)
class ModelRequest:
    """One model call on a tier chain.

    Attributes:
        tiers: Tier chain, primary first (an agent's primary and fallback tiers).
        model: The chat model's settings.
        limits: Slot wait, request time, busy retries.
        tools: Tools offered (``None``: a plain call).
        response_format: A schema the answer must match (``None``: free text).
        priority: Slot priority: a higher one is granted first (a task's later tool
            rounds go ahead of tasks that have not started).
        run_id: The run whose attained service orders this call among other runs'
            (``None``: no fairness term); also sent as ``kitty_run_id`` metadata.
        slot_order: ``priority`` or ``fifo`` (the run's ``slot_order`` setting).
        tags: LangChain run tags (they show in the ``messages`` stream).
        metadata: LangChain run metadata.
    """

    tiers: Sequence[str]
    model: ModelSettings = ModelSettings()
    limits: CallLimits = CallLimits()
    tools: ToolBinding | None = None
    response_format: ResponseFormat | None = None
    priority: float = 0.0
    run_id: str | None = None
    slot_order: SlotOrder = "priority"
    tags: Sequence[str] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def runnable_config(self) -> RunnableConfig:
        """The LangChain config of the request: tags, and metadata naming the run."""
        metadata = dict(self.metadata)
        if self.run_id:
            metadata.setdefault("kitty_run_id", self.run_id)
        return {"tags": list(self.tags), "metadata": metadata}


__all__ = [
    "CallLimits",
    "MessageBuilder",
    "ModelRequest",
    "ModelSettings",
    "ResponseFormat",
    "ToolBinding",
]
