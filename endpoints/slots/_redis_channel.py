"""The slot store's pub/sub channel: grant messages and endpoint cooldowns shared by all.

Every process sharing a Redis slot store listens on one channel. ``grant <id> <id>...``
(published by the lease scripts, :mod:`endpoints.slots._redis_scripts`) wakes the waiters
granted; ``cool <server key> <seconds>`` tells every process that a server is benched
(0 clears it), so a server failing for one process is skipped by all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from endpoints.slots._redis_faults import STORE_ERRORS

CooldownListener = Callable[[str, float], None]
RETRY_S = 0.5


class StoreChannel:
    """One process's end of the store channel.

    Args:
        name: The channel name.
        on_grant: Called with the lease ids of a grant message.
        went_down: Called with a Redis error; returns True when it is fatal (stop).
    """

    def __init__(
        self,
        name: str,
        on_grant: Callable[[list[str]], None],
        went_down: Callable[[BaseException], bool],
    ) -> None:
        self.name = name
        self._on_grant = on_grant
        self._went_down = went_down
        self._cooldown_listeners: list[CooldownListener] = []

    def watch(self, listener: CooldownListener) -> None:
        """Call ``listener(key, seconds)`` when any process benches (or clears) a server."""
        self._cooldown_listeners.append(listener)

    async def listen(self, client: Any) -> None:
        """Receive messages until cancelled (or Redis refuses us); reconnects on errors."""
        while True:
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.name)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                    if message and message.get("type") == "message":
                        self.on_message(str(message["data"]))
            except STORE_ERRORS as exc:
                if self._went_down(exc):
                    return
                await asyncio.sleep(RETRY_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def on_message(self, data: str) -> None:
        """Act on one message of the channel."""
        kind, _, rest = data.partition(" ")
        if kind == "grant":
            self._on_grant(rest.split())
        elif kind == "cool":
            key, _, seconds = rest.rpartition(" ")
            for listener in list(self._cooldown_listeners):
                listener(key, float(seconds))

    async def publish_cooldown(self, client: Any, key: str, seconds: float) -> None:
        """Tell every process that server ``key`` is benched for ``seconds`` (0: clear)."""
        try:
            await client.publish(self.name, f"cool {key} {seconds:.3f}")
        except STORE_ERRORS as exc:
            self._went_down(exc)
