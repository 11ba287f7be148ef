"""A fake llama-server for image tests: ``/props`` ``modalities``, streamed chat (test-only).

It answers what the orchestrator asks of a llama.cpp endpoint: ``GET /health``, ``/props``
(``total_slots``, ``modalities.vision`` as configured: a real server reports true only
when started with ``--mmproj``), ``/slots`` and ``POST /v1/chat/completions`` (OpenAI chat
completion chunks over SSE, or one JSON answer). A request whose system message is the
planner's gets ``plan`` back as JSON; any other gets ``reply``. Every chat body is kept in
:attr:`FakeVisionLlama.chat_requests`, so a test can look for ``image_url`` parts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from graph.prompts import PLANNER_SYSTEM
from ops.simfleet import BackgroundServers

DEFAULT_REPLY = "The first layer looks even; no lifting at the corners."


def image_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ``image_url`` content part of a chat request body."""
    parts: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            parts += [p for p in content if isinstance(p, dict) and p.get("type") == "image_url"]
    return parts


class FakeVisionLlama:
    """One fake llama-server on a free loopback port (a background thread serves it)."""

    def __init__(
        self,
        *,
        vision: bool,
        plan: dict[str, Any] | None = None,
        reply: str = DEFAULT_REPLY,
        slots: int = 2,
    ) -> None:
        self.vision = vision
        self.plan = plan
        self.reply = reply
        self.slots = slots
        self.chat_requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._servers: BackgroundServers | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeVisionLlama:
        self._servers = BackgroundServers([(self._app(), "127.0.0.1", 0)], name="fake-vision")
        [self.port] = self._servers.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._servers is not None:
            self._servers.stop()

    def _answer(self, body: dict[str, Any]) -> str:
        messages = body.get("messages") or []
        first = messages[0].get("content") if messages else ""
        if first == PLANNER_SYSTEM and self.plan is not None:
            return json.dumps(self.plan)
        return self.reply

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/health")
        async def health() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/props")
        async def props() -> dict[str, Any]:
            return {
                "total_slots": self.slots,
                "modalities": {"vision": self.vision, "audio": False},
                "chat_template_caps": {"supports_tools": False},
                "default_generation_settings": {"n_ctx": 8192},
            }

        @app.get("/slots")
        async def slots() -> list[dict[str, Any]]:
            return [{"id": i, "is_processing": False} for i in range(self.slots)]

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            with self._lock:
                self.chat_requests.append(body)
            text = self._answer(body)
            if not body.get("stream"):
                return JSONResponse(_completion(body, text))
            return StreamingResponse(_chunks(body, text), media_type="text/event-stream")

        return app


def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


async def _chunks(body: dict[str, Any], text: str) -> AsyncIterator[str]:
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
    }
    first = {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}
    last = {"index": 0, "delta": {}, "finish_reason": "stop"}
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    yield f"data: {json.dumps({**base, 'choices': [first]})}\n\n"
    yield f"data: {json.dumps({**base, 'choices': [last]})}\n\n"
    yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"
