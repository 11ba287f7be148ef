"""Running a stream's steps under a parent span without attaching it to the consumer.

A run is streamed from an async generator; a span made current there would be current
in its consumer too between items, and detached from another context when the consumer
moves on. Here each step of the inner stream runs as its own asyncio task in one private
context where the span is current: whatever the step starts (LangGraph's node tasks copy
the context they are created in) is the span's child, and the consumer's context stays
as it was.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncGenerator
from typing import TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace

T = TypeVar("T")


async def _step(stream: AsyncGenerator[T, None]) -> tuple[T] | None:
    """The next item (in a tuple), or ``None`` at the end (a result, not a task's error)."""
    try:
        return (await anext(stream),)
    except StopAsyncIteration:
        return None


async def _close(stream: AsyncGenerator[T, None]) -> None:
    await stream.aclose()


async def under_span(span: trace.Span, stream: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """The items of ``stream``, each step run with ``span`` as the current span.

    A span that records nothing (tracing off) costs nothing: the stream is passed
    through. ``stream`` is closed (in the span's context) when this generator is.
    """
    if not span.is_recording():
        try:
            async for item in stream:
                yield item
        finally:
            await stream.aclose()
        return
    # One private context for every step: a context variable the stream sets in one step
    # (LangChain's run config) is still there, in the same context, in the next one.
    steps = contextvars.copy_context()
    steps.run(otel_context.attach, trace.set_span_in_context(span))
    try:
        while True:
            # Awaiting the task passes a cancellation of the consumer on to it.
            step = await asyncio.create_task(_step(stream), context=steps)
            if step is None:
                return
            yield step[0]
    finally:
        await asyncio.create_task(_close(stream), context=steps)


__all__ = ["under_span"]
