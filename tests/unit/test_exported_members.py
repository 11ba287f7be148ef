"""The public surface of each package, pinned (in the manner of httpx's exported-members test).

A name added to or dropped from a package's ``__all__`` fails here until this list changes
with it, so the surface only moves on purpose. Every exported class or function is defined
inside its package, except the error classes: they live in the one tree of
:mod:`kitty.errors` and are re-exported where they are raised. Nothing public in a package
namespace is left out of its ``__all__``.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from types import ModuleType

import pytest

ERROR_TREE = "kitty.errors"

SURFACES: dict[str, list[str]] = {
    "graph": [
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
    ],
    "endpoints": [
        "DEFAULT_FLEET",
        "FLEET_ENV_VAR",
        "LOCAL_STORE",
        "REDIS_COMMAND_TIMEOUT_S",
        "REDIS_CONNECT_TIMEOUT_S",
        "SLOT_STORE_ENV",
        "CallLimits",
        "CallOutcome",
        "CoordinationConfig",
        "EndpointConfig",
        "EndpointHandle",
        "EndpointHealth",
        "EndpointStatus",
        "FetchSettings",
        "FleetConfig",
        "FleetError",
        "FleetRuntime",
        "LaunchSettings",
        "LimiterStats",
        "ModelCall",
        "ModelRequest",
        "ModelSettings",
        "ResponseFormat",
        "SlotLimiter",
        "SlotTimeoutError",
        "TierConfig",
        "ToolBinding",
        "available_profiles",
        "call_tiers",
        "get_runtime",
        "health_for",
        "hide_password",
        "is_busy_error",
        "is_endpoint_failure",
        "load_fleet",
        "make_chat_model",
        "probe_all",
        "probe_endpoint",
    ],
    "agents": [
        "DEFAULT_AGENT",
        "DEFAULT_AGENTS",
        "AgentSpec",
        "FallbackStep",
        "fallback_steps",
        "validate_agents",
    ],
    "ops": [
        "GIB",
        "EmbeddedFleet",
        "EmbeddedFleetError",
        "EndpointMemory",
        "FleetMemoryPlan",
        "SeedComparison",
        "compare_with_seed",
        "ensure_embedded_fleet",
        "gib",
        "llama_server_args",
        "machine_memory_bytes",
        "memory_override_bytes",
        "plan_fleet",
        "port_is_free",
        "render_launch_script",
        "resolve_model_path",
        "stop_shared_fleets",
        "write_launch_script",
    ],
    "kitty.errors": [
        "CheckpointError",
        "EmbeddedFleetError",
        "EndpointHTTPError",
        "FleetError",
        "InternalError",
        "KittyError",
        "NothingToResume",
        "PlanApprovalRequired",
        "PlanError",
        "PromptTooLong",
        "SettingsError",
        "SimFleetError",
        "SlotTimeoutError",
        "ToolError",
        "ToolSourceError",
        "UserError",
        "format_validation_error",
        "new_error_id",
    ],
    "kitty.telemetry": [
        "DEFAULT_SERVICE_NAME",
        "ENDPOINT_ENV",
        "INSTRUMENTATION_NAME",
        "SERVICE_NAME_ENV",
        "TRACES_ENDPOINT_ENV",
        "ChatTarget",
        "Tracing",
        "chat_span",
        "error_type",
        "finish_chat_span",
        "finish_run_span",
        "finish_task_span",
        "make_provider",
        "otlp_traces_endpoint",
        "provider_name",
        "record_error",
        "run_span",
        "stop_provider",
        "task_span",
        "tool_span",
        "traces_url",
        "tracing_session",
        "under_span",
    ],
    "kitty.service": [
        "DEFAULT_HOST",
        "DEFAULT_MAX_BODY_BYTES",
        "DEFAULT_MAX_CONCURRENT_RUNS",
        "DEFAULT_MAX_QUERY_CHARS",
        "DEFAULT_PORT",
        "TOKEN_ENV_VAR",
        "ErrorResponse",
        "QueryRequest",
        "QueryResponse",
        "ServiceSettings",
        "check_workers",
        "create_app",
        "exposure_warning",
        "make_server",
        "parse_context_pairs",
        "serve",
    ],
}


def _public_names(module: ModuleType) -> set[str]:
    """Public names of ``module``: in a package, all but its submodules; in a module, its own.

    A plain module also holds what it imported for itself (``Any``, ``uuid``...); only
    what it defines counts there.
    """
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, ModuleType):
            continue
        if hasattr(module, "__path__") or getattr(value, "__module__", None) == module.__name__:
            names.add(name)
    return names


@pytest.mark.parametrize("package", sorted(SURFACES))
def test_the_public_surface_is_pinned(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(SURFACES[package])
    assert len(set(module.__all__)) == len(module.__all__), "a name is listed twice"


@pytest.mark.parametrize("package", sorted(SURFACES))
def test_nothing_public_is_missing_from_all(package: str) -> None:
    module = importlib.import_module(package)
    assert _public_names(module) - set(module.__all__) == set()


@pytest.mark.parametrize("package", sorted(SURFACES))
def test_exported_members_live_in_their_package(package: str) -> None:
    module = importlib.import_module(package)
    outside = []
    for name in module.__all__:
        value = getattr(module, name)  # every listed name exists
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue  # constants and type aliases carry no module of their own
        home = value.__module__
        if home in (ERROR_TREE, package) or home.startswith(f"{package}."):
            continue
        outside.append(f"{name} ({home})")
    assert outside == []


def test_every_progress_event_is_exported() -> None:
    import graph

    union = typing.get_args(graph.ProgressEvent)[0]  # Annotated[A | B | ..., discriminator]
    kinds = {cls.__name__ for cls in typing.get_args(union)}
    assert "TaskToolCall" in kinds
    assert kinds <= set(graph.__all__)
