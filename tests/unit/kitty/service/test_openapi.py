"""The service's OpenAPI document says what the running service enforces (issue 24 item 4).

schemathesis checks the live service against this document
(tests/integration/service/test_schemathesis.py); these tests pin each correction it needed.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from kitty.service import ServiceSettings, create_app
from kitty.service._schemas import NON_BLANK, QueryRequest


def document(**settings: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"fleet": "embedded", "start_embedded": False, "user_tokens": {}}
    app = create_app(ServiceSettings(**{"api_token": None, **base, **settings}))
    return app.openapi()


def operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
    }


def test_without_a_token_no_operation_asks_for_one() -> None:
    """The document declared a bearer token required although none was checked (ST401)."""
    doc = document()
    assert "securitySchemes" not in doc["components"]
    for name, operation in operations(doc).items():
        assert "security" not in operation, name
        assert not {"401", "403"} & set(operation["responses"]), name


def test_with_a_token_every_operation_but_liveness_asks_for_it() -> None:
    doc = document(api_token="t0k")
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for name, operation in operations(doc).items():
        if name == "GET /healthz":
            assert "security" not in operation
        else:
            assert operation["security"] == [{"HTTPBearer": []}], name
            assert "401" in operation["responses"], name


def test_user_tokens_alone_turn_auth_on_in_the_document() -> None:
    doc = document(user_tokens={"ann": "ann-token-0123456789"})
    assert operations(doc)["GET /api/endpoints"]["security"] == [{"HTTPBearer": []}]


def test_every_reference_resolves() -> None:
    """The OpenAI door's inline schemas pointed at #/$defs/..., which no document has."""
    doc = document()
    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    refs.append(value)
                collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    collect(doc)
    assert refs
    prefix = "#/components/schemas/"
    assert all(ref.startswith(prefix) for ref in refs), {r for r in refs if prefix not in r}
    assert {ref.removeprefix(prefix) for ref in refs} <= set(doc["components"]["schemas"])


def test_the_query_declares_the_bounds_the_service_checks() -> None:
    """``{"query": ""}`` was schema-valid but answered 422 (ST202)."""
    query = document(max_query_chars=321)["components"]["schemas"]["QueryRequest"]
    properties = query["properties"]
    assert properties["query"]["minLength"] == 1
    assert properties["query"]["maxLength"] == 321
    assert properties["query"]["pattern"] == NON_BLANK
    assert properties["images"]["maxItems"] == 4
    for blank in ("", " ", "\t\n", "\x0b\x0c\r"):
        assert re.search(NON_BLANK, blank) is None
        with pytest.raises(ValidationError, match="query is empty"):
            QueryRequest(query=blank)
    for text in ("a", " x ", "\x1c", "\u3000"):  # what the pattern takes, the service takes
        assert re.search(NON_BLANK, text) is not None
        assert QueryRequest(query=text).query == text


def test_a_run_setting_bounds_the_images() -> None:
    doc = document(context_overrides={"max_images": 2})
    assert doc["components"]["schemas"]["QueryRequest"]["properties"]["images"]["maxItems"] == 2


def test_an_integral_number_is_an_integer() -> None:
    """JSON Schema's ``integer`` takes 4.0; the service answered 422 to it (ST202)."""
    assert QueryRequest.model_validate({"query": "q", "max_tasks": 4.0}).max_tasks == 4
    for wrong in (4.5, "4", True):
        with pytest.raises(ValidationError):
            QueryRequest.model_validate({"query": "q", "max_tasks": wrong})


@pytest.mark.parametrize(
    ("path", "events"),
    [
        ("/api/query/parallel/stream", {"plan_ready", "task_finished", "result", "error"}),
        ("/api/threads/{thread_id}/stream", {"state", "task_started", "result"}),
    ],
)
def test_each_stream_event_is_documented(path: str, events: set[str]) -> None:
    """The streams' events were documented as ``type: string`` (ST108)."""
    doc = document()
    content = doc["paths"][path][next(iter(doc["paths"][path]))]["responses"]["200"]["content"]
    variants = content["text/event-stream"]["schema"]["oneOf"]
    names = {variant["properties"]["event"]["const"] for variant in variants}
    assert events <= names
    for variant in variants:
        data = variant["properties"]["data"]
        assert data["type"] == "string" and data["contentMediaType"] == "application/json"
        assert data["contentSchema"]["type"] == "object"
