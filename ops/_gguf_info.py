"""What memory planning needs to know about a model: from its GGUF, Ollama or the fleet file.

Three sources give the same :class:`ModelArch`:

* a GGUF on this disk, read with the ``gguf`` package: the weights are the bytes of its
  tensors, the architecture comes from the ``<arch>.*`` metadata keys;
* a running Ollama's ``/api/show`` (the same ``<arch>.*`` keys under ``model_info``) and the
  model's size from ``/api/tags``;
* ``launch.model_info`` in the fleet file (:class:`endpoints.config._model_info.ModelInfo`), for
  models that are not on this machine.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from endpoints.config import EndpointConfig, ModelInfo

ArchSource = Literal["gguf", "ollama", "declared"]

#: Sliding-window layer patterns llama.cpp hard-codes per architecture when the GGUF has
#: no ``sliding_window_pattern`` key: in every group of N layers, the first N-1 use the
#: window and the last attends to the whole context (``llama_hparams::set_swa_pattern``).
_SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "gpt-oss": 2, "gptoss": 2, "cohere2": 4}


@dataclass(frozen=True)
class ModelArch:
    """The numbers the memory plan needs about one model.

    Attributes:
        architecture: ``general.architecture`` (``declared`` for a declared model).
        n_layer: Transformer blocks.
        n_head_kv: Key/value heads (the largest, when they vary per layer).
        head_dim_k: Width of one key head.
        head_dim_v: Width of one value head.
        sliding_window: Window of the sliding-window layers, in tokens (``None``: none).
        n_swa_layers: How many layers use the window.
        weights_bytes: Bytes of the weights.
        n_embd: Hidden size (``None`` when unknown).
        n_ff: Feed-forward size (``None`` when unknown).
        n_vocab: Vocabulary size (``None`` when unknown).
        source: ``gguf``, ``ollama`` or ``declared``.
        detail: The file, server or key the numbers came from.
    """

    architecture: str
    n_layer: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    sliding_window: int | None
    n_swa_layers: int
    weights_bytes: int
    n_embd: int | None
    n_ff: int | None
    n_vocab: int | None
    source: ArchSource
    detail: str


def _as_int(value: Any) -> int | None:
    """An integer metadata value; per-layer arrays give their largest entry."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return max((int(v) for v in value), default=None)
    return int(value)


def _swa_layers(meta: Mapping[str, Any], arch: str, n_layer: int) -> int:
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list | tuple):  # one flag per layer
        return sum(1 for flag in pattern if flag)
    group = int(pattern) if pattern is not None else _SWA_PATTERN.get(arch, 0)
    if group <= 1:
        # No known pattern: a window without one means every layer uses it (Mistral v0.1).
        return n_layer
    return n_layer - n_layer // group


def arch_from_metadata(
    meta: Mapping[str, Any], *, weights_bytes: int, source: ArchSource, detail: str
) -> ModelArch:
    """Build a :class:`ModelArch` from GGUF-style metadata (``<arch>.block_count``...).

    Raises:
        ValueError: A key the KV cache needs is missing; the message names it.
    """
    arch = str(meta.get("general.architecture") or "")
    if not arch:
        raise ValueError(f"{detail}: no general.architecture in the model metadata")

    def need(key: str) -> int:
        value = _as_int(meta.get(f"{arch}.{key}"))
        if value is None:
            raise ValueError(f"{detail}: metadata key {arch}.{key} is missing")
        return value

    n_layer = need("block_count")
    n_head = need("attention.head_count")
    n_head_kv = _as_int(meta.get(f"{arch}.attention.head_count_kv")) or n_head
    n_embd = need("embedding_length")
    head_dim_k = _as_int(meta.get(f"{arch}.attention.key_length")) or n_embd // n_head
    head_dim_v = _as_int(meta.get(f"{arch}.attention.value_length")) or n_embd // n_head
    window = _as_int(meta.get(f"{arch}.attention.sliding_window")) or None
    return ModelArch(
        architecture=arch,
        n_layer=n_layer,
        n_head_kv=n_head_kv,
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        sliding_window=window,
        n_swa_layers=_swa_layers(meta, arch, n_layer) if window else 0,
        weights_bytes=weights_bytes,
        n_embd=n_embd,
        n_ff=_as_int(meta.get(f"{arch}.feed_forward_length")),
        n_vocab=_as_int(meta.get(f"{arch}.vocab_size")) or _as_int(meta.get("n_vocab")),
        source=source,
        detail=detail,
    )


@functools.lru_cache(maxsize=32)
def read_gguf(path: Path) -> ModelArch:
    """Read a GGUF's tensor bytes and architecture (cached: fleets reuse one file).

    Raises:
        ValueError: Not a GGUF, or a key the KV cache needs is missing.
    """
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable GGUF file: {exc}") from None
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key == "tokenizer.ggml.tokens":
            meta["n_vocab"] = len(field.data)  # the vocabulary, without decoding 50k strings
        elif not key.startswith("tokenizer."):
            meta[key] = field.contents()
    weights = sum(int(tensor.n_bytes) for tensor in reader.tensors)
    return arch_from_metadata(meta, weights_bytes=weights, source="gguf", detail=str(path))


def gguf_weights_bytes(path: Path) -> int:
    """Bytes of a GGUF's tensors (for a projector file, which has no KV cache)."""
    import gguf

    return sum(int(tensor.n_bytes) for tensor in gguf.GGUFReader(path).tensors)


def arch_from_model_info(info: ModelInfo, detail: str) -> ModelArch:
    """The architecture declared in the fleet file's ``launch.model_info``."""
    return ModelArch(
        architecture="declared",
        n_layer=info.n_layer,
        n_head_kv=info.n_head_kv,
        head_dim_k=info.head_dim,
        head_dim_v=info.head_dim,
        sliding_window=info.sliding_window,
        n_swa_layers=info.n_swa_layers,
        weights_bytes=info.weights_bytes,
        n_embd=info.n_embd,
        n_ff=info.n_ff,
        n_vocab=None,
        source="declared",
        detail=detail,
    )


def read_ollama(endpoint: EndpointConfig, timeout: float = 2.0) -> ModelArch | None:
    """The model of an Ollama endpoint from ``/api/show`` and ``/api/tags``; ``None`` if down.

    Ollama's ``/api/show`` returns the GGUF metadata under ``model_info``; its size (the
    weights) is listed by ``/api/tags``.
    """
    try:
        with httpx.Client(base_url=endpoint.base_url, timeout=timeout) as client:
            show = client.post("/api/show", json={"model": endpoint.model})
            show.raise_for_status()
            tags = client.get("/api/tags")
            tags.raise_for_status()
            meta = show.json().get("model_info") or {}
            sizes = {m.get("name"): m.get("size") for m in tags.json().get("models", [])}
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    size = sizes.get(endpoint.model)
    if not meta or not isinstance(size, int):
        return None
    try:
        return arch_from_metadata(
            meta,
            weights_bytes=size,
            source="ollama",
            detail=f"{endpoint.base_url}/api/show",
        )
    except ValueError:
        return None
