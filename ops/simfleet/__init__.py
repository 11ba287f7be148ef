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

Modules, one concept each: ``calibration`` (where the figures come from), ``spec`` (an
endpoint and its curve), ``tokens`` (prompt size, completion length, filler), ``structured_output``
(JSON from a schema), ``model`` (the discrete-event timing model), ``engine`` (the model on
the event loop's clock), ``server`` (the FastAPI app), ``background`` (uvicorn on a thread),
``fleet`` (a whole profile), ``cli``.
"""

from kitty.errors import SimFleetError
from ops.simfleet._background import BackgroundServers
from ops.simfleet._calibration import DEFAULT_DECODE_TOK_S_1, SIM_ENDPOINT_PARAMS
from ops.simfleet._engine import SimEngine
from ops.simfleet._fleet import DEFAULT_SIM_FLEET, SimFleet
from ops.simfleet._model import (
    OfflineRequest,
    SimSequence,
    measure_aggregate_decode,
    simulate_offline,
)
from ops.simfleet._server import create_sim_app
from ops.simfleet._spec import SimEndpointSpec
from ops.simfleet._structured_output import example_from_schema, response_schema
from ops.simfleet._tokens import (
    SIMULATED_LABEL,
    count_prompt_tokens,
    filler_pieces,
    plan_completion,
)

__all__ = [
    "DEFAULT_DECODE_TOK_S_1",
    "DEFAULT_SIM_FLEET",
    "SIMULATED_LABEL",
    "SIM_ENDPOINT_PARAMS",
    "BackgroundServers",
    "OfflineRequest",
    "SimEndpointSpec",
    "SimEngine",
    "SimFleet",
    "SimFleetError",
    "SimSequence",
    "count_prompt_tokens",
    "create_sim_app",
    "example_from_schema",
    "filler_pieces",
    "measure_aggregate_decode",
    "plan_completion",
    "response_schema",
    "simulate_offline",
]
