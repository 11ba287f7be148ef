"""Slot limit: a request runs only while it holds a slot of its endpoint's limiter.

The slot is granted by the request's priority, run (least attained service across runs)
and ``slot_order``; with prefix affinity a free slot that last served the prompt's system
prompt is preferred. The slot is released when the request ends, however it ends. A
request whose shared lease was lost mid-call (``LEASE_LOST``) was stopped by the slot
store: it queues again on the same endpoint, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import time

from langchain_core.messages import BaseMessage

from endpoints.calls._attempt import Attempt, AttemptFailed, Sender
from endpoints.fleet import prefix_key
from endpoints.slots import LEASE_LOST

# Times one call goes back to the queue after its shared slot lease was lost mid-call.
MAX_LEASE_REQUEUES = 3


class SlotLimited:
    """Holds a slot of the attempt's endpoint around the wrapped sender.

    Opens the request's record once the slot is granted and closes what the wrapped
    senders left open: ``cancelled``, ``requeued`` (lease lost), ``ok``.
    """

    def __init__(self, inner: Sender, *, max_requeues: int = MAX_LEASE_REQUEUES) -> None:
        self.inner = inner
        self.max_requeues = max_requeues

    async def _acquire(self, attempt: Attempt) -> int:
        request, limiter = attempt.request, attempt.handle.limiter
        attempt.observer.queued(attempt.handle)
        attempt.queues += 1
        queued_at = time.perf_counter()
        try:
            return await limiter.acquire(
                request.limits.slot_timeout_s,
                priority=request.priority,
                run=request.run_id,
                prefer=prefix_key(attempt.prompt) if attempt.affine else None,
                order=request.slot_order,
            )
        finally:
            attempt.queued_s += time.perf_counter() - queued_at

    async def send(self, attempt: Attempt) -> BaseMessage:
        """The answer, sent while holding a slot.

        Raises:
            SlotTimeoutError: No slot was free within ``limits.slot_timeout_s``.
            AttemptFailed: The wrapped sender's failure.
        """
        handle = attempt.handle
        requeues = 0
        while True:
            slot = attempt.slot = await self._acquire(attempt)
            attempt.begin_request(slot)
            try:
                attempt.observer.started(handle, slot, attempt.fallback)
                response = await self.inner.send(attempt)
            except asyncio.CancelledError:
                if not handle.limiter.was_lost(slot) or requeues >= self.max_requeues:
                    attempt.end_request("cancelled", "cancelled")
                    raise
                current = asyncio.current_task()
                # The store's stop is taken back; a cancellation of the caller's that came
                # with it (still counted) wins, else the requeue would swallow it.
                if current is not None and current.uncancel() > 0:
                    attempt.end_request("cancelled", "cancelled")
                    raise
                attempt.end_request("requeued", LEASE_LOST)
                requeues += 1
                continue
            except AttemptFailed as exc:
                attempt.end_request(exc.status, exc.error)  # if no policy closed it
                raise
            except Exception as exc:
                attempt.end_request("rejected", str(exc))  # no policy below: not retried
                raise AttemptFailed("rejected", str(exc)) from exc
            finally:
                handle.limiter.release(slot)
            attempt.end_request("ok", response=response)
            return response


__all__ = ["MAX_LEASE_REQUEUES", "SlotLimited"]
