"""Service guards without a fleet: auth, body limits, input validation, error shapes."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import httpx
import pytest
from typer.testing import CliRunner

from endpoints import FleetError
from kitty.cli.main import app as cli_app
from kitty.service import (
    TOKEN_ENV_VAR,
    QueryRequest,
    ServiceSettings,
    create_app,
    make_server,
    parse_context_pairs,
)
from kitty.service._runs import RunSpec, build_run, stream_events
from kitty.service._security import exposure_warning, is_loopback
from tests.helpers import asgi_client

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUERY = "/api/query/parallel"


def make_client(**overrides: object) -> httpx.AsyncClient:
    settings = ServiceSettings(fleet="embedded", start_embedded=False, api_token=TOKEN, **overrides)
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    return asgi_client(app)


def assert_error(response: httpx.Response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.text
    if field is not None:
        assert body["field"] == field, body
    return body


# --- binding ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    assert exposure_warning(host, None) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_exposed_hosts_warn_without_token(host: str) -> None:
    assert not is_loopback(host)
    warning = exposure_warning(host, None)
    assert warning is not None and TOKEN_ENV_VAR in warning and host in warning
    assert exposure_warning(host, "token") is None


def test_settings_default_to_loopback_and_env_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV_VAR, "from-env")
    settings = ServiceSettings()
    assert settings.host == "127.0.0.1"
    assert settings.api_token == "from-env"
    assert "from-env" not in repr(settings)
    monkeypatch.setenv(TOKEN_ENV_VAR, "  ")
    assert ServiceSettings().api_token is None


def test_make_server_logs_loud_warning(caplog: pytest.LogCaptureFixture) -> None:
    settings = ServiceSettings(host="0.0.0.0", api_token=None, start_embedded=False)
    with caplog.at_level(logging.WARNING, logger="kitty.service"):
        server = make_server(settings)
    assert server.config.host == "0.0.0.0"
    assert any("SECURITY WARNING" in r.getMessage() for r in caplog.records)


# --- settings --------------------------------------------------------------------------


def test_context_pairs_are_typed() -> None:
    assert parse_context_pairs(["synthesis_max_tokens=32", "thinking=high"]) == {
        "synthesis_max_tokens": 32,
        "thinking": "high",
    }
    assert parse_context_pairs(["run_deadline_s=none"]) == {"run_deadline_s": None}


@pytest.mark.parametrize(
    ("pair", "expected"),
    [
        ("synthesis_max_tokens", "KEY=VALUE"),
        ("nope=1", "unknown run setting 'nope'"),
        ("fleet=x", "chosen per request"),
        ("approve_plan=true", "not available in the HTTP service"),
        ("synthesis_max_tokens=lots", "synthesis_max_tokens"),
        ("thinking=extreme", "thinking"),
    ],
)
def test_bad_context_pairs_name_the_problem(pair: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        parse_context_pairs([pair])


def test_unknown_fleet_fails_at_creation() -> None:
    with pytest.raises(FleetError):
        create_app(ServiceSettings(fleet="no-such-fleet", start_embedded=False))


# --- auth ------------------------------------------------------------------------------


async def test_health_needs_no_token() -> None:
    async with make_client() as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer wrong"}, "invalid bearer token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "invalid bearer token"),
        ({"Authorization": f"Basic {TOKEN}"}, "must be 'Bearer <token>'"),
        ({"Authorization": "Bearer "}, "must be 'Bearer <token>'"),
    ],
)
@pytest.mark.parametrize("path", ["/api/endpoints", "/docs", "/openapi.json"])
async def test_routes_need_the_token(path: str, headers: dict, expected: str) -> None:
    async with make_client() as client:
        response = await client.get(path, headers=headers)
    body = assert_error(response, 401, "Authorization")
    assert expected in body["error"]
    assert response.headers["www-authenticate"] == "Bearer"


async def test_token_unlocks_docs_and_posts_are_checked_before_the_body() -> None:
    async with make_client() as client:
        assert (await client.get("/openapi.json", headers=AUTH)).status_code == 200
        assert (await client.get("/docs", headers=AUTH)).status_code == 200
        denied = await client.post(QUERY, json={"query": "hi"})
    assert_error(denied, 401, "Authorization")


async def test_public_docs_option() -> None:
    async with make_client(public_docs=True) as client:
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.get("/api/endpoints")).status_code == 401


async def test_no_token_configured_means_no_auth() -> None:
    app = create_app(ServiceSettings(fleet="embedded", start_embedded=False, api_token=None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        response = await client.post(QUERY, json={"query": ""})
    assert_error(response, 422, "query")


# --- body size -------------------------------------------------------------------------


async def test_declared_oversized_body_is_413() -> None:
    async with make_client(max_body_bytes=2048) as client:
        response = await client.post(QUERY, json={"query": "x" * 5000}, headers=AUTH)
    body = assert_error(response, 413, "body")
    assert "2048 bytes" in body["error"]


async def test_streamed_oversized_body_is_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    async with make_client(max_body_bytes=2048) as client:
        response = await client.post(QUERY, content=chunks(), headers=AUTH)
        assert "content-length" not in response.request.headers
        ok = await client.post(QUERY, json={"query": " "}, headers=AUTH)
    assert_error(response, 413, "body")
    assert_error(ok, 422, "query")  # a small body still reaches validation


async def test_streamed_body_within_limit_is_replayed() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": "hi", '
        yield b'"max_tasks": 0}'

    headers = {**AUTH, "Content-Type": "application/json"}
    async with make_client(max_body_bytes=2048) as client:
        response = await client.post(QUERY, content=chunks(), headers=headers)
    assert_error(response, 422, "max_tasks")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_non_json_content_type_is_explained(content_type: str | None) -> None:
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    async with make_client() as client:
        response = await client.post(QUERY, content=b'{"query": "hi"}', headers=headers)
    body = assert_error(response, 422, "body")
    assert "Content-Type: application/json" in body["error"]


async def test_non_numeric_content_length_is_400() -> None:
    async with make_client() as client:
        response = await client.post(
            QUERY, content=b"{}", headers={**AUTH, "Content-Length": "abc"}
        )
    assert_error(response, 400, "body")


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "status", "field", "fragment"),
    [
        ({"query": ""}, 422, "query", "empty"),
        ({"query": "   \n\t"}, 422, "query", "empty"),
        ({}, 422, "query", "required"),
        ({"query": 42}, 422, "query", "string"),
        ({"query": ["a"]}, 422, "query", "string"),
        ({"query": "hi", "max_tasks": 0}, 422, "max_tasks", "greater than or equal to 1"),
        ({"query": "hi", "max_tasks": 999}, 422, "max_tasks", "less than or equal to 20"),
        ({"query": "hi", "max_tasks": "6"}, 422, "max_tasks", "integer"),
        ({"query": "hi", "max_tasks": 2.5}, 422, "max_tasks", "integer"),
        ({"query": "hi", "voice_mode": "maybe"}, 422, "voice_mode", "boolean"),
        ({"query": "hi", "voice": False}, 422, "voice", "unknown field"),
        ({"query": "x" * 9000}, 422, "query", "limit is 8000"),
        ({"query": "hi", "plan": {"tasks": []}}, 422, "plan.tasks", "at least 1"),
        (
            {"query": "hi", "plan": {"tasks": [{"id": "a", "agent": "researcher"}]}},
            422,
            "plan.tasks.0.description",
            "required",
        ),
        (
            {
                "query": "hi",
                "plan": {"tasks": [{"id": "a", "agent": "ghost", "description": "d"}]},
            },
            400,
            "plan",
            "unknown agent 'ghost'",
        ),
        (
            {
                "query": "hi",
                "plan": {
                    "tasks": [
                        {"id": "a", "agent": "coder", "description": "d", "dependencies": ["b"]},
                        {"id": "b", "agent": "coder", "description": "d", "dependencies": ["a"]},
                    ]
                },
            },
            400,
            "plan",
            "cycle",
        ),
        (
            {
                "query": "hi",
                "max_tasks": 1,
                "plan": {
                    "tasks": [
                        {"id": "a", "agent": "coder", "description": "d"},
                        {"id": "b", "agent": "coder", "description": "d"},
                    ]
                },
            },
            422,
            "plan",
            "max_tasks is 1",
        ),
        ([1, 2], 422, "body", "JSON object"),
        ("just a string", 422, "body", "JSON object"),
    ],
)
@pytest.mark.parametrize("path", [QUERY, f"{QUERY}/stream"])
async def test_bad_input_names_the_field(
    path: str, payload: object, status: int, field: str, fragment: str
) -> None:
    async with make_client() as client:
        response = await client.post(path, json=payload, headers=AUTH)
    body = assert_error(response, status, field)
    assert fragment in body["error"], body


@pytest.mark.parametrize("raw", [b'{"query": "hi",', b"not json", b'{"query": "hi"}}'])
async def test_invalid_json_is_400(raw: bytes) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    async with make_client() as client:
        response = await client.post(QUERY, content=raw, headers=headers)
    body = assert_error(response, 400, "body")
    assert "not valid JSON" in body["error"]


async def test_missing_body_is_422() -> None:
    async with make_client() as client:
        response = await client.post(QUERY, headers=AUTH)
    body = assert_error(response, 422, "body")
    assert "missing" in body["error"]


async def test_internal_errors_hide_details() -> None:
    async with make_client() as client:
        response = await client.get("/boom", headers=AUTH)
    body = assert_error(response, 500)
    assert body["error_id"] and body["error_id"] in body["error"]
    assert "secret internals" not in response.text and "RuntimeError" not in response.text


async def test_unknown_route_is_json_404() -> None:
    async with make_client() as client:
        response = await client.get("/nope", headers=AUTH)
    assert_error(response, 404)


async def test_openapi_documents_contract() -> None:
    async with make_client() as client:
        schema = (await client.get("/openapi.json", headers=AUTH)).json()
    paths = schema["paths"]
    assert {"/api/query/parallel", "/api/query/parallel/stream", "/api/endpoints", "/healthz"} <= (
        set(paths)
    )
    request = schema["components"]["schemas"]["QueryRequest"]
    assert set(request["properties"]) == {
        "query",
        "max_tasks",
        "voice_mode",
        "plan",
        "images",
        "thread_id",
        "user",
    }
    assert all(p.get("description") for p in request["properties"].values())
    assert request["properties"]["max_tasks"]["maximum"] == 20
    response = schema["components"]["schemas"]["QueryResponse"]
    assert {"response", "voice_summary", "tasks", "metrics"} <= set(response["properties"])
    post = paths["/api/query/parallel"]["post"]
    assert {"400", "401", "413", "422", "500", "503"} <= set(post["responses"])
    assert (
        "text/event-stream"
        in paths["/api/query/parallel/stream"]["post"]["responses"]["200"]["content"]
    )
    assert "HTTPBearer" in json.dumps(schema["components"]["securitySchemes"])


# --- CLI -------------------------------------------------------------------------------


def test_serve_help_renders() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    assert "KITTY_API_TOKEN" in result.output and "--max-body-bytes" in result.output


def test_serve_refuses_a_taken_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = CliRunner().invoke(cli_app, ["serve", "--port", str(port)])
    assert result.exit_code == 2
    assert f"port {port}" in result.output and "--port" in result.output


def test_serve_rejects_bad_context() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--set", "bogus=1"])
    assert result.exit_code == 2
    assert "unknown run setting 'bogus'" in result.output


def test_serve_takes_run_settings_as_set_like_run() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--help"])
    assert "--set" in result.output and "--context" not in result.output


def test_serve_context_still_works_and_says_to_use_set() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "-c", "bogus=1"])
    assert result.exit_code == 2
    assert "deprecated" in result.output and "--set" in result.output
    assert "unknown run setting 'bogus'" in result.output


async def test_expect_continue_gets_413_without_sending_the_body() -> None:
    headers = {**AUTH, "Content-Length": str(200 << 20), "Expect": "100-continue"}
    async with make_client() as client:
        response = await client.post(QUERY, content=b"{}", headers=headers)
    assert_error(response, 413, "body")


def test_serve_rejects_unknown_fleet() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--port", "0", "--fleet", "no-such-fleet"])
    assert result.exit_code == 2
    assert "no-such-fleet" in result.output


# --- errors inside a streamed run ------------------------------------------------------


async def collect(spec: RunSpec) -> list[tuple[str | None, dict]]:
    # stream_events always sets data to a JSON string.
    return [(e.event, json.loads(cast(str, e.data))) async for e in stream_events(spec)]


async def test_stream_reports_fleet_errors_as_503_event(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    events = await collect(RunSpec(goal="x", plan=None, kwargs={"fleet": str(missing)}))
    assert [name for name, _ in events] == ["phase_started", "error"]
    error = events[-1][1]
    assert error["status"] == 503 and str(missing) in error["error"]


async def test_stream_hides_internal_errors(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(goal: str, **kwargs: object) -> AsyncIterator[object]:
        raise RuntimeError("max_tasks went negative in a bug")  # a bug, not a user error
        yield  # pragma: no cover

    monkeypatch.setattr("kitty.service._runs.astream_goal", broken)
    with caplog.at_level(logging.ERROR, logger="kitty.service"):
        events = await collect(RunSpec(goal="x", plan=None, kwargs={}))
    assert [name for name, _ in events] == ["error"]
    error = events[0][1]
    assert error["status"] == 500 and error["error_id"] in error["error"]
    assert "max_tasks" not in error["error"]
    assert any(error["error_id"] in r.getMessage() for r in caplog.records)


async def test_stream_shows_a_bad_run_setting_as_422_event() -> None:
    events = await collect(RunSpec(goal="x", plan=None, kwargs={"max_tasks": 0}))
    assert [name for name, _ in events] == ["error"]
    error = events[0][1]
    assert error["status"] == 422 and "max_tasks" in error["error"]


# --- checkpointer hook -----------------------------------------------------------------


async def test_checkpointer_factory_is_entered_for_the_app_lifetime() -> None:
    entered: list[str] = []
    saver = object()

    @asynccontextmanager
    async def factory() -> AsyncIterator[object]:
        entered.append("in")
        yield saver
        entered.append("out")

    app = create_app(
        ServiceSettings(fleet="embedded", start_embedded=False, checkpointer_factory=factory)
    )
    async with app.router.lifespan_context(app):
        assert app.state.checkpointer is saver and entered == ["in"]
    assert entered == ["in", "out"]


def test_build_run_passes_settings_and_checkpointer() -> None:
    request = QueryRequest(query="q", max_tasks=3, voice_mode=False)
    saver = object()
    spec = build_run(
        request,
        fleet="embedded",
        max_query_chars=100,
        context_overrides={"synthesis_max_tokens": 32},
        checkpointer=saver,
    )
    assert spec.goal == "q" and spec.plan is None
    assert spec.kwargs == {
        "synthesis_max_tokens": 32,
        "plan": None,
        "max_tasks": 3,
        "voice": False,
        "fleet": "embedded",
        "checkpointer": saver,
    }
