"""Graph nodes: planner, dispatch, agent task, synthesizer, summarizer.

One module per concept: :mod:`~graph.nodes.planning` (planner),
:mod:`~graph.nodes.tasks` (dispatch + agent node), :mod:`~graph.nodes.synthesis`
(synthesizer + summarizer), :mod:`~graph.nodes.common` (settings, fleet setup, events).
"""

from graph.nodes.common import (
    context_of,
    emit,
    prepare_fleet,
)
from graph.nodes.planning import make_plan, plan_json_schema, planner
from graph.nodes.synthesis import (
    fallback_answer,
    route_after_synthesis,
    summarizer,
    synthesis_messages,
    synthesizer,
)
from graph.nodes.tasks import agent, dispatch, run_task

__all__ = [
    "agent",
    "context_of",
    "dispatch",
    "emit",
    "fallback_answer",
    "make_plan",
    "plan_json_schema",
    "planner",
    "prepare_fleet",
    "route_after_synthesis",
    "run_task",
    "summarizer",
    "synthesis_messages",
    "synthesizer",
]
