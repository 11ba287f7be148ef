"""Where the SIMULATED timings come from: calibration figures and per-endpoint estimates.

The defaults are measurements (llama-batched-bench, M2 Ultra, gemma-3-4b Q8_0); the
``m3-ultra-sim`` parameters are ESTIMATES for a Mac Studio M3 Ultra, each with a note.
"""

from __future__ import annotations

from typing import Any

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
