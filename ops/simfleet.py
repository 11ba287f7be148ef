"""SIMULATED llama.cpp fleet: OpenAI-compatible fake servers with a calibrated timing model.

Everything served from here is **SIMULATED**: no model runs, the text is deterministic filler
labelled ``[SIMULATED]``, and the responses, ``/props`` and ``/metrics`` say so. What *is*
modelled is how long a real ``llama-server`` would take, so a fleet profile can be tried
("what if the coder tier had 6 slots?") without the hardware:

* **Slots.** An endpoint has N slots; at most N sequences are processed at once. Further
  requests wait in an unbounded FIFO queue, like llama.cpp, and start when a slot frees.
* **Prefill.** A request first processes its prompt at ``prefill_tok_s`` (default 2,600
  tok/s, flat). Sequences prefilling at the same time share that rate. Prefill does not slow
  down sequences that are decoding (a simplification: llama.cpp mixes both in one batch).
* **Decode.** With n sequences decoding, the endpoint produces ``aggregate(n)`` tokens/s and
  each sequence gets ``aggregate(n) / n``; rates are recomputed whenever a sequence joins or
  leaves (event-driven, exact in virtual time). ``aggregate(n) = decode_tok_s_1 * rel(n)``
  where ``rel`` is a relative throughput curve. The default curve is llama-batched-bench on
  an M2 Ultra with gemma-3-4b Q8_0: 97.9 tok/s for one sequence, 1.84x at 2, 2.75x at 4.
  Between points ``rel`` is linear; past the last point it saturates:
  ``rel(n) = r_last + s_last * tau * (1 - exp(-(n - n_last) / tau))`` where ``s_last`` is
  the slope of the last segment (so the slope is continuous) and ``tau`` defaults to 2
  sequences; the default curve tends to 3.66x (3.33x at 6, 3.54x at 8).
* **Prompt size** is estimated from the text: ``ceil(chars / 4)`` per message plus 4 tokens
  of chat-template overhead per message; images count 256 tokens; tool definitions are
  counted from their JSON.
* **Completion length.** With ``ignore_eos: true`` exactly ``max_tokens`` (or
  ``max_completion_tokens`` / ``n_predict``) tokens; without it
  ``min(max_tokens, typical_completion_tokens)``; always capped by the slot context. Every
  filler token is exactly 4 characters, so re-counting the output as ``chars / 4`` gives
  the same token count.
* **Structured output.** ``response_format`` json_schema (the nested OpenAI form), or
  json_object with a ``schema``, returns a minimal valid JSON object built from the schema:
  required properties only, the first enum value, the outermost array with one item, nested
  arrays with their ``minItems`` (see :func:`example_from_schema`). The flat form
  ``{"type": "json_schema", "schema": ...}`` is read as llama.cpp reads it: no schema, so a
  generic JSON object comes back.
* **time_scale.** Wall-clock time = simulated time x ``time_scale`` (0.1 runs 10x faster).
  ``timings``, ``usage`` and ``/metrics`` report *simulated* durations, i.e. what the real
  hardware would show; ratios between runs are preserved at any scale.

Use :class:`SimFleet` to serve a fleet profile (``m3-ultra-sim``) on its loopback ports,
:func:`create_sim_app` for one endpoint, or :func:`simulate_offline` to run the timing model
without HTTP or waiting. ``python -m ops.simfleet --fleet m3-ultra-sim`` serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from endpoints.config import EndpointConfig, FleetConfig, load_fleet
from kitty.errors import SimFleetError

logger = logging.getLogger("kitty.simfleet")

SIMULATED_LABEL = "[SIMULATED]:"
DEFAULT_SIM_FLEET = "m3-ultra-sim"

#: llama-batched-bench, M2 Ultra, gemma-3-4b Q8_0: aggregate decode relative to 1 sequence.
DEFAULT_DECODE_CURVE: tuple[tuple[int, float], ...] = ((1, 1.0), (2, 1.84), (4, 2.75))
#: Same benchmark: single-sequence decode tokens/s.
DEFAULT_DECODE_TOK_S_1 = 97.9
#: Prompt processing tokens/s (flat), same model and machine.
DEFAULT_PREFILL_TOK_S = 2600.0

_PREFILL_NOTE = (
    "prefill: rough estimate, llama.cpp 7B Q4_0 pp512 on M2/M3 Ultra (~1,200-1,500 tok/s, "
    "llama.cpp discussion #4167) scaled by parameter count"
)

#: Simulation parameters of the ``m3-ultra-sim`` profile, keyed by endpoint name. The fleet
#: schema forbids unknown keys, so they live here. Decode speeds are single-sequence
#: ESTIMATES for a Mac Studio M3 Ultra, not measurements.
SIM_ENDPOINT_PARAMS: dict[str, dict[str, Any]] = {
    "athene-q4": {
        "decode_tok_s_1": 12.0,
        "prefill_tok_s": 150.0,
        "note": "Athene V2 72B Q4_K_M on M3 Ultra: ~12 tok/s decode (estimate); " + _PREFILL_NOTE,
    },
    "gpt-oss-120b": {
        "decode_tok_s_1": 35.0,
        "prefill_tok_s": 500.0,
        "typical_completion_tokens": 512,
        "note": "GPT-OSS 120B MXFP4 (MoE, ~5B active) on M3 Ultra: ~35 tok/s decode "
        "(conservative estimate); prefill ~500 tok/s (estimate)",
    },
    "gemma3-27b-vision": {
        "decode_tok_s_1": 20.0,
        "prefill_tok_s": 375.0,
        "note": "Gemma 3 27B Q4_K_M on M3 Ultra: ~20 tok/s decode (estimate); " + _PREFILL_NOTE,
    },
    "qwen32b-coder": {
        "decode_tok_s_1": 13.0,
        "prefill_tok_s": 320.0,
        "note": "Qwen2.5 Coder 32B Q8_0 on M3 Ultra: ~13 tok/s decode (estimate); " + _PREFILL_NOTE,
    },
    "hermes-8b-summary": {
        "decode_tok_s_1": 60.0,
        "prefill_tok_s": 1270.0,
        "note": "Hermes 3 Llama 3.1 8B Q4_K_M on M3 Ultra: ~60 tok/s decode (estimate); "
        + _PREFILL_NOTE,
    },
}


# --------------------------------------------------------------------------------------
# Endpoint specification and the throughput curve
# --------------------------------------------------------------------------------------


class SimEndpointSpec(BaseModel):
    """One SIMULATED llama.cpp endpoint: its identity and timing model.

    Attributes:
        name: Endpoint name (as in the fleet file).
        model_alias: Model id reported and accepted (llama.cpp ``--alias``).
        host: Address to bind.
        port: Port to bind; 0 picks a free one.
        slots: Parallel slots (``-np``).
        n_ctx: Context tokens per slot; longer prompts are refused with HTTP 400.
        decode_tok_s_1: Decode tokens/s of a single sequence.
        decode_curve: ``(sequences, aggregate relative to one sequence)`` points, starting
            at ``(1, 1.0)`` with increasing sequence counts.
        saturation_tau: Sequences over which the gain past the last curve point saturates.
        prefill_tok_s: Prompt-processing tokens/s, shared by sequences prefilling together.
        typical_completion_tokens: Completion length when ``ignore_eos`` is not set.
        chars_per_token: Characters per prompt token for the size estimate.
        image_tokens: Prompt tokens counted per image.
        time_scale: Wall seconds per simulated second (0.1 runs 10x faster).
        loading_s: Simulated seconds during which ``/health`` answers 503 "Loading model".
        stream_tick_s: Wall seconds between streamed chunks at most.
        note: Where the figures come from (shown in ``/props``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="sim", min_length=1)
    model_alias: str = Field(default="sim-model", min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    slots: int = Field(default=4, gt=0, le=256)
    n_ctx: int = Field(default=8192, gt=0)
    decode_tok_s_1: float = Field(default=DEFAULT_DECODE_TOK_S_1, gt=0)
    decode_curve: tuple[tuple[int, float], ...] = DEFAULT_DECODE_CURVE
    saturation_tau: float = Field(default=2.0, gt=0)
    prefill_tok_s: float = Field(default=DEFAULT_PREFILL_TOK_S, gt=0)
    typical_completion_tokens: int = Field(default=256, gt=0)
    chars_per_token: float = Field(default=4.0, gt=0)
    image_tokens: int = Field(default=256, ge=0)
    time_scale: float = Field(default=1.0, gt=0)
    loading_s: float = Field(default=0.0, ge=0)
    stream_tick_s: float = Field(default=0.02, gt=0)
    note: str = ""

    @field_validator("decode_curve")
    @classmethod
    def _check_curve(cls, curve: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
        if not curve or curve[0] != (1, 1.0):
            raise ValueError("the curve must start at (1, 1.0): it is relative to one sequence")
        for (n_a, r_a), (n_b, r_b) in itertools.pairwise(curve):
            if n_b <= n_a:
                raise ValueError("sequence counts must increase along the curve")
            if r_b <= 0 or r_a <= 0:
                raise ValueError("relative throughputs must be positive")
        return curve

    @property
    def speed_scale(self) -> float:
        """Single-sequence decode speed relative to the gemma-3-4b calibration (97.9 tok/s)."""
        return self.decode_tok_s_1 / DEFAULT_DECODE_TOK_S_1

    @property
    def base_url(self) -> str:
        """Server root for this spec's host and port."""
        return f"http://{self.host}:{self.port}"

    def relative_throughput(self, sequences: float) -> float:
        """Aggregate decode throughput with ``sequences`` decoding, relative to one.

        Linear between curve points; past the last point the gain saturates exponentially
        with the last segment's slope (see the module docstring).
        """
        return relative_throughput(self.decode_curve, sequences, self.saturation_tau)

    def aggregate_decode_tok_s(self, sequences: int) -> float:
        """Tokens/s the endpoint decodes in total with ``sequences`` decoding."""
        return self.decode_tok_s_1 * self.relative_throughput(sequences)

    def per_sequence_tok_s(self, sequences: int) -> float:
        """Tokens/s each of ``sequences`` concurrently decoding sequences gets."""
        return self.aggregate_decode_tok_s(sequences) / sequences if sequences > 0 else 0.0


def relative_throughput(
    curve: Sequence[tuple[int, float]], sequences: float, tau: float = 2.0
) -> float:
    """Evaluate a relative aggregate-throughput curve.

    Args:
        curve: ``(sequences, relative aggregate)`` points, increasing, starting at (1, 1.0).
        sequences: Number of sequences decoding.
        tau: Saturation length (sequences) past the last point.

    Returns:
        Aggregate throughput relative to one sequence (0 for no sequences).
    """
    if sequences <= 0:
        return 0.0
    if sequences <= curve[0][0]:
        return curve[0][1] * sequences / curve[0][0]
    for (n_a, r_a), (n_b, r_b) in itertools.pairwise(curve):
        if sequences <= n_b:
            return r_a + (r_b - r_a) * (sequences - n_a) / (n_b - n_a)
    n_last, r_last = curve[-1]
    if len(curve) < 2:
        return r_last
    n_prev, r_prev = curve[-2]
    slope = (r_last - r_prev) / (n_last - n_prev)
    return r_last + slope * tau * (1.0 - math.exp(-(sequences - n_last) / tau))


# --------------------------------------------------------------------------------------
# Request shaping: prompt size, completion length, filler text, JSON from a schema
# --------------------------------------------------------------------------------------


def _text_of(content: Any, image_tokens: int, chars_per_token: float) -> tuple[int, int]:
    """Return (characters, image tokens) of a message ``content``."""
    if content is None:
        return 0, 0
    if isinstance(content, str):
        return len(content), 0
    chars, images = 0, 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                chars += len(part)
            elif isinstance(part, Mapping):
                kind = part.get("type")
                if kind == "text":
                    chars += len(str(part.get("text", "")))
                elif kind in {"image_url", "image", "input_image"}:
                    images += image_tokens
                else:
                    chars += len(json.dumps(part))
        return chars, images
    return len(json.dumps(content)), 0


def count_prompt_tokens(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None = None,
    *,
    chars_per_token: float = 4.0,
    image_tokens: int = 256,
    per_message_overhead: int = 4,
) -> int:
    """Estimate prompt tokens: ``ceil(chars / chars_per_token)`` + overhead per message.

    Args:
        messages: OpenAI/Ollama chat messages (``content`` as text or parts).
        tools: Tool definitions; their JSON is counted like text.
        chars_per_token: Characters per token (4 is a common rule of thumb).
        image_tokens: Tokens counted per image part.
        per_message_overhead: Chat-template tokens per message (role markers).

    Returns:
        The estimated prompt token count.
    """
    total = 0
    for message in messages:
        chars, images = _text_of(message.get("content"), image_tokens, chars_per_token)
        if message.get("tool_calls"):
            chars += len(json.dumps(message["tool_calls"]))
        images += image_tokens * len(message.get("images") or [])
        total += math.ceil(chars / chars_per_token) + images + per_message_overhead
    if tools:
        total += math.ceil(len(json.dumps(list(tools))) / chars_per_token)
    return total


def plan_completion(
    *,
    max_tokens: int | None,
    ignore_eos: bool,
    typical: int,
    room: int,
) -> tuple[int, Literal["stop", "length"]]:
    """Decide how many tokens a SIMULATED completion has and why it stops.

    Args:
        max_tokens: The request's cap (``None``: unlimited, as llama.cpp's ``-1``).
        ignore_eos: Generate until the cap (llama.cpp ``ignore_eos``).
        typical: Length of a completion that ends on its own.
        room: Context tokens left after the prompt.

    Returns:
        ``(tokens, finish_reason)``.
    """
    if ignore_eos:
        tokens = room if max_tokens is None else max_tokens
    else:
        tokens = typical if max_tokens is None else min(max_tokens, typical)
    reason: Literal["stop", "length"] = (
        "length" if max_tokens is not None and tokens >= max_tokens else "stop"
    )
    if tokens >= room:
        tokens, reason = room, "length"
    return max(0, tokens), reason


_FILLER_WORDS = (
    " the", " sim", " ran", " one", " new", " day", " and", " fed", " two",
    " old", " map", " got", " big", " kit", " for", " all", " out", " now",
    " set", " tok", " run", " cat", " sky", " was",
)  # fmt: skip
_LABEL_PIECES = ("[SIM", "ULAT", "ED]:")  # SIMULATED_LABEL in 4-character tokens


def filler_pieces(tokens: int, seed: int = 0) -> list[str]:
    """Deterministic SIMULATED output: ``tokens`` pieces of exactly 4 characters.

    The text starts with ``[SIMULATED]:`` and continues with short words chosen from
    ``seed``, so the same request always gets the same answer.
    """
    pieces = list(_LABEL_PIECES[:tokens])
    words = len(_FILLER_WORDS)
    pieces.extend(_FILLER_WORDS[(seed + 7 * i) % words] for i in range(tokens - len(pieces)))
    return pieces


def split_pieces(text: str, width: int = 4) -> list[str]:
    """Split text into ``width``-character pieces (the SIMULATED tokens of a JSON answer)."""
    return [text[i : i + width] for i in range(0, len(text), width)] or [""]


_STRING_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00",
    "email": "simulated@example.com",
    "uri": "https://example.com/simulated",
    "url": "https://example.com/simulated",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        return {}
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return {}
        node = node[part]
    return node if isinstance(node, Mapping) else {}


def example_from_schema(schema: Mapping[str, Any]) -> Any:
    """Build a small value that validates against a JSON schema (best effort).

    Rules: ``$ref`` into ``$defs``/``definitions`` is followed; ``const``/``enum`` give their
    (first) value; ``anyOf``/``oneOf`` take the first non-null option; ``allOf`` is merged;
    objects get their required properties only (a top-level schema without properties gives
    ``{"simulated": true}``); the outermost array gets ``max(minItems, 1)`` items, nested
    arrays ``minItems``; strings are ``"simulated"`` (padded/cut to the length bounds, or a
    sample for known formats; ``pattern`` is not honoured); numbers take their lower bound or
    0; booleans are ``true``.

    Args:
        schema: A JSON schema (draft 2020-12 subset as produced by pydantic / OpenAI SDKs).

    Returns:
        A JSON-serialisable value.
    """
    return _example(schema, schema, depth=0, array_depth=0, index=0)


def _example(
    schema: Mapping[str, Any],
    root: Mapping[str, Any],
    *,
    depth: int,
    array_depth: int,
    index: int,
) -> Any:
    if depth > 32:
        return None
    if not isinstance(schema, Mapping):
        return None
    if "$ref" in schema:
        target = _resolve_ref(str(schema["$ref"]), root)
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _example(merged, root, depth=depth + 1, array_depth=array_depth, index=index)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if options:
            chosen = next((o for o in options if o.get("type") != "null"), options[0])
            rest = {k: v for k, v in schema.items() if k != key}
            merged = {**rest, **chosen}
            return _example(merged, root, depth=depth + 1, array_depth=array_depth, index=index)
    if schema.get("allOf"):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve_ref(part["$ref"], root) if "$ref" in part else part
            for key, value in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return _example(merged, root, depth=depth + 1, array_depth=array_depth, index=index)

    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None:
        if "properties" in schema or depth == 0:
            kind = "object"
        elif "items" in schema or "prefixItems" in schema:
            kind = "array"
        else:
            kind = "string"

    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = list(dict.fromkeys(schema.get("required") or []))
        out = {
            name: _example(
                properties.get(name, {}),
                root,
                depth=depth + 1,
                array_depth=array_depth,
                index=0,
            )
            for name in required
        }
        if (
            not properties
            and not out
            and depth == 0
            and schema.get("additionalProperties") is not False
        ):
            out["simulated"] = True
        return out
    if kind == "array":
        count = int(schema.get("minItems", 0))
        if array_depth == 0:
            count = max(count, 1)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        prefix = schema.get("prefixItems") or []
        items_schema = schema.get("items") if isinstance(schema.get("items"), Mapping) else {}
        return [
            _example(
                prefix[i] if i < len(prefix) else items_schema,
                root,
                depth=depth + 1,
                array_depth=array_depth + 1,
                index=i,
            )
            for i in range(count)
        ]
    if kind == "string":
        value = _STRING_FORMATS.get(str(schema.get("format")), "simulated")
        if index and value == "simulated":
            value = f"simulated-{index + 1}"
        min_len, max_len = int(schema.get("minLength", 0)), schema.get("maxLength")
        if len(value) < min_len:
            value = value + "x" * (min_len - len(value))
        if max_len is not None:
            value = value[: int(max_len)]
        return value
    if kind in {"integer", "number"}:
        low: float = 0
        if "minimum" in schema:
            low = schema["minimum"]
        elif "exclusiveMinimum" in schema:
            low = schema["exclusiveMinimum"] + 1
        if "maximum" in schema and low > schema["maximum"]:
            low = schema["maximum"]
        if "exclusiveMaximum" in schema and low >= schema["exclusiveMaximum"]:
            low = schema["exclusiveMaximum"] - 1
        return math.ceil(low) if kind == "integer" else float(low)
    if kind == "boolean":
        return True
    return None


def response_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The JSON schema a chat request constrains its output to, as llama.cpp reads it.

    Returns:
        ``None`` for free text; a schema (``{}`` = any JSON object) otherwise.
    """
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping):
        kind = fmt.get("type")
        if kind == "json_object":
            return fmt.get("schema") or {}
        if kind == "json_schema":
            wrapper = fmt.get("json_schema")
            return (wrapper.get("schema") if isinstance(wrapper, Mapping) else None) or {}
    if isinstance(body.get("json_schema"), Mapping):
        return body["json_schema"]
    return None


# --------------------------------------------------------------------------------------
# The timing model: a discrete-event simulation of one endpoint's slots
# --------------------------------------------------------------------------------------

Phase = Literal["queued", "prefill", "decode", "done", "cancelled"]
_EPS = 1e-9


@dataclass(eq=False)
class SimSequence:
    """One request inside the SIMULATED endpoint; all times are simulated seconds.

    Attributes:
        id: Task id (increasing per endpoint).
        prompt_tokens: Prompt size.
        n_predict: Tokens it will generate.
        arrival: When it was submitted.
        phase: ``queued``, ``prefill``, ``decode``, ``done`` or ``cancelled``.
        slot: Slot index while it holds one.
        prefill_left: Prompt tokens still to process.
        decoded: Tokens generated so far (fractional between tokens).
        admitted_at: When it got a slot.
        prefill_done_at: When its prompt was processed.
        finished_at: When it finished or was cancelled.
    """

    id: int
    prompt_tokens: int
    n_predict: int
    arrival: float
    phase: Phase = "queued"
    slot: int | None = None
    prefill_left: float = 0.0
    decoded: float = 0.0
    admitted_at: float | None = None
    prefill_done_at: float | None = None
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        """True once done or cancelled."""
        return self.phase in ("done", "cancelled")

    @property
    def tokens_ready(self) -> int:
        """Whole tokens generated so far."""
        if self.phase == "done":
            return self.n_predict
        return min(self.n_predict, int(self.decoded + _EPS))

    @property
    def queued_s(self) -> float:
        """Seconds spent waiting for a slot."""
        end = self.admitted_at if self.admitted_at is not None else self.finished_at
        return (end - self.arrival) if end is not None else 0.0

    @property
    def prefill_s(self) -> float:
        """Seconds of prompt processing."""
        if self.admitted_at is None or self.prefill_done_at is None:
            return 0.0
        return self.prefill_done_at - self.admitted_at

    @property
    def decode_s(self) -> float:
        """Seconds from the end of prefill to the last token."""
        if self.prefill_done_at is None or self.finished_at is None:
            return 0.0
        return self.finished_at - self.prefill_done_at

    @property
    def total_s(self) -> float:
        """Seconds from arrival to finish."""
        return (self.finished_at - self.arrival) if self.finished_at is not None else 0.0


class SlotModel:
    """Event-driven model of one endpoint's slots, queue, prefill and batched decode.

    Pure and synchronous: time only moves when :meth:`advance` is called, so the same model
    drives the HTTP server (advanced to the wall clock) and :func:`simulate_offline`.
    """

    def __init__(self, spec: SimEndpointSpec) -> None:
        self.spec = spec
        self.now = 0.0
        self.slots: list[SimSequence | None] = [None] * spec.slots
        self.queue: deque[SimSequence] = deque()
        self.changed: set[SimSequence] = set()
        self._ids = itertools.count()
        self.requests_total = 0
        self.prompt_tokens_total = 0
        self.tokens_predicted_total = 0
        self.prompt_seconds_total = 0.0
        self.predicted_seconds_total = 0.0

    # ---- queries ----------------------------------------------------------------------

    def active(self) -> list[SimSequence]:
        """Sequences holding a slot."""
        return [s for s in self.slots if s is not None]

    @property
    def busy_slots(self) -> int:
        """Slots holding a sequence."""
        return sum(1 for s in self.slots if s is not None)

    def decoding(self) -> list[SimSequence]:
        """Sequences currently generating tokens."""
        return [s for s in self.slots if s is not None and s.phase == "decode"]

    def _rates(self) -> tuple[float, float]:
        """(prefill tokens/s per prefilling sequence, decode tokens/s per decoding one)."""
        active = self.active()
        n_prefill = sum(1 for s in active if s.phase == "prefill")
        n_decode = sum(1 for s in active if s.phase == "decode")
        prefill = self.spec.prefill_tok_s / n_prefill if n_prefill else 0.0
        return prefill, self.spec.per_sequence_tok_s(n_decode)

    def _next_completion(self) -> tuple[float, list[SimSequence]]:
        prefill_rate, decode_rate = self._rates()
        best, due = math.inf, []
        for seq in self.active():
            if seq.phase == "prefill":
                dt = seq.prefill_left / prefill_rate if prefill_rate else math.inf
            else:
                left = seq.n_predict - seq.decoded
                dt = left / decode_rate if decode_rate else math.inf
            dt = max(dt, 0.0)
            if dt < best - 1e-12:
                best, due = dt, [seq]
            elif abs(dt - best) <= 1e-12:
                due.append(seq)
        return best, due

    def next_event_time(self) -> float | None:
        """Simulated time of the next phase change, or ``None`` when idle."""
        dt, due = self._next_completion()
        return self.now + dt if due else None

    # ---- changes ----------------------------------------------------------------------

    def submit(self, prompt_tokens: int, n_predict: int, at: float | None = None) -> SimSequence:
        """Queue a request at time ``at`` (default: now); it starts when a slot is free."""
        self.advance(self.now if at is None else at)
        seq = SimSequence(
            id=next(self._ids),
            prompt_tokens=max(0, int(prompt_tokens)),
            n_predict=max(0, int(n_predict)),
            arrival=self.now,
        )
        self.requests_total += 1
        self.queue.append(seq)
        self.changed.add(seq)
        self._admit()
        return seq

    def cancel(self, seq: SimSequence, at: float | None = None) -> None:
        """Drop a request (client gone): leave the queue or free its slot."""
        self.advance(self.now if at is None else at)
        if seq.finished:
            return
        if seq.phase == "queued":
            with contextlib.suppress(ValueError):
                self.queue.remove(seq)
        elif seq.slot is not None:
            self.slots[seq.slot] = None
        seq.phase, seq.slot, seq.finished_at = "cancelled", None, self.now
        self.changed.add(seq)
        self._admit()

    def advance(self, to: float) -> None:
        """Move simulated time to ``to``, processing every event on the way in order."""
        to = max(to, self.now)
        while True:
            self._admit()
            dt, due = self._next_completion()
            if due and self.now + dt <= to:
                self._progress(dt, due)
                self.now += dt
                self._complete(due)
                continue
            self._progress(to - self.now, [])
            self.now = to
            return

    def _admit(self) -> None:
        for index, occupant in enumerate(self.slots):
            if not self.queue:
                return
            if occupant is None:
                seq = self.queue.popleft()
                seq.slot, seq.admitted_at = index, self.now
                seq.phase, seq.prefill_left = "prefill", float(seq.prompt_tokens)
                self.slots[index] = seq
                self.changed.add(seq)

    def _progress(self, dt: float, due: Iterable[SimSequence]) -> None:
        if dt > 0:
            prefill_rate, decode_rate = self._rates()
            for seq in self.active():
                if seq.phase == "prefill":
                    seq.prefill_left = max(0.0, seq.prefill_left - prefill_rate * dt)
                else:
                    seq.decoded = min(float(seq.n_predict), seq.decoded + decode_rate * dt)
        for seq in due:  # land exactly on the event despite float rounding
            if seq.phase == "prefill":
                seq.prefill_left = 0.0
            else:
                seq.decoded = float(seq.n_predict)

    def _complete(self, due: Iterable[SimSequence]) -> None:
        for seq in due:
            if seq.phase == "prefill":
                seq.phase, seq.prefill_done_at = "decode", self.now
                self.prompt_tokens_total += seq.prompt_tokens
                self.prompt_seconds_total += seq.prefill_s
                self.changed.add(seq)
            if seq.phase == "decode" and seq.decoded >= seq.n_predict - _EPS:
                seq.phase, seq.finished_at = "done", self.now
                if seq.slot is not None:
                    self.slots[seq.slot] = None
                seq.slot = None
                self.tokens_predicted_total += seq.n_predict
                self.predicted_seconds_total += seq.decode_s
                self.changed.add(seq)


@dataclass(frozen=True)
class OfflineRequest:
    """A request for :func:`simulate_offline` (times in simulated seconds)."""

    arrival_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 256


def simulate_offline(
    spec: SimEndpointSpec, requests: Sequence[OfflineRequest]
) -> list[SimSequence]:
    """Run the SIMULATED timing model to completion without HTTP or waiting.

    Args:
        spec: The endpoint (its ``time_scale`` is irrelevant here).
        requests: Requests with arrival times; equal arrivals are queued in list order.

    Returns:
        One finished :class:`SimSequence` per request, in the given order, with
        ``admitted_at``, ``prefill_done_at`` and ``finished_at`` set.
    """
    model = SlotModel(spec)
    order = sorted(range(len(requests)), key=lambda i: requests[i].arrival_s)
    results: list[SimSequence | None] = [None] * len(requests)
    for i in order:
        req = requests[i]
        results[i] = model.submit(req.prompt_tokens, req.completion_tokens, at=req.arrival_s)
    while (when := model.next_event_time()) is not None:
        model.advance(when)
    return [seq for seq in results if seq is not None]


def measure_aggregate_decode(spec: SimEndpointSpec, sequences: int, tokens: int = 1000) -> float:
    """Aggregate decode tokens/s the model yields for ``sequences`` identical requests.

    Prompts are empty so the figure is pure decode: total tokens / makespan.
    """
    runs = simulate_offline(spec, [OfflineRequest(0.0, 0, tokens)] * sequences)
    makespan = max(seq.finished_at or 0.0 for seq in runs)
    return sequences * tokens / makespan


# --------------------------------------------------------------------------------------
# The live engine: the model advanced by the event loop's clock
# --------------------------------------------------------------------------------------


class SimEngine:
    """Drives a :class:`SlotModel` in real time (scaled) on the running event loop."""

    def __init__(self, spec: SimEndpointSpec) -> None:
        self.spec = spec
        self.model = SlotModel(spec)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._events: dict[SimSequence, asyncio.Event] = {}
        self._streaming: set[SimSequence] = set()

    def _ensure_started(self) -> None:
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop, self._t0 = loop, loop.time()
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run(), name=f"simfleet-{self.spec.name}")

    def now(self) -> float:
        """Simulated seconds since the engine started."""
        self._ensure_started()
        assert self._loop is not None
        return (self._loop.time() - self._t0) / self.spec.time_scale

    def sync(self) -> SlotModel:
        """Advance the model to now and return it (for ``/slots``, ``/metrics``)."""
        self.model.advance(self.now())
        self._notify()
        return self.model

    def submit(self, prompt_tokens: int, n_predict: int, *, streaming: bool) -> SimSequence:
        """Queue a request now."""
        seq = self.model.submit(prompt_tokens, n_predict, at=self.now())
        self._events[seq] = asyncio.Event()
        if streaming:
            self._streaming.add(seq)
        self._notify()
        return seq

    async def wait_change(self, seq: SimSequence) -> None:
        """Wait until the sequence changed phase or (streaming) produced tokens."""
        event = self._events.get(seq)
        if event is None or seq.finished:
            return
        await event.wait()
        event.clear()

    async def wait_done(self, seq: SimSequence) -> None:
        """Wait until the sequence finished or was cancelled."""
        while not seq.finished:
            await self.wait_change(seq)

    def cancel(self, seq: SimSequence) -> None:
        """Drop a request whose client went away."""
        if not seq.finished:
            self.model.cancel(seq, at=self.now())
            self._notify()

    def release(self, seq: SimSequence) -> None:
        """Forget a sequence once its response is out."""
        self._events.pop(seq, None)
        self._streaming.discard(seq)

    def abort_all(self) -> None:
        """Cancel every queued and running request (server shutting down)."""
        if self._task is None:
            return
        for seq in [*self.model.queue, *self.model.active()]:
            self.model.cancel(seq, at=self.now())
        self._notify()

    def _notify(self) -> None:
        for seq in self.model.changed:
            event = self._events.get(seq)
            if event is not None:
                event.set()
        self.model.changed.clear()
        for seq in self._streaming:
            if seq.phase == "decode":
                self._events[seq].set()
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            now = self.now()
            self.model.advance(now)
            self._notify()
            upcoming = self.model.next_event_time()
            timeout = None if upcoming is None else max(0.0, upcoming - now) * self.spec.time_scale
            if any(seq.phase == "decode" for seq in self._streaming):
                tick = self.spec.stream_tick_s
                timeout = tick if timeout is None else min(timeout, tick)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    async def aclose(self) -> None:
        """Stop the engine task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


# --------------------------------------------------------------------------------------
# The HTTP app: llama.cpp's OpenAI-compatible surface
# --------------------------------------------------------------------------------------


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


def timings_of(seq: SimSequence) -> dict[str, Any]:
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
            "timings": timings_of(seq),
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
            yield _sse({**base, "choices": [], "usage": _usage(seq), "timings": timings_of(seq)})
        yield _sse("[DONE]")
    finally:
        if not seq.finished:
            engine.cancel(seq)
        engine.release(seq)


# --------------------------------------------------------------------------------------
# Serving: uvicorn servers on one background thread
# --------------------------------------------------------------------------------------


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` (0 = any free port).

    Raises:
        SimFleetError: The port is taken; the message names it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it headers and body leave in two segments and wait ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SimFleetError(
            f"cannot listen on {host}:{port} ({exc.strerror}); stop whatever uses that port "
            "or give the endpoint another port in the fleet file"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class BackgroundServers:
    """Serve ASGI apps with uvicorn on one background thread and event loop.

    Sockets are bound in :meth:`start` (in the caller's thread), so a taken port raises a
    clear error instead of uvicorn's ``sys.exit``. Before stopping, each app's optional
    ``app.state.before_stop()`` hook runs on the server loop (to end hanging requests).
    """

    def __init__(
        self,
        apps: Sequence[tuple[Any, str, int]],
        *,
        name: str = "kitty-sim",
        log_level: str = "warning",
        graceful_s: float = 1.0,
    ) -> None:
        self._apps = list(apps)
        self._name = name
        self._log_level = log_level
        self._graceful_s = graceful_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._servers: list[Any] = []
        self.ports: list[int] = []

    @property
    def running(self) -> bool:
        """True while the server thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout_s: float = 15.0) -> list[int]:
        """Bind every socket, start the servers and wait until they accept connections.

        Returns:
            The bound ports, in the order of the apps.

        Raises:
            SimFleetError: A port is taken or a server failed to start.
        """
        if self.running:
            return self.ports
        sockets: list[socket.socket] = []
        try:
            for _, host, port in self._apps:
                sockets.append(bind_socket(host, port))
        except SimFleetError:
            for sock in sockets:
                sock.close()
            raise
        self.ports = [sock.getsockname()[1] for sock in sockets]
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._thread_main, args=(sockets,), name=self._name, daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise SimFleetError(f"servers did not start within {timeout_s:g}s")
        if self._error is not None:
            error = self._error
            self.stop()
            raise SimFleetError(f"server failed to start: {error!r}") from error
        return self.ports

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every server and join the thread (in-flight requests are cancelled)."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and self._stop_event is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._stop_event.set)
        thread.join(timeout_s)
        if thread.is_alive() and loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._force_exit)
            thread.join(timeout_s)
        self._thread = None

    def _force_exit(self) -> None:
        for server in self._servers:
            server.force_exit = True

    def _thread_main(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(sockets))
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
        finally:
            for sock in sockets:
                sock.close()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None
            self._ready.set()

    async def _serve(self, sockets: list[socket.socket]) -> None:
        import uvicorn

        self._stop_event = asyncio.Event()
        self._servers = [
            uvicorn.Server(
                uvicorn.Config(
                    app,
                    host=host,
                    port=sock.getsockname()[1],
                    log_config=None,
                    log_level=self._log_level,
                    access_log=False,
                    lifespan="on",
                    timeout_graceful_shutdown=self._graceful_s,
                )
            )
            for (app, host, _), sock in zip(self._apps, sockets, strict=True)
        ]
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, sock in zip(self._servers, sockets, strict=True)
        ]
        while not all(server.started for server in self._servers):
            failed = next((task for task in tasks if task.done()), None)
            if failed is not None:
                failed.result()  # raises the startup error
                raise SimFleetError("a server exited during startup")
            await asyncio.sleep(0.005)
        self._ready.set()
        await self._stop_event.wait()
        for app, _, _ in self._apps:
            hook = getattr(getattr(app, "state", None), "before_stop", None)
            if callable(hook):
                hook()
        for server in self._servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------------------
# A whole simulated fleet
# --------------------------------------------------------------------------------------


def sim_spec_for_endpoint(
    endpoint: EndpointConfig,
    *,
    time_scale: float = 1.0,
    overrides: Mapping[str, Any] | None = None,
) -> SimEndpointSpec:
    """The SIMULATED spec of a fleet endpoint: its slots/ctx/port + simulation parameters.

    Parameters come from :data:`SIM_ENDPOINT_PARAMS` by endpoint name (defaults: the
    gemma-3-4b M2 Ultra calibration), then ``overrides``.
    """
    params: dict[str, Any] = {
        "name": endpoint.name,
        "model_alias": endpoint.model,
        "host": endpoint.host,
        "port": endpoint.port,
        "slots": endpoint.slots or 4,
        "n_ctx": endpoint.ctx,
        "time_scale": time_scale,
    }
    params.update(SIM_ENDPOINT_PARAMS.get(endpoint.name, {}))
    params.update(overrides or {})
    return SimEndpointSpec(**params)


class SimFleet:
    """SIMULATED llama.cpp endpoints served on loopback ports by one background thread.

    Example:
        >>> with SimFleet.from_fleet("m3-ultra-sim", time_scale=0.1) as sim:  # doctest: +SKIP
        ...     fleet = sim.fleet  # the FleetConfig, pointing at the simulated servers
    """

    def __init__(
        self,
        specs: Sequence[SimEndpointSpec],
        *,
        fleet: FleetConfig | None = None,
        log_level: str = "warning",
    ) -> None:
        """Prepare the servers (nothing listens before :meth:`start`).

        Args:
            specs: One spec per endpoint; ``port=0`` picks a free port.
            fleet: The fleet the specs came from; :attr:`fleet` rewrites its URLs.
            log_level: uvicorn log level.
        """
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise SimFleetError(f"endpoint names must be unique, got {names}")
        self._specs = list(specs)
        self._source_fleet = fleet
        self._log_level = log_level
        self._servers: BackgroundServers | None = None
        self.apps: dict[str, Any] = {}
        self.specs: dict[str, SimEndpointSpec] = {spec.name: spec for spec in specs}
        self.skipped: list[str] = []

    @classmethod
    def from_fleet(
        cls,
        fleet: str | FleetConfig | None = DEFAULT_SIM_FLEET,
        *,
        time_scale: float = 1.0,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        log_level: str = "warning",
    ) -> SimFleet:
        """Simulate every llama.cpp endpoint of a fleet on its own host and port.

        Args:
            fleet: Profile name, path or loaded config (default ``m3-ultra-sim``).
            time_scale: Wall seconds per simulated second for every endpoint.
            overrides: Endpoint name -> :class:`SimEndpointSpec` fields to change.
            log_level: uvicorn log level.

        Returns:
            A fleet ready to :meth:`start`. Ollama endpoints are not simulated (the simulator
            speaks llama.cpp's API); their names are in :attr:`skipped`.
        """
        config = load_fleet(fleet)
        specs, skipped = [], []
        for endpoint in config.all_endpoints():
            if endpoint.kind != "llamacpp":
                skipped.append(endpoint.name)
                continue
            specs.append(
                sim_spec_for_endpoint(
                    endpoint,
                    time_scale=time_scale,
                    overrides=(overrides or {}).get(endpoint.name),
                )
            )
        if skipped:
            logger.warning("not simulated (Ollama endpoints): %s", ", ".join(skipped))
        sim = cls(specs, fleet=config, log_level=log_level)
        sim.skipped = skipped
        return sim

    @property
    def urls(self) -> dict[str, str]:
        """Endpoint name -> base URL (actual ports once started)."""
        return {name: spec.base_url for name, spec in self.specs.items()}

    @property
    def fleet(self) -> FleetConfig | None:
        """The source fleet as served: URLs on the bound ports, slots/ctx from the specs.

        Pass this to the orchestrator so its limiter and budgets match the simulation
        (also after ``overrides`` changed ``slots`` or ``n_ctx``).
        """
        if self._source_fleet is None:
            return None
        tiers = {}
        for tier_name, tier in self._source_fleet.tiers.items():
            endpoints = [
                ep.model_copy(update=self._served(self.specs[ep.name]))
                if ep.name in self.specs
                else ep
                for ep in tier.endpoints
            ]
            tiers[tier_name] = tier.model_copy(update={"endpoints": endpoints})
        return self._source_fleet.model_copy(update={"tiers": tiers})

    @staticmethod
    def _served(spec: SimEndpointSpec) -> dict[str, Any]:
        return {"base_url": spec.base_url, "slots": spec.slots, "ctx": spec.n_ctx}

    def engine(self, name: str) -> SimEngine:
        """The timing engine of one endpoint (for inspection in tests and notebooks)."""
        return self.apps[name].state.engine

    def start(self, timeout_s: float = 15.0) -> SimFleet:
        """Start every server; returns self once all accept connections.

        Raises:
            SimFleetError: A port is taken (the message names it) or a server failed.
        """
        if self._servers is not None and self._servers.running:
            return self
        self.apps = {spec.name: create_sim_app(spec) for spec in self._specs}
        servers = BackgroundServers(
            [(self.apps[s.name], s.host, s.port) for s in self._specs],
            name="kitty-simfleet",
            log_level=self._log_level,
        )
        ports = servers.start(timeout_s)
        self._servers = servers
        self.specs = {
            spec.name: spec.model_copy(update={"port": port})
            for spec, port in zip(self._specs, ports, strict=True)
        }
        return self

    def stop(self) -> None:
        """Stop every server (in-flight requests get HTTP 503)."""
        if self._servers is not None:
            self._servers.stop()
            self._servers = None

    def __enter__(self) -> SimFleet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def _describe(sim: SimFleet) -> str:
    lines = [
        "SIMULATED llama.cpp fleet (no model runs; timings follow the calibrated model)",
        f"{'endpoint':<20} {'url':<24} {'slots':>5} {'ctx':>6} {'tok/s@1':>8} "
        f"{'agg@slots':>9} {'prefill':>8}",
    ]
    for spec in sim.specs.values():
        lines.append(
            f"{spec.name:<20} {spec.base_url:<24} {spec.slots:>5} {spec.n_ctx:>6} "
            f"{spec.decode_tok_s_1:>8.1f} {spec.aggregate_decode_tok_s(spec.slots):>9.1f} "
            f"{spec.prefill_tok_s:>8.0f}"
        )
    if sim.skipped:
        lines.append(f"not simulated (Ollama endpoints): {', '.join(sim.skipped)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ops.simfleet``: serve a SIMULATED fleet until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m ops.simfleet",
        description="Serve SIMULATED llama.cpp endpoints for a fleet profile (what-if runs).",
    )
    parser.add_argument("--fleet", default=DEFAULT_SIM_FLEET, help="profile name or .toml path")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="wall seconds per simulated second (0.1 = 10x faster)",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be > 0")
    try:
        sim = SimFleet.from_fleet(args.fleet, time_scale=args.time_scale, log_level=args.log_level)
        sim.start()
    except (SimFleetError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    print(_describe(sim))
    print(f"time_scale={args.time_scale:g}; press Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
