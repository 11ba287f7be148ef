"""The OpenAPI document the service serves, made to say what the running service enforces.

FastAPI writes the document from the routes alone. Three things only the running service
knows, or that FastAPI leaves unresolved, are settled here (issue 24, property-based API
testing: schemathesis checks the service against this document):

- **Auth.** The bearer token is enforced by middleware, and only when the service has one
  (``KITTY_API_TOKEN`` or user tokens). Without one, the operations declare no security
  scheme and no 401/403; with one, every operation but ``/healthz`` requires the bearer.
- **Bounds set at start.** ``query`` is at most the service's ``max_query_chars``
  characters; ``images`` at most the run's ``max_images``.
- **Inline models.** A model schema given inline (``model_json_schema()``, for the OpenAI
  door and the event streams' data) carries its own ``$defs`` with ``#/$defs/...``
  references, which resolve against the document's root, not the schema: they are moved
  to ``components/schemas``.

:func:`event_stream` documents a ``text/event-stream`` response event by event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

SSE_MEDIA_TYPE = "text/event-stream"
# Statuses only a service with a token answers (missing/wrong token, another user's name).
AUTH_STATUSES = ("401", "403")
_COMPONENTS = "#/components/schemas/"
_LOCAL_DEFS = "#/$defs/"


def event_stream(description: str, events: Mapping[str, type[BaseModel]]) -> dict[str, Any]:
    """A ``200`` response entry for a stream of server-sent events, one schema per event.

    Each event is documented as the SSE parser sees it (``event``: its name; ``data``: a
    JSON text, of the event's model). For Open API 3.1 the media type's ``schema``
    describes one event; ``data``'s JSON content is named by ``contentMediaType`` and
    ``contentSchema``.

    Args:
        description: What the stream carries, for people.
        events: SSE event name -> the model of its JSON data, in the order they come.

    Returns:
        The entry for a route's ``responses={200: ...}``.
    """
    variants = [
        {
            "type": "object",
            "title": f"{name} event",
            "required": ["event", "data"],
            "properties": {
                "event": {"const": name},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": model.model_json_schema(mode="serialization"),
                },
                "id": {"type": "string"},
                "retry": {"type": "integer"},
            },
        }
        for name, model in events.items()
    ]
    return {
        "description": description,
        "content": {SSE_MEDIA_TYPE: {"schema": {"oneOf": variants}}},
    }


def install_openapi(app: FastAPI, *, auth: bool, max_query_chars: int, max_images: int) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) describe the running service.

    Args:
        app: The service's app, routes included.
        auth: Whether the service enforces a bearer token (an operator or a user token).
        max_query_chars: The longest ``query`` the service takes.
        max_images: The most images a run takes.
    """
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()  # FastAPI's, cached on app.openapi_schema
            hoist_local_defs(document)
            if not auth:
                drop_auth(document)
            bound_query_request(document, max_query_chars, max_images)
        return app.openapi_schema  # type: ignore[return-value]  # set by generate()

    app.openapi = openapi  # type: ignore[method-assign]


def drop_auth(document: dict[str, Any]) -> None:
    """No security scheme and no 401/403 on any operation: the service checks no token."""
    document.get("components", {}).pop("securitySchemes", None)
    for operation in _operations(document):
        operation.pop("security", None)
        for status in AUTH_STATUSES:
            operation.get("responses", {}).pop(status, None)


def bound_query_request(document: dict[str, Any], max_query_chars: int, max_images: int) -> None:
    """Declare the service's own bounds on ``QueryRequest``: query length, image count."""
    request = document.get("components", {}).get("schemas", {}).get("QueryRequest")
    if request is None:
        return
    properties = request["properties"]
    properties["query"]["maxLength"] = max_query_chars
    properties["images"]["maxItems"] = max_images


def hoist_local_defs(document: dict[str, Any]) -> None:
    """Move inline ``$defs`` to ``components/schemas`` and point their references there.

    A name already in the components is kept as it is: it names the same model (the
    document is built from one set of models, named by class).
    """
    components = document.setdefault("components", {}).setdefault("schemas", {})

    def visit(node: Any) -> Any:
        if isinstance(node, dict):
            for name, schema in (node.pop("$defs", None) or {}).items():
                components.setdefault(name, visit(schema))
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str) and value.startswith(_LOCAL_DEFS):
                    node[key] = _COMPONENTS + value.removeprefix(_LOCAL_DEFS)
                elif key == "mapping" and isinstance(value, dict):  # a discriminator's
                    for tag, ref in value.items():
                        if isinstance(ref, str) and ref.startswith(_LOCAL_DEFS):
                            value[tag] = _COMPONENTS + ref.removeprefix(_LOCAL_DEFS)
                        else:
                            visit(ref)
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)
        return node

    visit(document.get("paths", {}))
    for schema in list(components.values()):
        visit(schema)


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    return [
        operation
        for item in document.get("paths", {}).values()
        for method, operation in item.items()
        if method in methods
    ]
