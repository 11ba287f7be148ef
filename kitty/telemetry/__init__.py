"""OpenTelemetry traces of runs, by the GenAI semantic conventions; off unless configured.

Setup (an OTLP/HTTP exporter from the standard variables or ``--otlp-endpoint``), the
holder of a process's tracer provider, and the run, task, chat and tool spans.
"""

from kitty.telemetry._parent import under_span
from kitty.telemetry._setup import (
    DEFAULT_SERVICE_NAME,
    ENDPOINT_ENV,
    SERVICE_NAME_ENV,
    TRACES_ENDPOINT_ENV,
    make_provider,
    otlp_traces_endpoint,
    stop_provider,
    traces_url,
    tracing_session,
)
from kitty.telemetry._spans import (
    ChatTarget,
    chat_span,
    error_type,
    finish_chat_span,
    finish_run_span,
    finish_task_span,
    provider_name,
    record_error,
    run_span,
    task_span,
    tool_span,
)
from kitty.telemetry._tracing import INSTRUMENTATION_NAME, Tracing

__all__ = [
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
]
