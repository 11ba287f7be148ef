"""Failure bookkeeping per server: a circuit breaker that tells "down" from "slow".

With a shared slot store (Redis) a cooldown one process decides reaches the others
through the store (:meth:`EndpointHealth.shared_cooldown`), so every orchestrator on the
fleet benches a failing server at once instead of each finding out on its own.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class EndpointHealth:
    """Failure bookkeeping for one server (a circuit breaker).

    Attributes:
        consecutive_failures: Endpoint failures (down: connection refused, 5xx) since the
            last success. Timeouts of a live server are "slow" and do not count.
        cooldown_until: ``time.monotonic()`` before which routing avoids the server.
        latencies_s: Recent successful request latencies.
        slow_calls: Calls that ran past their timeout while the server stayed alive.
    """

    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=20))
    slow_calls: int = 0

    def shared_cooldown(self, seconds: float) -> None:
        """Apply a cooldown decided by another process sharing the slot store (0: cleared)."""
        if seconds > 0:
            self.cooldown_until = max(self.cooldown_until, time.monotonic() + seconds)
        else:
            self.cooldown_until = 0.0
            self.consecutive_failures = 0

    def cooling_down(self, now: float | None = None) -> bool:
        """True while the server is benched after repeated failures."""
        return (now if now is not None else time.monotonic()) < self.cooldown_until

    @property
    def recent_latency_s(self) -> float | None:
        """Mean of recent successful latencies, if any."""
        return sum(self.latencies_s) / len(self.latencies_s) if self.latencies_s else None
