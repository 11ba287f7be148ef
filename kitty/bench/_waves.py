"""The superstep-waves baseline: the naive LangGraph fan-out of the original sketch.

A ``schedule`` node finds the tasks whose dependencies are all done and ``Send``s only
those to a ``worker`` node; the workers of one superstep all finish before ``schedule``
runs again, so every wave waits for its slowest task. Workers use the product's endpoint
limiters (:class:`~endpoints.fleet._routing.FleetRuntime`) and chat models
(:func:`~endpoints.clients._chat_models.make_chat_model`) with the product's prompts: only the
scheduling differs from the product's graph.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any, TypeAlias, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send

from agents.registry import DEFAULT_AGENTS
from endpoints.clients import make_chat_model
from endpoints.fleet import get_runtime
from endpoints.runtime import RuntimeSlot, process_runtime
from graph import Task
from kitty.bench._prompting import DepOutput, as_langchain, task_messages
from kitty.bench._records import TaskSpan, VariantRun


def _merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


class WaveState(TypedDict, total=False):
    """Graph state: the DAG, the goal and the finished tasks."""

    fleet: str
    goal: str
    tasks: list[Task]
    done: Annotated[dict[str, dict[str, Any]], _merge]


class WorkerInput(TypedDict):
    """One ``Send`` payload."""

    fleet: str
    goal: str
    task: Task
    deps: dict[str, DepOutput]


def schedule(state: WaveState) -> dict[str, Any]:
    """Superstep barrier: nothing to compute, the routing below picks the wave."""
    return {}


def next_wave(state: WaveState) -> list[Send] | str:
    """Send the tasks whose dependencies are all done; end when every task is done."""
    done = state.get("done") or {}
    tasks = state["tasks"]
    if len(done) == len(tasks):
        return END
    ready = [t for t in tasks if t.id not in done and all(d in done for d in t.dependencies)]
    return [
        Send(
            "worker",
            {
                "fleet": state["fleet"],
                "goal": state["goal"],
                "task": task,
                "deps": {d: DepOutput(**done[d]["output"]) for d in task.dependencies},
            },
        )
        for task in ready
    ]


# LangGraph's node protocols name the first parameter ``state`` (here: one Send payload).
async def worker(state: WorkerInput) -> dict[str, Any]:
    """Run one task: a slot of its endpoint's limiter, then its chat model."""
    task = state["task"]
    spec = DEFAULT_AGENTS[task.agent]
    runtime = get_runtime(state["fleet"])
    handle = runtime.candidates([spec.primary_tier])[0]
    messages = as_langchain(task_messages(task, state["goal"], state["deps"]))
    model = make_chat_model(
        handle.config,
        temperature=spec.temperature,
        max_tokens=task.max_tokens or spec.max_tokens,
        extra=task.extra or None,
    )
    async with handle.limiter.slot():
        started = time.time()
        response = await model.ainvoke(messages)
        finished = time.time()
    usage: Mapping[str, Any] = response.usage_metadata or {}
    span = TaskSpan(
        task_id=task.id,
        endpoint=handle.name,
        started_at=started,
        finished_at=finished,
        prompt_tokens=int(usage.get("input_tokens") or 0),
        completion_tokens=int(usage.get("output_tokens") or 0),
    )
    text = response.content if isinstance(response.content, str) else str(response.content)
    output = {"agent": task.agent, "text": text}
    return {"done": {task.id: {"output": output, "span": span}}}


WavesGraph: TypeAlias = CompiledStateGraph[WaveState, None, WaveState, WaveState]


def build_waves_graph() -> WavesGraph:
    """The waves graph: schedule -> (Send x ready) worker -> schedule ... -> END."""
    builder = StateGraph(WaveState)
    builder.add_node("schedule", schedule)
    builder.add_node("worker", worker)
    builder.add_edge(START, "schedule")
    builder.add_conditional_edges("schedule", next_wave, ["worker", END])
    builder.add_edge("worker", "schedule")
    return builder.compile(name="waves-baseline")


_COMPILED = RuntimeSlot("the waves baseline graph, compiled once", build_waves_graph)


async def run_waves(tasks: list[Task], goal: str, fleet: str) -> VariantRun:
    """Run a DAG wave by wave (the graph is compiled once, outside the timing)."""
    compiled = process_runtime().get(_COMPILED)
    await get_runtime(fleet).discover()  # limiters sized from the servers, as the product
    state: WaveState = {"fleet": fleet, "goal": goal, "tasks": tasks, "done": {}}
    began = time.perf_counter()
    try:
        final = await compiled.ainvoke(state, {"recursion_limit": 10_000})
    except Exception as exc:  # report, don't crash the whole benchmark
        return VariantRun("waves", time.perf_counter() - began, [], repr(exc))
    wall = time.perf_counter() - began
    spans = [entry["span"] for entry in final["done"].values()]
    texts = {k: entry["output"]["text"] for k, entry in final["done"].items()}
    return VariantRun("waves", wall, spans, outputs=texts)
