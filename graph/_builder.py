"""Assemble the orchestration ``StateGraph``."""

from __future__ import annotations

from typing import Any, TypeAlias

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from graph._state import InputState, OrchestratorState, OutputState
from graph.context import Context
from graph.execution import agent
from graph.persistence import with_checkpointer
from graph.planning import approval, planner
from graph.synthesis import route_after_synthesis, summarizer, synthesizer

OrchestratorGraph: TypeAlias = CompiledStateGraph[
    OrchestratorState, Context, InputState, OutputState
]
"""The compiled orchestrator: its state, run context, input and output types."""


def build_graph(
    checkpointer: BaseCheckpointSaver | None = None, **compile_kwargs: Any
) -> OrchestratorGraph:
    """Build and compile the orchestrator graph.

    planner -> approval -> (Send x N) agent -> synthesizer -> [summarizer] -> END

    ``approval`` only dispatches unless ``Context.approve_plan`` is on; then it stops the
    run with ``interrupt()`` until the plan is approved, edited or rejected (-> END).

    Args:
        checkpointer: LangGraph checkpointer (SQLite, Postgres, in-memory); ``None`` for
            LangGraph Studio, whose server adds its own.
        **compile_kwargs: Passed to ``StateGraph.compile`` (e.g. ``interrupt_before``).

    Returns:
        The compiled graph; run it with ``context=Context(...)``.
    """
    builder = StateGraph(
        OrchestratorState,
        context_schema=Context,
        input_schema=InputState,
        output_schema=OutputState,
    )
    builder.add_node("planner", planner)
    builder.add_node("approval", approval, destinations=("agent", END))
    builder.add_node("agent", agent)
    builder.add_node("synthesizer", synthesizer)
    builder.add_node("summarizer", summarizer)
    builder.add_edge(START, "planner")
    builder.add_edge("planner", "approval")
    builder.add_edge("agent", "synthesizer")
    builder.add_conditional_edges("synthesizer", route_after_synthesis, ["summarizer", END])
    builder.add_edge("summarizer", END)
    compiled = builder.compile(name="kitty-orchestrator", **compile_kwargs)
    return compiled if checkpointer is None else with_checkpointer(compiled, checkpointer)
