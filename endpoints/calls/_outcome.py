"""What a model call produced: one outcome record, and one record per request.

:class:`CallOutcome` is what the graph reads back; each :class:`ModelCall` in it says which
endpoint and slot a request ran on, for how long, and how it ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from langchain_core.messages import BaseMessage
from pydantic import BaseModel

CallStatus = Literal["ok", "slow", "down", "busy", "rejected", "cancelled", "requeued"]


class ModelCall(BaseModel):
    """One request of a task to one endpoint, while holding one of its slots.

    Attributes:
        endpoint: Endpoint name.
        slot: Our slot number on it.
        started_at: Epoch seconds when the request started.
        latency_s: Seconds until it answered, failed or was cancelled.
        status: ``ok``, ``slow`` (timed out, server alive), ``down`` (connection error,
            5xx), ``busy`` (server queue full), ``rejected`` (4xx), ``cancelled`` or
            ``requeued`` (its shared slot lease was lost mid-call: stopped, asked again).
        error: What went wrong, if anything.
        cached_prompt_tokens: Prompt tokens the server served from its prompt cache
            (llama.cpp's ``cached_tokens`` / ``timings.cache_n``; 0 when not reported).
    """

    endpoint: str
    slot: int | None = None
    started_at: float
    latency_s: float = 0.0
    status: CallStatus = "ok"
    error: str | None = None
    cached_prompt_tokens: int = 0


@dataclass
class CallOutcome:
    """What a model call produced, successful or not.

    ``latency_s`` sums the requests of :attr:`calls`; each record says which endpoint
    spent how long. ``prepare_s`` is the time spent preparing requests (ranking the
    candidates, building prompts with their token counts), ``queued_s`` the time spent
    waiting for slots.
    """

    ok: bool
    text: str = ""
    reasoning: str | None = None
    error: str | None = None
    endpoint: str | None = None
    tier: str | None = None
    slot: int | None = None
    model: str | None = None
    fallback_used: bool = False
    attempts: list[str] = field(default_factory=list)
    calls: list[ModelCall] = field(default_factory=list)
    prepare_s: float = 0.0
    queued_s: float = 0.0
    latency_s: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    finish_reason: str | None = None
    message: BaseMessage | None = None

    @property
    def truncated(self) -> bool:
        """True when the answer stopped at the completion cap."""
        return self.finish_reason == "length"


__all__ = ["CallOutcome", "CallStatus", "ModelCall"]
