"""One SIMULATED endpoint's spec and its relative decode-throughput curve."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ops.simfleet._calibration import (
    DEFAULT_DECODE_CURVE,
    DEFAULT_DECODE_TOK_S_1,
    DEFAULT_PREFILL_TOK_S,
)


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
        with the last segment's slope (formula in :mod:`ops.simfleet`).
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
