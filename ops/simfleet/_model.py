"""The timing model: a discrete-event simulation of one endpoint's slots, in simulated time.

Pure and synchronous (no clock, no I/O), so it is exact and deterministic: the HTTP server
advances it to the wall clock, :func:`simulate_offline` runs it to completion at once.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ops.simfleet._spec import SimEndpointSpec

Phase = Literal["queued", "prefill", "decode", "done", "cancelled"]
_EPS = 1e-9


@dataclass(eq=False)
class SimSequence:
    """One request inside the SIMULATED endpoint; all times are simulated seconds.

    Attributes:
        id: Task id (increasing per endpoint).
        prompt_tokens: Prompt size.
        n_predict: Tokens it will generate.
        arrival: When it was submitted.
        phase: ``queued``, ``prefill``, ``decode``, ``done`` or ``cancelled``.
        slot: Slot index while it holds one.
        prefill_left: Prompt tokens still to process.
        decoded: Tokens generated so far (fractional between tokens).
        admitted_at: When it got a slot.
        prefill_done_at: When its prompt was processed.
        finished_at: When it finished or was cancelled.
    """

    id: int
    prompt_tokens: int
    n_predict: int
    arrival: float
    phase: Phase = "queued"
    slot: int | None = None
    prefill_left: float = 0.0
    decoded: float = 0.0
    admitted_at: float | None = None
    prefill_done_at: float | None = None
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        """True once done or cancelled."""
        return self.phase in ("done", "cancelled")

    @property
    def tokens_ready(self) -> int:
        """Whole tokens generated so far."""
        if self.phase == "done":
            return self.n_predict
        return min(self.n_predict, int(self.decoded + _EPS))

    @property
    def queued_s(self) -> float:
        """Seconds spent waiting for a slot."""
        end = self.admitted_at if self.admitted_at is not None else self.finished_at
        return (end - self.arrival) if end is not None else 0.0

    @property
    def prefill_s(self) -> float:
        """Seconds of prompt processing."""
        if self.admitted_at is None or self.prefill_done_at is None:
            return 0.0
        return self.prefill_done_at - self.admitted_at

    @property
    def decode_s(self) -> float:
        """Seconds from the end of prefill to the last token."""
        if self.prefill_done_at is None or self.finished_at is None:
            return 0.0
        return self.finished_at - self.prefill_done_at

    @property
    def total_s(self) -> float:
        """Seconds from arrival to finish."""
        return (self.finished_at - self.arrival) if self.finished_at is not None else 0.0


class SlotModel:
    """Event-driven model of one endpoint's slots, queue, prefill and batched decode.

    Pure and synchronous: time only moves when :meth:`advance` is called, so the same model
    drives the HTTP server (advanced to the wall clock) and :func:`simulate_offline`.
    """

    def __init__(self, spec: SimEndpointSpec) -> None:
        self.spec = spec
        self.now = 0.0
        self.slots: list[SimSequence | None] = [None] * spec.slots
        self.queue: deque[SimSequence] = deque()
        self.changed: set[SimSequence] = set()
        self._ids = itertools.count()
        self.requests_total = 0
        self.prompt_tokens_total = 0
        self.tokens_predicted_total = 0
        self.prompt_seconds_total = 0.0
        self.predicted_seconds_total = 0.0

    # ---- queries ----------------------------------------------------------------------

    def active(self) -> list[SimSequence]:
        """Sequences holding a slot."""
        return [s for s in self.slots if s is not None]

    @property
    def busy_slots(self) -> int:
        """Slots holding a sequence."""
        return sum(1 for s in self.slots if s is not None)

    def decoding(self) -> list[SimSequence]:
        """Sequences currently generating tokens."""
        return [s for s in self.slots if s is not None and s.phase == "decode"]

    def _rates(self) -> tuple[float, float]:
        """(prefill tokens/s per prefilling sequence, decode tokens/s per decoding one)."""
        active = self.active()
        n_prefill = sum(1 for s in active if s.phase == "prefill")
        n_decode = sum(1 for s in active if s.phase == "decode")
        prefill = self.spec.prefill_tok_s / n_prefill if n_prefill else 0.0
        return prefill, self.spec.per_sequence_tok_s(n_decode)

    def _next_completion(self) -> tuple[float, list[SimSequence]]:
        prefill_rate, decode_rate = self._rates()
        best, due = math.inf, []
        for seq in self.active():
            if seq.phase == "prefill":
                dt = seq.prefill_left / prefill_rate if prefill_rate else math.inf
            else:
                left = seq.n_predict - seq.decoded
                dt = left / decode_rate if decode_rate else math.inf
            dt = max(dt, 0.0)
            if dt < best - 1e-12:
                best, due = dt, [seq]
            elif abs(dt - best) <= 1e-12:
                due.append(seq)
        return best, due

    def next_event_time(self) -> float | None:
        """Simulated time of the next phase change, or ``None`` when idle."""
        dt, due = self._next_completion()
        return self.now + dt if due else None

    # ---- changes ----------------------------------------------------------------------

    def submit(self, prompt_tokens: int, n_predict: int, at: float | None = None) -> SimSequence:
        """Queue a request at time ``at`` (default: now); it starts when a slot is free."""
        self.advance(self.now if at is None else at)
        seq = SimSequence(
            id=next(self._ids),
            prompt_tokens=max(0, int(prompt_tokens)),
            n_predict=max(0, int(n_predict)),
            arrival=self.now,
        )
        self.requests_total += 1
        self.queue.append(seq)
        self.changed.add(seq)
        self._admit()
        return seq

    def cancel(self, seq: SimSequence, at: float | None = None) -> None:
        """Drop a request (client gone): leave the queue or free its slot."""
        self.advance(self.now if at is None else at)
        if seq.finished:
            return
        if seq.phase == "queued":
            with contextlib.suppress(ValueError):
                self.queue.remove(seq)
        elif seq.slot is not None:
            self.slots[seq.slot] = None
        seq.phase, seq.slot, seq.finished_at = "cancelled", None, self.now
        self.changed.add(seq)
        self._admit()

    def advance(self, to: float) -> None:
        """Move simulated time to ``to``, processing every event on the way in order."""
        to = max(to, self.now)
        while True:
            self._admit()
            dt, due = self._next_completion()
            if due and self.now + dt <= to:
                self._progress(dt, due)
                self.now += dt
                self._complete(due)
                continue
            self._progress(to - self.now, [])
            self.now = to
            return

    def _admit(self) -> None:
        for index, occupant in enumerate(self.slots):
            if not self.queue:
                return
            if occupant is None:
                seq = self.queue.popleft()
                seq.slot, seq.admitted_at = index, self.now
                seq.phase, seq.prefill_left = "prefill", float(seq.prompt_tokens)
                self.slots[index] = seq
                self.changed.add(seq)

    def _progress(self, dt: float, due: Iterable[SimSequence]) -> None:
        if dt > 0:
            prefill_rate, decode_rate = self._rates()
            for seq in self.active():
                if seq.phase == "prefill":
                    seq.prefill_left = max(0.0, seq.prefill_left - prefill_rate * dt)
                else:
                    seq.decoded = min(float(seq.n_predict), seq.decoded + decode_rate * dt)
        for seq in due:  # land exactly on the event despite float rounding
            if seq.phase == "prefill":
                seq.prefill_left = 0.0
            else:
                seq.decoded = float(seq.n_predict)

    def _complete(self, due: Iterable[SimSequence]) -> None:
        for seq in due:
            if seq.phase == "prefill":
                seq.phase, seq.prefill_done_at = "decode", self.now
                self.prompt_tokens_total += seq.prompt_tokens
                self.prompt_seconds_total += seq.prefill_s
                self.changed.add(seq)
            if seq.phase == "decode" and seq.decoded >= seq.n_predict - _EPS:
                seq.phase, seq.finished_at = "done", self.now
                if seq.slot is not None:
                    self.slots[seq.slot] = None
                seq.slot = None
                self.tokens_predicted_total += seq.n_predict
                self.predicted_seconds_total += seq.decode_s
                self.changed.add(seq)


@dataclass(frozen=True)
class OfflineRequest:
    """A request for :func:`simulate_offline` (times in simulated seconds)."""

    arrival_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 256


def simulate_offline(
    spec: SimEndpointSpec, requests: Sequence[OfflineRequest]
) -> list[SimSequence]:
    """Run the SIMULATED timing model to completion without HTTP or waiting.

    Args:
        spec: The endpoint (its ``time_scale`` is irrelevant here).
        requests: Requests with arrival times; equal arrivals are queued in list order.

    Returns:
        One finished :class:`SimSequence` per request, in the given order, with
        ``admitted_at``, ``prefill_done_at`` and ``finished_at`` set.
    """
    model = SlotModel(spec)
    order = sorted(range(len(requests)), key=lambda i: requests[i].arrival_s)
    results: list[SimSequence | None] = [None] * len(requests)
    for i in order:
        req = requests[i]
        results[i] = model.submit(req.prompt_tokens, req.completion_tokens, at=req.arrival_s)
    while (when := model.next_event_time()) is not None:
        model.advance(when)
    return [seq for seq in results if seq is not None]


def measure_aggregate_decode(spec: SimEndpointSpec, sequences: int, tokens: int = 1000) -> float:
    """Aggregate decode tokens/s the model yields for ``sequences`` identical requests.

    Prompts are empty so the figure is pure decode: total tokens / makespan.
    """
    runs = simulate_offline(spec, [OfflineRequest(0.0, 0, tokens)] * sequences)
    makespan = max(seq.finished_at or 0.0 for seq in runs)
    return sequences * tokens / makespan
