"""Admission: at most N runs in flight; the next one is told to come back later (429).

The endpoint slot limiters already queue tasks beyond the fleet's slots, but without a
bound on whole runs a burst of requests piles up there without end (each holding its
connection, its plan and its waiting tasks). Refusing early with ``Retry-After`` lets a
client back off instead.
"""

from __future__ import annotations

from service.errors import RequestError


class RunAdmission:
    """Counts runs in flight against a cap (one per service; one event loop).

    Args:
        limit: Most runs in flight at once; ``0`` means no limit.
        retry_after_s: Seconds a refused client is told to wait.
    """

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    def admit(self) -> AdmissionTicket:
        """Take a place for one run; give it back with :meth:`AdmissionTicket.release`.

        Raises:
            RequestError: 429 with ``Retry-After``: ``limit`` runs are already in flight.
        """
        if self.limit and self.in_flight >= self.limit:
            raise RequestError(
                429,
                f"the service is running {self.in_flight} runs, its limit; retry in "
                f"{self.retry_after_s} s (the operator can raise --max-concurrent-runs)",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.in_flight += 1
        return AdmissionTicket(self)


class AdmissionTicket:
    """One admitted run's place; :meth:`release` is idempotent."""

    def __init__(self, admission: RunAdmission) -> None:
        self._admission: RunAdmission | None = admission

    def release(self) -> None:
        """Give the place back (later calls do nothing)."""
        if self._admission is not None:
            self._admission.in_flight -= 1
            self._admission = None
