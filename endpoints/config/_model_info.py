"""A model's architecture as declared in the fleet file, for memory planning.

Used when the GGUF is not on this disk (``[tiers.X.endpoints.launch.model_info]``): the
fleet planner computes weights and KV cache from these numbers instead of the file.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
        n_embd: Hidden size (for the compute-buffer estimate; optional).
        n_ff: Feed-forward size (for the compute-buffer estimate; optional).
        projector_gb: Weights of a multimodal projector (``--mmproj``), in GB (10^9 bytes).
    """

    model_config = ConfigDict(extra="forbid")

    params_b: float = Field(gt=0)
    quant_bits: float = Field(gt=0, le=32)
    n_layer: int = Field(gt=0)
    n_head_kv: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    sliding_window: int | None = Field(default=None, gt=0)
    n_swa_layers: int = Field(default=0, ge=0)
    n_embd: int | None = Field(default=None, gt=0)
    n_ff: int | None = Field(default=None, gt=0)
    projector_gb: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check_sliding_window(self) -> ModelInfo:
        if self.n_swa_layers > self.n_layer:
            raise ValueError(
                f"n_swa_layers ({self.n_swa_layers}) cannot exceed n_layer ({self.n_layer})"
            )
        if self.n_swa_layers and self.sliding_window is None:
            raise ValueError("n_swa_layers needs sliding_window (the window size in tokens)")
        if self.sliding_window is not None and not self.n_swa_layers:
            raise ValueError("sliding_window needs n_swa_layers (how many layers use the window)")
        return self

    @property
    def weights_bytes(self) -> int:
        """Bytes of the quantised weights: parameters x bits per weight / 8, plus projector."""
        return round(self.params_b * 1e9 * self.quant_bits / 8 + self.projector_gb * 1e9)
