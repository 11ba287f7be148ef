"""One try of a call on one endpoint, and the interface every call wrapper shares.

A wrapper is a :class:`Sender`: it takes an :class:`Attempt` (the endpoint, the prompt
built for it, the request), does its part and hands it on to the sender it wraps, as
pydantic-ai's ``WrapperModel`` does with a request. A request that failed in a way the
next endpoint may not is raised as :class:`AttemptFailed`, already classified.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from langchain_core.messages import BaseMessage

from endpoints.calls._outcome import CallStatus, ModelCall
from endpoints.calls._request import ModelRequest
from endpoints.calls._responses import cached_prompt_tokens
from endpoints.fleet import EndpointHandle


class CallObserver(Protocol):
    """Hooks for progress events around a model call."""

    def queued(self, handle: EndpointHandle) -> None:
        """Waiting for a slot on ``handle``."""

    def started(self, handle: EndpointHandle, slot: int, fallback: bool) -> None:
        """Holding ``slot`` on ``handle``; the request is under way."""

    def finished(self, handle: EndpointHandle, call: ModelCall) -> None:
        """A request on ``handle`` ended (answered, failed or cancelled)."""

    def fell_back(self, handle: EndpointHandle, error: str, next_handle: EndpointHandle) -> None:
        """``handle`` failed with ``error``; ``next_handle`` is tried next."""


class NoObserver:
    """A :class:`CallObserver` that ignores every hook."""

    def queued(self, handle: EndpointHandle) -> None:
        """Ignored."""

    def started(self, handle: EndpointHandle, slot: int, fallback: bool) -> None:
        """Ignored."""

    def finished(self, handle: EndpointHandle, call: ModelCall) -> None:
        """Ignored."""

    def fell_back(self, handle: EndpointHandle, error: str, next_handle: EndpointHandle) -> None:
        """Ignored."""


class AttemptFailed(Exception):
    """A request on one endpoint failed; ``status`` says how, ``error`` what to do.

    ``rejected`` (a 4xx) ends the call: another server would refuse the request too.
    Every other status lets the next candidate endpoint try.
    """

    def __init__(self, status: CallStatus, error: str) -> None:
        super().__init__(error)
        self.status: CallStatus = status
        self.error = error


@dataclass
class Attempt:
    """A call's try on one endpoint: what is sent there, and the requests it made.

    Attributes:
        handle: The endpoint, with its limiter and health record.
        request: The call's request.
        prompt: The messages built for this endpoint.
        observer: Progress hooks.
        fallback: The endpoint is not of the chain's primary tier.
        affine: Our slot numbers are the server's: prefer the slot holding the prompt's
            prefix and name it in the request (``id_slot``).
        slot: The slot held now (or last).
        queues: Times the attempt queued for a slot (a lost lease queues it again).
        queued_s: Seconds spent waiting for slots.
        calls: One record per request, in order.
    """

    handle: EndpointHandle
    request: ModelRequest
    prompt: Sequence[BaseMessage]
    observer: CallObserver = field(default_factory=NoObserver)
    fallback: bool = False
    affine: bool = False
    slot: int | None = None
    queues: int = 0
    queued_s: float = 0.0
    calls: list[ModelCall] = field(default_factory=list)
    _open: ModelCall | None = None
    _started: float = 0.0

    def begin_request(self, slot: int) -> None:
        """A request starts on ``slot``: open its record."""
        self._open = ModelCall(endpoint=self.handle.name, slot=slot, started_at=time.time())
        self._started = time.perf_counter()

    @property
    def request_open(self) -> bool:
        """True while a request's record waits for how it ended."""
        return self._open is not None

    def end_request(
        self,
        status: CallStatus,
        error: str | None = None,
        *,
        response: BaseMessage | None = None,
    ) -> float:
        """Close the open request's record (once) and report it; return its latency."""
        call = self._open
        if call is None:
            return 0.0
        self._open = None
        call.latency_s = time.perf_counter() - self._started
        call.status, call.error = status, error
        if response is not None:
            call.cached_prompt_tokens = cached_prompt_tokens(response)
        self.calls.append(call)
        self.observer.finished(self.handle, call)
        return call.latency_s


class Sender(Protocol):
    """Sends an attempt's request (or hands it on, doing one part of the work)."""

    async def send(self, attempt: Attempt) -> BaseMessage:
        """The answer of the endpoint.

        Raises:
            AttemptFailed: The request failed (classified).
            SlotTimeoutError: No slot was free in time.
        """
        ...


__all__ = ["Attempt", "AttemptFailed", "CallObserver", "NoObserver", "Sender"]
