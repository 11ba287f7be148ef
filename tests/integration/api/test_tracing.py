"""OpenTelemetry traces of real runs: SmolLM2 on the embedded llama.cpp fleet.

In process, the spans go to the SDK's in-memory exporter installed in the process's
tracing. Through ``kitty-orch run --otlp-endpoint`` they go over OTLP/HTTP to a loopback
receiver that records each POST (decoded with OpenTelemetry's own protobuf classes): what
Jaeger or Tempo would receive. The tool call is a Python tool the task must call (a named
``tool_choice``, constrained by llama.cpp's grammar): under ``auto`` the 135M model writes
text.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from langchain_core.tools import tool
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from endpoints.calls import process_tracing
from endpoints.config import FleetConfig
from graph import arun_goal
from tests.helpers import kitty_command, pinned_task

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def exporter(embedded_fleet: FleetConfig) -> Iterator[InMemorySpanExporter]:
    """The process's spans, kept in memory for the test (and the provider removed after)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = process_tracing()
    previous = tracing.install(provider)
    yield exporter
    tracing.install(previous)
    provider.shutdown()


@tool
def count_parts(kind: str) -> str:
    """Count the parts of one kind in stock."""
    return "12 in stock"


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_real_run_traces_its_run_tasks_model_calls_and_tool_call(
    embedded_fleet: FleetConfig, exporter: InMemorySpanExporter
) -> None:
    counting = pinned_task("task_1", "coder", tokens=24, eos=False).model_copy(
        update={"tool_choice": "count_parts", "extra": {"seed": 7}}
    )
    plan = {
        "tasks": [
            counting.model_dump(mode="json"),
            pinned_task("task_2", "researcher", ["task_1"], tokens=8).model_dump(mode="json"),
        ]
    }
    result = await arun_goal(
        "Count the parts of a wall hook",
        fleet=embedded_fleet,
        plan=plan,
        tools=[count_parts],
        agent_tools={"coder": ["count_parts"]},
        voice=False,
        synthesis_max_tokens=16,
    )
    assert [t.status for t in result.tasks] == ["completed", "completed"], result.tasks
    assert result.tasks[0].tool_calls and result.tasks[0].tool_calls[0].ok

    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans if s.context}) == 1
    [run] = [s for s in spans if s.name == "invoke_agent kitty-orchestrator"]
    assert attrs(run)["kitty.run_id"] == result.run_id
    assert attrs(run)["gen_ai.usage.input_tokens"] == result.metrics.prompt_tokens > 0
    tasks = {attrs(s).get("kitty.task.id"): s for s in spans if s.name.startswith("invoke_agent ")}
    first, second = tasks["task_1"], tasks["task_2"]
    assert (first.name, second.name) == ("invoke_agent coder", "invoke_agent researcher")
    assert parent_id(first) == parent_id(second) == span_id(run)
    assert [link.context.span_id for link in second.links] == [span_id(first)]
    assert attrs(first)["kitty.endpoint"] == result.tasks[0].endpoint
    assert attrs(first)["kitty.slot"] == result.tasks[0].slot

    ports = {e.name: urlsplit(e.base_url).port for e in embedded_fleet.all_endpoints()}
    chats = [s for s in spans if attrs(s).get("gen_ai.operation.name") == "chat"]
    for chat in chats:
        values = attrs(chat)
        assert values["gen_ai.provider.name"] == "llama.cpp"
        assert values["server.address"] == "127.0.0.1"
        assert values["server.port"] == ports[values["kitty.endpoint"]]
        assert values["gen_ai.usage.input_tokens"] > 0
        assert values["gen_ai.usage.output_tokens"] > 0
        assert values["gen_ai.request.model"] and values["gen_ai.response.model"]
        assert "error.type" not in values
    by_parent = [parent_id(c) for c in chats]
    assert by_parent.count(span_id(first)) == len(result.tasks[0].calls) >= 2  # tool round, answer
    assert by_parent.count(span_id(second)) == 1
    [synthesis] = [c for c in chats if attrs(c).get("kitty.phase") == "synthesizer"]
    assert parent_id(synthesis) == span_id(run)
    task_tokens = [attrs(c)["gen_ai.usage.output_tokens"] for c in chats]
    own = [n for n, parent in zip(task_tokens, by_parent, strict=True) if parent == span_id(first)]
    assert sum(own) == result.tasks[0].completion_tokens

    # The forced round may ask for the tool more than once: one span per call it made.
    tool_calls = [s for s in spans if s.name == "execute_tool count_parts"]
    assert len(tool_calls) == len(result.tasks[0].tool_calls) >= 1
    for tool_call in tool_calls:
        assert parent_id(tool_call) == span_id(first)
        assert attrs(tool_call)["gen_ai.tool.name"] == "count_parts"
        assert attrs(tool_call)["gen_ai.tool.call.id"]


def test_kitty_orch_run_exports_its_spans_with_otlp_endpoint(
    embedded_fleet: FleetConfig,
    tmp_path: Path,
    receiver: tuple[str, list[tuple[str, bytes]]],
) -> None:
    url, posts = receiver
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"tasks": [pinned_task("task_1").model_dump(mode="json")]}))
    env = {
        **os.environ,
        "KITTY_FLEET": "embedded",
        "KITTY_CHECKPOINTS": "memory",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",  # the flag wins over this
    }
    done = subprocess.run(
        kitty_command(
            "run",
            "Design a wall hook",
            "--plan",
            str(plan),
            "--json",
            "--no-voice",
            "--set",
            "synthesis_max_tokens=8",
            "--otlp-endpoint",
            url,
        ),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = json.loads(done.stdout)["run_id"]
    assert posts and {path for path, _ in posts} == {"/v1/traces"}
    spans = [
        span
        for _, body in posts
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = sorted(span.name for span in spans)
    assert "invoke_agent kitty-orchestrator" in names
    assert "invoke_agent researcher" in names
    assert sum(name.startswith("chat ") for name in names) == 2  # the task, the synthesizer
    [run] = [s for s in spans if s.name == "invoke_agent kitty-orchestrator"]
    run_attributes = {a.key: a.value.string_value for a in run.attributes}
    assert run_attributes["kitty.run_id"] == run_id


def test_a_bad_otlp_endpoint_is_one_line_with_the_fix() -> None:
    env = {**os.environ, "COLUMNS": "300", "KITTY_FLEET": "embedded", "KITTY_CHECKPOINTS": "memory"}
    done = subprocess.run(
        kitty_command("run", "Design a wall hook", "--otlp-endpoint", "localhost:4318"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "--otlp-endpoint is 'localhost:4318'" in done.stderr
    assert "http://127.0.0.1:4318" in done.stderr
