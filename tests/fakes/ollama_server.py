"""A fake Ollama daemon speaking Ollama's documented HTTP wire format (test-only).

A real Ollama cannot run in the test environment, so this server answers like one
(``docs/api.md`` of ollama/ollama) for the requests the orchestrator makes:

* ``POST /api/chat``: non-streamed JSON or NDJSON streaming (``stream`` defaults to true).
  Objects carry ``model``, ``created_at``, ``message{role, content, thinking}``, ``done``;
  the final one adds ``done_reason``, ``total_duration``, ``load_duration``,
  ``prompt_eval_count``, ``prompt_eval_duration``, ``eval_count``, ``eval_duration``
  (durations in nanoseconds). ``thinking`` is only produced when the request's top-level
  ``think`` is truthy (``true`` or ``"low"|"medium"|"high"``). ``options.num_predict`` caps
  the reply (``done_reason: "length"``); a ``format`` JSON schema yields a matching object;
  offered ``tools`` get one ``message.tool_calls`` call of the first tool (arguments from its
  schema) until a ``tool`` message answers it.
* ``GET /api/version``, ``GET /api/ps`` (loaded models), ``GET /api/tags`` (local models),
  ``POST /api/show`` (the model's GGUF metadata under ``model_info``),
  ``GET /`` ("Ollama is running").

Fault modes: ``busy_first_n`` answers the first N chat requests with HTTP 503
``{"error": "server busy, please try again.  maximum pending requests exceeded"}`` (what
Ollama says when ``OLLAMA_MAX_QUEUE`` is exceeded); ``hang`` accepts chat requests and never
answers (until the server stops). Both can be changed while the server runs. Every request
is recorded (:attr:`FakeOllama.requests`) so tests can check e.g. that ``think`` is sent
top-level and not inside ``options``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from ops.simfleet import BackgroundServers, count_prompt_tokens, example_from_schema

BUSY_ERROR = "server busy, please try again.  maximum pending requests exceeded"
DEFAULT_REPLY = "This is a fake Ollama reply from the test server."
DEFAULT_THINKING = "Fake thinking: weigh the request, then answer briefly."


@dataclass
class RecordedRequest:
    """One request the fake received.

    Attributes:
        method: HTTP method.
        path: URL path.
        body: Parsed JSON body (``None`` without one).
        received_at: ``time.time()`` on arrival.
    """

    method: str
    path: str
    body: Any
    received_at: float = field(default_factory=time.time)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _words(text: str) -> list[str]:
    """Split text into word pieces that keep their leading space (one "token" each)."""
    pieces: list[str] = []
    for i, word in enumerate(text.split(" ")):
        pieces.append(word if i == 0 else f" {word}")
    return [p for p in pieces if p]


class FakeOllama:
    """A fake Ollama server on a free loopback port, run in a background thread.

    Example:
        >>> with FakeOllama(model="gpt-oss:120b", busy_first_n=2) as ollama:  # doctest: +SKIP
        ...     ChatOllama(base_url=ollama.base_url, model="gpt-oss:120b").invoke("hi")
    """

    def __init__(
        self,
        *,
        model: str = "gpt-oss:120b",
        reply: str = DEFAULT_REPLY,
        thinking: str = DEFAULT_THINKING,
        busy_first_n: int = 0,
        hang: bool = False,
        chunk_delay_s: float = 0.0,
        loaded: bool = True,
        context_length: int = 65536,
        version: str = "0.12.6",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """Configure the fake (nothing listens before :meth:`start`).

        Args:
            model: Model tag it serves (listed by ``/api/tags`` and ``/api/ps``).
            reply: Assistant content of every answer (split into word "tokens").
            thinking: Thinking text returned when ``think`` is requested.
            busy_first_n: Answer the first N chat requests with 503 "server busy".
            hang: Never answer chat requests.
            chunk_delay_s: Seconds between streamed chunks.
            loaded: Whether ``/api/ps`` lists the model before the first chat request.
            context_length: ``context_length`` reported by ``/api/ps``.
            version: Reported by ``/api/version``.
            host: Address to bind.
            port: Port to bind (0 = a free one).
        """
        self.model = model
        self.reply = reply
        self.thinking = thinking
        self.busy_first_n = busy_first_n
        self.hang = hang
        self.chunk_delay_s = chunk_delay_s
        self.loaded = loaded
        self.context_length = context_length
        self.version = version
        self.host = host
        self.port = port
        self.chat_count = 0
        self.busy_answered = 0
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._release: asyncio.Event | None = None
        self._servers: BackgroundServers | None = None
        self.app = self._build_app()

    # ---- lifecycle --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Server root, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeOllama:
        """Start serving in a background thread; returns self."""
        self._release = None  # created on the server's event loop
        self._servers = BackgroundServers(
            [(self.app, self.host, self.port)], name="fake-ollama", graceful_s=0.5
        )
        self.port = self._servers.start()[0]
        return self

    def stop(self) -> None:
        """Stop serving; hanging requests are released first."""
        if self._servers is not None:
            self._servers.stop()
            self._servers = None

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- recorded traffic -------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of the ``/api/chat`` requests received so far."""
        return [r.body for r in self.requests if r.path == "/api/chat"]

    def reset(self) -> None:
        """Forget recorded requests and the busy counter."""
        with self._lock:
            self._requests.clear()
            self.chat_count = 0
            self.busy_answered = 0

    def _record(self, request: Request, body: Any) -> None:
        with self._lock:
            self._requests.append(RecordedRequest(request.method, request.url.path, body))

    # ---- wire format ------------------------------------------------------------------

    def _model_entry(self, *, running: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.model,
            "model": self.model,
            "size": 65_000_000_000,
            "digest": "f" * 64,
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "fake",
                "families": ["fake"],
                "parameter_size": "116.8B",
                "quantization_level": "MXFP4",
            },
        }
        if running:
            expires = datetime.now(UTC) + timedelta(minutes=30)
            entry["expires_at"] = expires.isoformat().replace("+00:00", "Z")
            entry["size_vram"] = entry["size"]
            entry["context_length"] = self.context_length
        else:
            entry["modified_at"] = _now_iso()
        return entry

    def _answer(self, body: Mapping[str, Any]) -> tuple[list[str], list[str], str, int]:
        """Return (content pieces, thinking pieces, done_reason, prompt tokens)."""
        fmt = body.get("format")
        if isinstance(fmt, Mapping):
            content = _words(json.dumps(example_from_schema(fmt)))
        elif fmt == "json":
            content = ['{"fake":', " true}"]
        else:
            content = _words(self.reply)
        think = body.get("think")
        thinking = _words(self.thinking) if think not in (None, False) else []
        done_reason = "stop"
        options = body.get("options") or {}
        limit = options.get("num_predict")
        if isinstance(limit, int) and limit >= 0 and len(thinking) + len(content) > limit:
            thinking = thinking[:limit]
            content = content[: max(0, limit - len(thinking))]
            done_reason = "length"
        messages = body.get("messages") or []
        prompt_tokens = count_prompt_tokens(messages, body.get("tools"))
        return content, thinking, done_reason, prompt_tokens

    def _final(
        self, *, done_reason: str, prompt_tokens: int, eval_count: int, message: dict[str, Any]
    ) -> dict[str, Any]:
        prompt_ns, eval_ns = prompt_tokens * 2_000_000, eval_count * 25_000_000
        return {
            "model": self.model,
            "created_at": _now_iso(),
            "message": message,
            "done": True,
            "done_reason": done_reason,
            "total_duration": prompt_ns + eval_ns + 5_000_000,
            "load_duration": 5_000_000,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": prompt_ns,
            "eval_count": eval_count,
            "eval_duration": eval_ns,
        }

    async def _stream(
        self, content: list[str], thinking: list[str], done_reason: str, prompt_tokens: int
    ) -> AsyncIterator[bytes]:
        for piece in thinking:
            message = {"role": "assistant", "content": "", "thinking": piece}
            yield self._line({"model": self.model, "created_at": _now_iso(), "message": message})
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        for piece in content:
            message = {"role": "assistant", "content": piece}
            yield self._line({"model": self.model, "created_at": _now_iso(), "message": message})
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        final = self._final(
            done_reason=done_reason,
            prompt_tokens=prompt_tokens,
            eval_count=len(thinking) + len(content),
            message={"role": "assistant", "content": ""},
        )
        yield self._line(final)

    @staticmethod
    def _line(payload: Mapping[str, Any]) -> bytes:
        return (json.dumps({**payload, "done": payload.get("done", False)}) + "\n").encode()

    def _release_event(self) -> asyncio.Event:
        if self._release is None:
            self._release = asyncio.Event()
        return self._release

    def _release_hung(self) -> None:
        self._release_event().set()

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake Ollama (tests)")
        app.state.before_stop = self._release_hung

        @app.get("/")
        async def root(request: Request) -> PlainTextResponse:
            self._record(request, None)
            return PlainTextResponse("Ollama is running")

        @app.get("/api/version")
        async def version(request: Request) -> dict[str, str]:
            self._record(request, None)
            return {"version": self.version}

        @app.get("/api/tags")
        async def tags(request: Request) -> dict[str, Any]:
            self._record(request, None)
            return {"models": [self._model_entry(running=False)]}

        @app.post("/api/show")
        async def show(request: Request) -> Any:
            body = await request.json()
            self._record(request, body)
            if body.get("model") != self.model:
                return JSONResponse({"error": f"model '{body.get('model')}' not found"}, 404)
            # The GGUF metadata keys Ollama returns for gpt-oss:120b (its ``gptoss`` arch).
            return {
                "details": self._model_entry(running=False)["details"],
                "model_info": {
                    "general.architecture": "gptoss",
                    "general.parameter_count": 116_829_156_672,
                    "gptoss.block_count": 36,
                    "gptoss.context_length": 131072,
                    "gptoss.embedding_length": 2880,
                    "gptoss.feed_forward_length": 2880,
                    "gptoss.attention.head_count": 64,
                    "gptoss.attention.head_count_kv": 8,
                    "gptoss.attention.key_length": 64,
                    "gptoss.attention.value_length": 64,
                    "gptoss.attention.sliding_window": 128,
                },
            }

        @app.get("/api/ps")
        async def ps(request: Request) -> dict[str, Any]:
            self._record(request, None)
            return {"models": [self._model_entry(running=True)] if self.loaded else []}

        @app.post("/api/chat")
        async def chat(request: Request) -> Any:
            try:
                body = await request.json()
            except ValueError:
                body = None
            self._record(request, body)
            with self._lock:
                self.chat_count += 1
                busy = self.chat_count <= self.busy_first_n
                if busy:
                    self.busy_answered += 1
            if busy:
                return JSONResponse({"error": BUSY_ERROR}, status_code=503)
            if self.hang:
                await self._release_event().wait()
                return JSONResponse({"error": "server shutting down"}, status_code=503)
            if not isinstance(body, Mapping):
                return JSONResponse({"error": "invalid JSON body"}, status_code=400)
            if body.get("model") != self.model:
                error = f"model '{body.get('model')}' not found"
                return JSONResponse({"error": error}, status_code=404)
            self.loaded = True
            message: dict[str, Any]
            if not body.get("messages"):
                message = {"role": "assistant", "content": ""}
                final = self._final(
                    done_reason="load", prompt_tokens=0, eval_count=0, message=message
                )
                return JSONResponse(final)
            content, thinking, done_reason, prompt_tokens = self._answer(body)
            calls = _tool_calls(body)
            if calls:
                message = {"role": "assistant", "content": "", "tool_calls": calls}
                final = self._final(
                    done_reason="stop", prompt_tokens=prompt_tokens, eval_count=8, message=message
                )
                if body.get("stream", True):
                    return StreamingResponse(
                        iter([self._line(final)]), media_type="application/x-ndjson"
                    )
                return JSONResponse(final)
            if body.get("stream", True):
                return StreamingResponse(
                    self._stream(content, thinking, done_reason, prompt_tokens),
                    media_type="application/x-ndjson",
                )
            message = {"role": "assistant", "content": "".join(content)}
            if thinking:
                message["thinking"] = "".join(thinking)
            final = self._final(
                done_reason=done_reason,
                prompt_tokens=prompt_tokens,
                eval_count=len(thinking) + len(content),
                message=message,
            )
            return JSONResponse(final)

        return app


def _tool_calls(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A call of the first offered tool, in Ollama's ``message.tool_calls`` form.

    Only while no tool has answered yet (the last message is not a ``tool`` message), so a
    tool loop gets one call and then a plain answer.
    """
    tools = body.get("tools") or []
    messages = body.get("messages") or []
    if not tools or (messages and messages[-1].get("role") == "tool"):
        return []
    function = tools[0].get("function", {})
    arguments = example_from_schema(function.get("parameters") or {"type": "object"})
    return [{"function": {"name": function.get("name", ""), "arguments": arguments}}]
