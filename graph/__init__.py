"""The orchestration graph and its Python API.

Example:
    >>> from graph import run_goal
    >>> result = run_goal("Design a wall hook for a 2 kg bag and plan its print")
    >>> print(result.answer)
"""

from graph._builder import build_graph
from graph.api import NothingToResume, aresume, arun_goal, astream_goal, build_result, run_goal
from graph.calls import check_goal_fits
from graph.context import Context
from graph.events import (
    PhaseStarted,
    PlanReady,
    ProgressEvent,
    RunFinished,
    TaskFallback,
    TaskFinished,
    TaskQueued,
    TaskStarted,
    TaskWaiting,
    parse_event,
)
from graph.images import ImageError
from graph.persistence import CheckpointError, make_checkpointer
from graph.planning import PlanApproval, PlanApprovalRequired, PlanDecision, PlanError
from graph.schemas import Plan, RunMetrics, RunResult, Task, TaskResult
from graph.threads import ThreadInfo, thread_info

__all__ = [
    "CheckpointError",
    "Context",
    "ImageError",
    "NothingToResume",
    "PhaseStarted",
    "Plan",
    "PlanApproval",
    "PlanApprovalRequired",
    "PlanDecision",
    "PlanError",
    "PlanReady",
    "ProgressEvent",
    "RunFinished",
    "RunMetrics",
    "RunResult",
    "Task",
    "TaskFallback",
    "TaskFinished",
    "TaskQueued",
    "TaskResult",
    "TaskStarted",
    "TaskWaiting",
    "ThreadInfo",
    "aresume",
    "arun_goal",
    "astream_goal",
    "build_graph",
    "build_result",
    "check_goal_fits",
    "make_checkpointer",
    "parse_event",
    "run_goal",
    "thread_info",
]
