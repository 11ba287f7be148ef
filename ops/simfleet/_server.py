"""The HTTP app of one SIMULATED endpoint: llama.cpp's OpenAI-compatible surface."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from ops.simfleet._engine import SimEngine
from ops.simfleet._model import SimSequence, SlotModel
from ops.simfleet._spec import SimEndpointSpec
from ops.simfleet._structured_output import example_from_schema, response_schema
from ops.simfleet._tokens import count_prompt_tokens, filler_pieces, plan_completion, split_pieces


def _error(status: int, message: str, kind: str, **extra: Any) -> JSONResponse:
    body = {"error": {"code": status, "message": message, "type": kind, **extra}}
    return JSONResponse(body, status_code=status)


def _first_int(*values: Any) -> int | None:
    for value in values:
        if value is None:
            continue
        number = int(value)
        return None if number < 0 else number
    return None


def _timings_of(seq: SimSequence) -> dict[str, Any]:
    """llama.cpp-style ``timings`` of a finished sequence, in SIMULATED milliseconds.

    Beyond llama.cpp's fields: ``queued_ms`` (waiting for a slot) and ``sim_arrival_s`` /
    ``sim_finished_s`` (the endpoint's simulated clock), for makespans in simulated time.
    """
    prompt_ms = seq.prefill_s * 1000
    predicted_ms = seq.decode_s * 1000
    return {
        "cache_n": 0,
        "prompt_n": seq.prompt_tokens,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / seq.prompt_tokens if seq.prompt_tokens else 0.0,
        "prompt_per_second": seq.prompt_tokens / seq.prefill_s if seq.prefill_s else 0.0,
        "predicted_n": seq.n_predict,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / seq.n_predict if seq.n_predict else 0.0,
        "predicted_per_second": seq.n_predict / seq.decode_s if seq.decode_s else 0.0,
        "queued_ms": seq.queued_s * 1000,
        "sim_arrival_s": seq.arrival,
        "sim_finished_s": seq.finished_at,
        "simulated": True,
    }


def _usage(seq: SimSequence) -> dict[str, int]:
    return {
        "prompt_tokens": seq.prompt_tokens,
        "completion_tokens": seq.n_predict,
        "total_tokens": seq.prompt_tokens + seq.n_predict,
    }


def _metrics_text(spec: SimEndpointSpec, model: SlotModel) -> str:
    rows = [
        ("prompt_tokens_total", "counter", "Number of prompt tokens processed.",
         model.prompt_tokens_total),
        ("prompt_seconds_total", "counter", "Prompt process time (simulated).",
         model.prompt_seconds_total),
        ("tokens_predicted_total", "counter", "Number of generation tokens processed.",
         model.tokens_predicted_total),
        ("tokens_predicted_seconds_total", "counter", "Predict process time (simulated).",
         model.predicted_seconds_total),
        ("requests_processing", "gauge", "Number of requests processing.", model.busy_slots),
        ("requests_deferred", "gauge", "Number of requests deferred.", len(model.queue)),
    ]  # fmt: skip
    lines = [f"# SIMULATED llama.cpp endpoint {spec.name} ({spec.model_alias})"]
    for name, kind, help_text, value in rows:
        lines += [
            f"# HELP llamacpp:{name} {help_text}",
            f"# TYPE llamacpp:{name} {kind}",
            f"llamacpp:{name} {value}",
        ]
    lines += [
        "# HELP kitty_sim_simulated 1: this endpoint is SIMULATED.",
        "# TYPE kitty_sim_simulated gauge",
        "kitty_sim_simulated 1",
        "# HELP kitty_sim_clock_seconds Simulated seconds since the endpoint started.",
        "# TYPE kitty_sim_clock_seconds gauge",
        f"kitty_sim_clock_seconds {model.now}",
    ]
    return "\n".join(lines) + "\n"


def create_sim_app(spec: SimEndpointSpec) -> FastAPI:
    """Build the FastAPI app of one SIMULATED llama.cpp endpoint.

    Routes: ``POST /v1/chat/completions`` (JSON or SSE streaming), ``GET /health``,
    ``/props``, ``/slots``, ``/v1/models``, ``/metrics``.

    Args:
        spec: The endpoint to simulate.

    Returns:
        The app; ``app.state.engine`` is its :class:`SimEngine`.
    """
    engine = SimEngine(spec)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.now()  # start the clock with the server
        yield
        engine.abort_all()
        await engine.aclose()

    app = FastAPI(title=f"SIMULATED llama.cpp: {spec.name}", lifespan=lifespan)
    app.state.engine = engine
    app.state.sim_spec = spec
    app.state.before_stop = engine.abort_all

    def loading() -> bool:
        return engine.now() < spec.loading_s

    @app.get("/health")
    @app.get("/v1/health")
    async def health() -> Any:
        if loading():
            return _error(503, "Loading model", "unavailable_error")
        return {"status": "ok", "simulated": True}

    @app.get("/props")
    async def props() -> dict[str, Any]:
        return {
            "default_generation_settings": {
                "n_ctx": spec.n_ctx,
                "params": {"n_predict": -1, "temperature": 0.8},
            },
            "total_slots": spec.slots,
            "model_alias": spec.model_alias,
            "model_path": f"simulated://{spec.name}/{spec.model_alias}",
            "chat_template": "",
            "build_info": "SIMULATED (kitty-orchestrator ops.simfleet)",
            "simulated": True,
            "simulation": spec.model_dump(mode="json"),
        }

    @app.get("/slots")
    async def slots() -> list[dict[str, Any]]:
        model = engine.sync()
        return [
            {
                "id": index,
                "id_task": seq.id if seq is not None else -1,
                "n_ctx": spec.n_ctx,
                "speculative": False,
                "is_processing": seq is not None,
                "state": seq.phase if seq is not None else "idle",
                "simulated": True,
            }
            for index, seq in enumerate(model.slots)
        ]

    @app.get("/v1/models")
    @app.get("/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": spec.model_alias,
                    "object": "model",
                    "created": 0,
                    "owned_by": "llamacpp",
                    "meta": {"simulated": True, "n_ctx_train": spec.n_ctx},
                }
            ],
        }

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(_metrics_text(spec, engine.sync()))

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions")
    async def chat(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not valid JSON", "invalid_request_error")
        if not isinstance(body, Mapping):
            return _error(400, "request body must be a JSON object", "invalid_request_error")
        if loading():
            return _error(503, "Loading model", "unavailable_error")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty array", "invalid_request_error")
        if int(body.get("n") or 1) != 1:
            return _error(400, "Only one completion choice is allowed", "invalid_request_error")
        prompt_tokens = count_prompt_tokens(
            messages,
            body.get("tools"),
            chars_per_token=spec.chars_per_token,
            image_tokens=spec.image_tokens,
        )
        if prompt_tokens >= spec.n_ctx:
            return _error(
                400,
                "the request exceeds the available context size, try increasing it",
                "exceed_context_size_error",
                n_prompt_tokens=prompt_tokens,
                n_ctx=spec.n_ctx,
            )
        max_tokens = _first_int(
            body.get("max_completion_tokens"), body.get("max_tokens"), body.get("n_predict")
        )
        schema = response_schema(body)
        if schema is not None:
            pieces = split_pieces(json.dumps(example_from_schema(schema)))
            finish = "stop"
            limit = min(x for x in (max_tokens, spec.n_ctx - prompt_tokens) if x is not None)
            if len(pieces) > limit:
                pieces, finish = pieces[:limit], "length"
        else:
            tokens, finish = plan_completion(
                max_tokens=max_tokens,
                ignore_eos=bool(body.get("ignore_eos")),
                typical=spec.typical_completion_tokens,
                room=spec.n_ctx - prompt_tokens,
            )
            seed = zlib.crc32(json.dumps(messages[-1], sort_keys=True, default=str).encode())
            pieces = filler_pieces(tokens, seed)
        stream = bool(body.get("stream"))
        seq = engine.submit(prompt_tokens, len(pieces), streaming=stream)
        meta = {
            "id": f"chatcmpl-sim-{spec.name}-{seq.id}",
            "created": int(time.time()),
            "model": spec.model_alias,
            "system_fingerprint": "simulated",
        }
        if stream:
            options = body.get("stream_options") or {}
            include_usage = bool(options.get("include_usage"))
            generator = _stream(engine, seq, pieces, finish, meta, include_usage)
            return StreamingResponse(generator, media_type="text/event-stream")
        return await _complete(engine, seq, pieces, finish, meta, request)

    return app


async def _wait_disconnect(receive: Callable[[], Any]) -> None:
    """Return once the ASGI server reports that the client went away."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return


async def _complete(
    engine: SimEngine,
    seq: SimSequence,
    pieces: list[str],
    finish: str,
    meta: dict[str, Any],
    request: Request,
) -> JSONResponse:
    """Wait for a non-streamed completion; cancel it if the client disconnects."""
    done = asyncio.ensure_future(engine.wait_done(seq))
    gone = asyncio.ensure_future(_wait_disconnect(request.receive))
    try:
        await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (done, gone):
            task.cancel()
        if not seq.finished:
            engine.cancel(seq)
        engine.release(seq)
    if seq.phase != "done":
        return _error(
            503, "request cancelled (client gone or server stopping)", "unavailable_error"
        )
    return JSONResponse(
        {
            **meta,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(pieces)},
                    "finish_reason": finish,
                }
            ],
            "usage": _usage(seq),
            "timings": _timings_of(seq),
            "simulated": True,
        }
    )


def _sse(payload: Mapping[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n"


async def _stream(
    engine: SimEngine,
    seq: SimSequence,
    pieces: list[str],
    finish: str,
    meta: dict[str, Any],
    include_usage: bool,
) -> AsyncIterator[str]:
    """Yield OpenAI ``chat.completion.chunk`` SSE events as SIMULATED tokens appear."""
    base = {**meta, "object": "chat.completion.chunk"}
    sent, first = 0, True
    try:
        while True:
            finished = seq.finished
            ready = seq.tokens_ready
            if ready > sent or (finished and first and seq.phase == "done"):
                delta: dict[str, Any] = {"content": "".join(pieces[sent:ready])}
                if first:
                    delta = {"role": "assistant", **delta}
                    first = False
                yield _sse(
                    {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                )
                sent = ready
            if finished:
                break
            await engine.wait_change(seq)
        if seq.phase != "done":
            error = {"code": 503, "message": "request cancelled", "type": "unavailable_error"}
            yield _sse({"error": error})
            return
        yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if include_usage:
            yield _sse({**base, "choices": [], "usage": _usage(seq), "timings": _timings_of(seq)})
        yield _sse("[DONE]")
    finally:
        if not seq.finished:
            engine.cancel(seq)
        engine.release(seq)
