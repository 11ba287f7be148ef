"""Slow or down: how a failed request counts against its endpoint.

A timeout is "slow", not "down": a quick health probe decides. A slow server is not
benched (the next candidate is tried, no cooldown), and the slot is held until the
server has stopped the abandoned request, so the next task does not queue behind it
inside llama.cpp. Connection errors, 5xx and busy answers are "down" and count towards
the endpoint's cooldown (:meth:`~endpoints.fleet.FleetRuntime.record_failure`); a 4xx is
"rejected" and counts against nothing: the request, not the server, was wrong.
"""

from __future__ import annotations

import asyncio
import logging
import time

from langchain_core.messages import BaseMessage

from endpoints.calls._attempt import Attempt, AttemptFailed, Sender
from endpoints.calls._outcome import CallStatus
from endpoints.clients import is_busy_error, is_endpoint_failure, probes
from endpoints.clients import llamacpp as engine
from endpoints.config import EndpointConfig
from endpoints.fleet import EndpointHandle, FleetRuntime

logger = logging.getLogger("kitty.endpoints")

# After a timeout: poll /slots this long at most for the server to drop the request.
SERVER_STOP_WAIT_S = 2.0
SERVER_STOP_POLL_S = 0.05


def is_timeout(exc: BaseException) -> bool:
    """True for a request that ran out of time (ours, the client's or the socket's)."""
    return isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower()


def describe_error(exc: BaseException, endpoint: EndpointConfig) -> str:
    """One line saying what went wrong with a call to ``endpoint``, and what to do."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    if is_timeout(exc):
        return f"{endpoint.name}: no answer within the timeout ({name})"
    if is_busy_error(exc):
        return f"{endpoint.name}: server busy (queue full): {text or name}"
    if is_endpoint_failure(exc):
        if "connect" in name.lower() or "connection" in text.lower():
            return f"{endpoint.name}: cannot connect to {endpoint.base_url} (server down?)"
        return f"{endpoint.name}: server error: {text or name}"
    return f"{endpoint.name}: request rejected: {text or name}"


async def classify(
    exc: Exception, endpoint: EndpointConfig
) -> tuple[CallStatus, str, probes.QuickHealth | None]:
    """Status and error line of a failed request (and the server's health after a timeout).

    A timeout is "slow" unless a quick health check finds the server down.
    """
    error = describe_error(exc, endpoint)
    if is_timeout(exc):
        health = await probes.quick_health(endpoint)
        if health == "down":
            return "down", f"{error}; the server no longer answers (down?)", health
        return (
            "slow",
            f"{error}; the server is alive, so it is slow, not down: raise task_timeout_s "
            "or lower max_tokens",
            health,
        )
    if is_busy_error(exc):
        return "busy", error, None
    if is_endpoint_failure(exc):
        return "down", error, None
    return "rejected", error, None


async def await_server_stop(handle: EndpointHandle) -> None:
    """Hold our slot until the server has stopped the request we abandoned (bounded).

    llama.cpp stops a slot when it notices the client went away; until then a request
    given our slot would queue behind the dead one inside the server. Done when
    ``/slots`` shows no more busy slots than our other holders, or fewer than at first.
    """
    deadline = time.monotonic() + SERVER_STOP_WAIT_S
    first: int | None = None
    while True:
        busy = await engine.busy_slots(handle.config)
        if busy is None:
            return  # no /slots (Ollama, --no-slots): nothing to watch
        others = handle.limiter.stats().in_use - 1
        if busy <= others or (first is not None and busy < first):
            return
        first = busy if first is None else first
        if time.monotonic() >= deadline:
            logger.info(
                "endpoint %s still busy %.0fs after a timeout", handle.name, SERVER_STOP_WAIT_S
            )
            return
        await asyncio.sleep(SERVER_STOP_POLL_S)


class SlowOrDown:
    """Classifies a failed request, keeps the endpoint's health record, closes the record.

    Success resets the endpoint's failure count; "down" and "busy" count towards its
    cooldown; "slow" counts as slow only, and waits (slot held) for the server to stop
    the abandoned request. Every failure leaves as :class:`AttemptFailed`.
    """

    def __init__(self, runtime: FleetRuntime, inner: Sender) -> None:
        self.runtime = runtime
        self.inner = inner

    async def send(self, attempt: Attempt) -> BaseMessage:
        """The answer; a failed request raises :class:`AttemptFailed` once accounted for."""
        handle = attempt.handle
        try:
            response = await self.inner.send(attempt)
        except Exception as exc:
            status, error, health = await classify(exc, handle.config)
            attempt.end_request(status, error)
            if status == "slow":
                self.runtime.record_slow(handle)
                if health == "up":  # a hung server would not answer /slots either
                    await await_server_stop(handle)
            elif status != "rejected":
                self.runtime.record_failure(handle)
            raise AttemptFailed(status, error) from exc
        self.runtime.record_success(handle, attempt.end_request("ok", response=response))
        return response


__all__ = ["SlowOrDown", "await_server_stop", "classify", "describe_error", "is_timeout"]
