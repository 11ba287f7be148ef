"""Turning tracing on: where spans go, and a real OTLP/HTTP export to a local receiver.

The receiver is a loopback HTTP server that records each POST; the body is decoded with
OpenTelemetry's own protobuf classes, so the test sees what a collector (Jaeger, Tempo)
would receive. Nothing leaves the machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from endpoints.calls import process_tracing
from graph import arun_goal
from kitty.errors import SettingsError
from kitty.service import ServiceSettings, create_app
from kitty.telemetry import otlp_traces_endpoint, tracing_session
from tests.conftest import FakeFleet
from tests.fake_chat import FakeChat
from tests.helpers import FAST, asgi_client, offline_fleet


@pytest.mark.parametrize(
    ("environ", "flag", "expected"),
    [
        ({}, None, None),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
            None,
            "http://collector:4318/v1/traces",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
            None,
            "http://collector:4318/v1/traces",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/otlp/spans",
            },
            None,
            "https://traces.example/otlp/spans",  # the traces variable is used as given
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://a:4318/v1/traces"},
            "http://b:4318",
            "http://b:4318/v1/traces",  # the flag wins
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, None, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, None, None),
    ],
)
def test_where_spans_go(environ: dict[str, str], flag: str | None, expected: str | None) -> None:
    assert otlp_traces_endpoint(environ, flag) == expected


@pytest.mark.parametrize(
    ("environ", "flag", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, None, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "grpc://x"},
            None,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ),
        ({}, "localhost", "--otlp-endpoint"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            None,
            "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'",
        ),
    ],
)
def test_a_bad_setting_is_named_with_the_fix(
    environ: dict[str, str], flag: str | None, named: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        otlp_traces_endpoint(environ, flag)
    assert named in str(caught.value)
    assert "4318" in str(caught.value)


def test_without_configuration_nothing_is_installed(fresh_fleet_state: None) -> None:
    tracing = process_tracing()
    with tracing_session(tracing, {}) as provider:
        assert provider is None
        assert tracing.provider is None


async def test_a_configured_session_exports_the_run_over_otlp_http(
    tmp_path: Path,
    fresh_fleet_state: None,
    receiver: tuple[str, list[tuple[str, bytes]]],
) -> None:
    url, posts = receiver
    path = str(offline_fleet(tmp_path))
    FakeChat().install(path)
    tracing = process_tracing()
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_SERVICE_NAME": "kitty-test"}
    with tracing_session(tracing, environ) as provider:
        assert provider is not None and tracing.provider is provider
        await arun_goal("Check the hook", fleet=path, **FAST)
    # Batched: whatever the batch had not sent yet went out when the session ended.
    assert tracing.provider is None  # what was there before comes back
    assert posts and {p for p, _ in posts} == {"/v1/traces"}
    names: list[str] = []
    services: set[str] = set()
    for _, body in posts:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                assert scope_spans.scope.name == "kitty-orchestrator"
                names += [span.name for span in scope_spans.spans]
    assert services == {"kitty-test"}
    assert "invoke_agent kitty-orchestrator" in names
    assert "invoke_agent researcher" in names  # the fake planner's one task
    assert sum(name.startswith("chat ") for name in names) == 3  # planner, task, synthesizer


async def test_the_service_name_defaults_to_kitty_orchestrator(fresh_fleet_state: None) -> None:
    tracing = process_tracing()
    with tracing_session(tracing, {}, endpoint="http://127.0.0.1:9") as provider:
        assert provider is not None
        assert provider.resource.attributes["service.name"] == "kitty-orchestrator"


async def test_the_service_exports_spans_while_it_runs(
    fake_fleet: FakeFleet,
    receiver: tuple[str, list[tuple[str, bytes]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, posts = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{url}/v1/traces")
    app = create_app(ServiceSettings(fleet=fake_fleet.path, start_embedded=False))
    tracing = process_tracing()
    async with app.router.lifespan_context(app):
        assert tracing.provider is not None
        async with asgi_client(app) as http:
            body = {"query": "Check the hook", "voice_mode": False}
            answer = await http.post("/api/query/parallel", json=body)
            assert answer.status_code == 200, answer.text
    assert tracing.provider is None  # shut down with the service, its spans flushed
    names = [
        span.name
        for _, body_bytes in posts
        for resource in ExportTraceServiceRequest.FromString(body_bytes).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert "invoke_agent kitty-orchestrator" in names
    assert "invoke_agent researcher" in names
