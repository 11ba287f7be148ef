"""A model's architecture as declared in the fleet file, for memory planning.

Used when the GGUF is not on this disk (``[tiers.X.endpoints.launch.model_info]``): the
fleet planner computes weights and KV cache from these numbers instead of the file.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelInfo(BaseModel):
    """Published architecture numbers of a model.

    Attributes:
        params_b: Parameters, in billions.
        quant_bits: Average bits per weight of the quantisation (Q4_K_M is about 4.8).
        n_layer: Transformer blocks.
        n_head_kv: Key/value heads (grouped-query attention).
        head_dim: Dimension of one attention head.
        sliding_window: Tokens a sliding-window layer attends to (``None``: none).
        n_swa_layers: How many of the layers use the sliding window.
    """

    model_config = ConfigDict(extra="forbid")

    params_b: float = Field(gt=0)
    quant_bits: float = Field(gt=0, le=32)
    n_layer: int = Field(gt=0)
    n_head_kv: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    sliding_window: int | None = Field(default=None, gt=0)
    n_swa_layers: int = Field(default=0, ge=0)
