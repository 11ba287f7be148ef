"""Busy retry: a server whose queue is full is asked again after a backoff.

Ollama answers 503 "server busy" when its queue is full (llama.cpp 503 while loading); the
request is sent again while the slot is held, before the call moves on to the next endpoint.
"""

from __future__ import annotations

import asyncio

from langchain_core.messages import BaseMessage

from endpoints.calls._attempt import Attempt, Sender
from endpoints.clients import is_busy_error

BUSY_BACKOFF_S = 0.5


class BusyRetry:
    """Retries the wrapped sender on "server busy", ``busy_retries`` times at most.

    Args:
        inner: The sender asked again.
        backoff_s: The first wait; each next one is twice as long.
    """

    def __init__(self, inner: Sender, *, backoff_s: float = BUSY_BACKOFF_S) -> None:
        self.inner = inner
        self.backoff_s = backoff_s

    async def send(self, attempt: Attempt) -> BaseMessage:
        """The answer, after up to ``limits.busy_retries`` busy answers."""
        retries = attempt.request.limits.busy_retries
        tried = 0
        while True:
            try:
                return await self.inner.send(attempt)
            except Exception as exc:
                if tried < retries and is_busy_error(exc):
                    await asyncio.sleep(self.backoff_s * 2**tried)
                    tried += 1
                    continue
                raise


__all__ = ["BUSY_BACKOFF_S", "BusyRetry"]
