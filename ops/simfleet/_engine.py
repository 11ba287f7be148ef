"""The live engine: a :class:`SlotModel` advanced by the event loop's (scaled) clock."""

from __future__ import annotations

import asyncio
import contextlib

from ops.simfleet._model import SimSequence, SlotModel
from ops.simfleet._spec import SimEndpointSpec


class SimEngine:
    """Drives a :class:`SlotModel` in real time (scaled) on the running event loop."""

    def __init__(self, spec: SimEndpointSpec) -> None:
        self.spec = spec
        self.model = SlotModel(spec)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._events: dict[SimSequence, asyncio.Event] = {}
        self._streaming: set[SimSequence] = set()

    def _ensure_started(self) -> None:
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop, self._t0 = loop, loop.time()
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run(), name=f"simfleet-{self.spec.name}")

    def now(self) -> float:
        """Simulated seconds since the engine started."""
        self._ensure_started()
        assert self._loop is not None
        return (self._loop.time() - self._t0) / self.spec.time_scale

    def sync(self) -> SlotModel:
        """Advance the model to now and return it (for ``/slots``, ``/metrics``)."""
        self.model.advance(self.now())
        self._notify()
        return self.model

    def submit(self, prompt_tokens: int, n_predict: int, *, streaming: bool) -> SimSequence:
        """Queue a request now."""
        seq = self.model.submit(prompt_tokens, n_predict, at=self.now())
        self._events[seq] = asyncio.Event()
        if streaming:
            self._streaming.add(seq)
        self._notify()
        return seq

    async def wait_change(self, seq: SimSequence) -> None:
        """Wait until the sequence changed phase or (streaming) produced tokens."""
        event = self._events.get(seq)
        if event is None or seq.finished:
            return
        await event.wait()
        event.clear()

    async def wait_done(self, seq: SimSequence) -> None:
        """Wait until the sequence finished or was cancelled."""
        while not seq.finished:
            await self.wait_change(seq)

    def cancel(self, seq: SimSequence) -> None:
        """Drop a request whose client went away."""
        if not seq.finished:
            self.model.cancel(seq, at=self.now())
            self._notify()

    def release(self, seq: SimSequence) -> None:
        """Forget a sequence once its response is out."""
        self._events.pop(seq, None)
        self._streaming.discard(seq)

    def abort_all(self) -> None:
        """Cancel every queued and running request (server shutting down)."""
        if self._task is None:
            return
        for seq in [*self.model.queue, *self.model.active()]:
            self.model.cancel(seq, at=self.now())
        self._notify()

    def _notify(self) -> None:
        for seq in self.model.changed:
            event = self._events.get(seq)
            if event is not None:
                event.set()
        self.model.changed.clear()
        for seq in self._streaming:
            if seq.phase == "decode":
                self._events[seq].set()
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            now = self.now()
            self.model.advance(now)
            self._notify()
            upcoming = self.model.next_event_time()
            timeout = None if upcoming is None else max(0.0, upcoming - now) * self.spec.time_scale
            if any(seq.phase == "decode" for seq in self._streaming):
                tick = self.spec.stream_tick_s
                timeout = tick if timeout is None else min(timeout, tick)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    async def aclose(self) -> None:
        """Stop the engine task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
