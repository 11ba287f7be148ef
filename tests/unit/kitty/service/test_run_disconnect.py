"""A run cancelled by a client's disconnect stops once and ends before its request does.

A second cancellation of the run task, while LangGraph cancels and awaits the run's node
tasks, cuts that cleanup short: the node tasks go on running, holding their endpoint
slots, after the run reported itself cancelled (the service then still showed a slot
in use long after the client left).
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from endpoints.slots._store import LocalSlots
from kitty.service._runs import until_disconnect


class _Request:
    """The part of a Starlette request that ``until_disconnect`` reads."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def test_a_cancelled_request_lets_the_run_finish_its_cleanup() -> None:
    request = _Request()
    cleanup_started, finish_cleanup = asyncio.Event(), asyncio.Event()
    cleaned: list[bool] = []

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleanup_started.set()
            await finish_cleanup.wait()  # a second cancel would interrupt this
            cleaned.append(True)
            raise

    handler = asyncio.create_task(until_disconnect(request, work()))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    request.gone.set()
    await cleanup_started.wait()
    handler.cancel()  # e.g. the server shutting down while the run stops
    asyncio.get_running_loop().call_later(0.05, finish_cleanup.set)
    await asyncio.wait({handler})
    assert cleaned == [True]
    assert handler.cancelled()  # the caller's own cancellation is not lost


class _State(TypedDict):
    results: Annotated[list[int], operator.add]


def _graph(slots: LocalSlots, node_stopping: asyncio.Event, let_stop: asyncio.Event) -> Any:
    async def agent(state: _State) -> dict[str, Any]:
        slot = await slots.acquire(5)
        try:
            get_stream_writer()({"kind": "task_started"})
            await asyncio.Event().wait()  # a long model call
        except asyncio.CancelledError:
            node_stopping.set()
            await let_stop.wait()  # closing the connection takes a few loop turns
            raise
        finally:
            slots.release(slot)
        return {"results": [1]}

    graph = StateGraph(_State)
    graph.add_node("agent", agent)
    graph.add_conditional_edges(START, lambda _: [Send("agent", {})], ["agent"])
    graph.add_edge("agent", END)
    return graph.compile()


async def test_no_node_task_holds_a_slot_once_the_request_has_ended() -> None:
    slots = LocalSlots("coder", 1)
    node_stopping, let_stop = asyncio.Event(), asyncio.Event()
    graph = _graph(slots, node_stopping, let_stop)
    request = _Request()

    async def run() -> None:
        async for mode, _chunk in graph.astream({"results": []}, stream_mode=["custom", "values"]):
            if mode == "custom":
                request.gone.set()  # the client leaves once the task holds its slot

    handler = asyncio.create_task(until_disconnect(request, run()))  # type: ignore[arg-type]
    await node_stopping.wait()  # LangGraph is cancelling (and awaiting) the node task
    handler.cancel()
    asyncio.get_running_loop().call_later(0.05, let_stop.set)
    await asyncio.wait({handler})
    assert slots.stats().in_use == 0
    assert handler.cancelled()
