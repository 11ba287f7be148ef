"""The orchestration graph and its Python API: the one surface users, the CLI and the service use.

Everything a caller needs is importable from ``graph`` itself; the subpackages behind it
(planning, execution, calls, tools, images, persistence) are internals. The one exception is
:mod:`graph.charts`, which needs the ``charts`` extra (matplotlib).

Running a goal:
    :func:`run_goal` (sync, works in Jupyter), :func:`arun_goal`, :func:`astream_goal`
    (typed progress events), :func:`aresume` (continue an interrupted thread),
    :func:`final_result` (the result at the end of an event stream), :func:`build_result`
    (a result from the graph's final state), :func:`build_graph` (the compiled LangGraph),
    :func:`check_goal_fits`.

Settings:
    :class:`Context` (one run's settings), :func:`make_context`, :data:`MAX_TASKS`;
    :class:`ConversationTurn` and :data:`MAX_CONVERSATION_TURNS` (a chat's earlier turns).

Records a run returns:
    :class:`RunResult`, :class:`TaskResult`, :class:`RunMetrics`, :class:`EndpointUsage`,
    :class:`ToolCallRecord`, :class:`Plan`, :class:`Task`, :data:`TaskStatus`;
    :func:`compute_metrics`; :func:`answer_was_cut`. A task's model calls (``TaskResult.calls``) are
    :class:`endpoints.ModelCall` records.

Progress events (:data:`ProgressEvent`, one discriminated union on ``kind``):
    :class:`PlanReady`, :class:`TaskWaiting`, :class:`TaskQueued`, :class:`TaskStarted`,
    :class:`TaskFallback`, :class:`TaskToolCall`, :class:`TaskFinished`,
    :class:`PhaseStarted`, :class:`RunFinished`; :func:`parse_event` reads one back.

Plans and approval:
    :class:`PlanApproval`, :class:`PlanDecision`, :func:`check_given_plan`,
    :func:`parse_decision`.

Images:
    :class:`ImageRecord`, :data:`ImageSource`, :class:`ImageLimits`, :func:`load_images`.

Durable runs:
    :func:`make_checkpointer`, :data:`MEMORY`, :data:`CHECKPOINTS_ENV_VAR`,
    :func:`check_location`, :func:`default_checkpoint_location`,
    :func:`describe_location`, :func:`delete_threads_older_than`, :class:`ThreadInfo`,
    :func:`thread_info`.

Errors (all in the tree of :mod:`kitty.errors`):
    :class:`PlanError`, :class:`PlanApprovalRequired`, :class:`NothingToResume`,
    :class:`CheckpointError`, :class:`ImageError`.

Example:
    >>> from graph import run_goal
    >>> result = run_goal("Design a wall hook for a 2 kg bag and plan its print")
    >>> print(result.answer)
"""

from graph._builder import build_graph
from graph.api import (
    aresume,
    arun_goal,
    astream_goal,
    build_result,
    final_result,
    make_context,
    run_goal,
)
from graph.budgets import check_goal_fits
from graph.context import MAX_CONVERSATION_TURNS, MAX_TASKS, Context, ConversationTurn
from graph.events import (
    AnswerDelta,
    PhaseStarted,
    PlanReady,
    ProgressEvent,
    RunFinished,
    TaskFallback,
    TaskFinished,
    TaskQueued,
    TaskStarted,
    TaskToolCall,
    TaskWaiting,
    parse_event,
)
from graph.images import ImageError, ImageLimits, ImageRecord, ImageSource, load_images
from graph.metrics import compute_metrics
from graph.persistence import (
    CHECKPOINTS_ENV_VAR,
    MEMORY,
    CheckpointError,
    check_location,
    default_checkpoint_location,
    delete_threads_older_than,
    describe_location,
    make_checkpointer,
)
from graph.planning import (
    PlanApproval,
    PlanApprovalRequired,
    PlanDecision,
    PlanError,
    check_given_plan,
    parse_decision,
)
from graph.schemas import (
    EndpointUsage,
    Plan,
    RunMetrics,
    RunResult,
    Task,
    TaskResult,
    TaskStatus,
    ToolCallRecord,
)
from graph.synthesis import answer_was_cut
from graph.threads import ThreadInfo, thread_info
from kitty.errors import NothingToResume

__all__ = [
    "CHECKPOINTS_ENV_VAR",
    "MAX_CONVERSATION_TURNS",
    "MAX_TASKS",
    "MEMORY",
    "AnswerDelta",
    "CheckpointError",
    "Context",
    "ConversationTurn",
    "EndpointUsage",
    "ImageError",
    "ImageLimits",
    "ImageRecord",
    "ImageSource",
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
    "TaskStatus",
    "TaskToolCall",
    "TaskWaiting",
    "ThreadInfo",
    "ToolCallRecord",
    "answer_was_cut",
    "aresume",
    "arun_goal",
    "astream_goal",
    "build_graph",
    "build_result",
    "check_given_plan",
    "check_goal_fits",
    "check_location",
    "compute_metrics",
    "default_checkpoint_location",
    "delete_threads_older_than",
    "describe_location",
    "final_result",
    "load_images",
    "make_checkpointer",
    "make_context",
    "parse_decision",
    "parse_event",
    "run_goal",
    "thread_info",
]
