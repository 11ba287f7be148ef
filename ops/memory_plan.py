"""Fleet memory planning: weights, KV cache and compute buffers per endpoint, against the machine.

Per endpoint (numbers from :mod:`ops._gguf_info`):

* **weights**: the GGUF's tensor bytes (or the declared ``params x bits / 8``). Servers that
  map the same file share its pages (llama.cpp mmaps the weights), so the fleet total
  counts a file once.
* **KV cache**: ``n_head_kv x (key + value head width) x bytes per element x cells`` per
  layer, where a full-attention layer has ``total ctx`` cells (``launch.ctx_size`` or
  ``ctx x slots``) and a sliding-window layer only ``window + ubatch`` per slot (padded to
  256), as llama.cpp's iSWA cache allocates it. With equal key and value widths this is
  ``2 x n_layer x n_head_kv x head_dim x total ctx x bytes``. Bytes per element follow the
  cache type (``-ctk``/``-ctv``): f16 2, q8_0 34/32, q4_0 18/32.
* **compute buffer**: an ESTIMATE, ``16 x ubatch x (n_embd + n_ff)`` bytes (four f32
  activations of the micro-batch) plus the logits buffer; it matched llama.cpp's reported
  compute buffer for SmolLM2-135M within 1 %, and assumes flash attention (llama.cpp's
  default ``auto`` turns it on where supported).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from endpoints.config import EndpointConfig, FleetConfig
from kitty.errors import EmbeddedFleetError, SettingsError
from ops._gguf_info import (
    ModelArch,
    arch_from_model_info,
    gguf_weights_bytes,
    read_gguf,
    read_ollama,
)

GIB = 1024**3

#: Bytes per KV element by llama.cpp cache type (block formats: block bytes / 32 values).
CACHE_TYPE_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,
}
DEFAULT_UBATCH = 512  # llama.cpp's -ub default
SWA_PAD = 256  # llama.cpp pads the sliding-window cache to 256 cells

PlanSource = Literal["gguf", "ollama", "declared", "unknown"]


@dataclass
class EndpointMemory:
    """Memory one endpoint needs (bytes).

    Attributes:
        endpoint: Endpoint name.
        tiers: Tiers it serves.
        kind: ``llamacpp`` or ``ollama``.
        slots: Parallel slots.
        ctx_per_slot: Context cells of one slot.
        total_ctx: Context cells over all slots (``-c``).
        cache_type_k: Key cache type.
        cache_type_v: Value cache type.
        weights_bytes: Weights (the file's tensors or the declared size).
        kv_bytes: KV cache of all slots.
        kv_bytes_per_slot: KV cache of one slot.
        compute_bytes: Compute-buffer ESTIMATE (0 when the hidden sizes are unknown).
        total_bytes: Weights + KV + compute.
        source: ``gguf``, ``ollama``, ``declared`` or ``unknown`` (nothing to read).
        detail: The file, server or key the model numbers came from.
        architecture: One line: layers, KV heads, head width, sliding window.
        weights_shared_with: Earlier endpoint that maps the same weights file.
        notes: What the numbers assume or lack.
    """

    endpoint: str
    tiers: list[str]
    kind: str
    slots: int
    ctx_per_slot: int
    total_ctx: int
    cache_type_k: str
    cache_type_v: str
    weights_bytes: int = 0
    kv_bytes: int = 0
    kv_bytes_per_slot: int = 0
    compute_bytes: int = 0
    total_bytes: int = 0
    source: PlanSource = "unknown"
    detail: str = ""
    architecture: str = ""
    weights_shared_with: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class FleetMemoryPlan:
    """A fleet's memory against the machine's.

    Attributes:
        fleet: Fleet name.
        endpoints: One entry per distinct endpoint.
        weights_bytes: Weights, each file counted once.
        kv_bytes: KV caches.
        compute_bytes: Compute-buffer estimates.
        total_bytes: Everything the fleet needs.
        machine_bytes: The machine's memory.
        machine_source: ``psutil`` (this machine), ``--memory-gb`` (given) or
            ``declared`` (the fleet file's ``[machine]``).
    """

    fleet: str
    endpoints: list[EndpointMemory]
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    total_bytes: int
    machine_bytes: int
    machine_source: str

    @property
    def headroom_bytes(self) -> int:
        """Machine memory left once the fleet is loaded (negative: over-committed)."""
        return self.machine_bytes - self.total_bytes

    @property
    def over_committed(self) -> bool:
        """True when the fleet needs more memory than the machine has."""
        return self.total_bytes > self.machine_bytes

    @property
    def incomplete(self) -> list[str]:
        """Endpoints whose model could not be read or declared (counted as 0)."""
        return [e.endpoint for e in self.endpoints if e.source == "unknown"]

    def warning(self) -> str | None:
        """A one-line over-commit warning, or ``None`` when the fleet fits."""
        if not self.over_committed:
            return None
        return (
            f"fleet {self.fleet} over-commits memory: it needs {gib(self.total_bytes)} but the "
            f"machine has {gib(self.machine_bytes)} ({self.machine_source}), "
            f"{gib(-self.headroom_bytes)} short; lower slots or ctx, use a smaller quant or "
            f"KV cache type, or see: kitty-orch fleet plan --fleet {self.fleet}"
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready plan: one object per endpoint plus the fleet totals."""
        return {
            "fleet": self.fleet,
            "endpoints": [asdict(e) for e in self.endpoints],
            "total": {
                "weights_bytes": self.weights_bytes,
                "kv_bytes": self.kv_bytes,
                "compute_bytes": self.compute_bytes,
                "total_bytes": self.total_bytes,
                "machine_bytes": self.machine_bytes,
                "machine_source": self.machine_source,
                "headroom_bytes": self.headroom_bytes,
                "over_committed": self.over_committed,
                "incomplete": self.incomplete,
            },
        }


def gib(value: float) -> str:
    """Bytes as GiB with one decimal (``"44.2 GiB"``), or MiB below 1 GiB (``"92 MiB"``)."""
    if abs(value) < GIB:
        return f"{value / 1024**2:.0f} MiB"
    return f"{value / GIB:.1f} GiB"


def machine_memory_bytes() -> int:
    """Physical memory of this machine (psutil)."""
    import psutil

    return int(psutil.virtual_memory().total)


def _flag_value(args: list[str], *flags: str) -> str | None:
    """The value after the last of ``flags`` in an argument list (``--flag=value`` too)."""
    found = None
    for index, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in flags:
            found = value if eq else (args[index + 1] if index + 1 < len(args) else None)
    return found


def cache_types(endpoint: EndpointConfig) -> tuple[str, str]:
    """The key and value cache types llama-server gets (``f16`` unless ``-ctk``/``-ctv``)."""
    args = endpoint.launch.extra_args
    k = _flag_value(args, "-ctk", "--cache-type-k") or "f16"
    v = _flag_value(args, "-ctv", "--cache-type-v") or "f16"
    for value in (k, v):
        if value not in CACHE_TYPE_BYTES:
            raise ValueError(
                f"endpoint {endpoint.name!r}: unknown KV cache type {value!r}; "
                f"use one of {', '.join(CACHE_TYPE_BYTES)}"
            )
    return k, v


def total_context(endpoint: EndpointConfig) -> int:
    """Context cells over all slots: ``launch.ctx_size`` or ``ctx x slots`` (Ollama: the latter).

    Ollama allocates ``num_ctx`` for each of ``OLLAMA_NUM_PARALLEL`` requests.
    """
    slots = endpoint.slots or 1
    if endpoint.kind == "ollama":
        return endpoint.ctx * slots
    return endpoint.launch.ctx_size or endpoint.ctx * slots


def kv_cache_bytes(
    arch: ModelArch,
    *,
    total_ctx: int,
    slots: int,
    unified: bool = False,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    ubatch: int = DEFAULT_UBATCH,
) -> int:
    """KV cache bytes of one server for all its slots.

    Args:
        arch: The model.
        total_ctx: Cells over all slots (``-c``).
        slots: Parallel sequences (``-np``); each has its own stream unless ``unified``.
        unified: ``--kv-unified``: one buffer shared by all slots.
        cache_type_k: Key cache type.
        cache_type_v: Value cache type.
        ubatch: Micro-batch (``-ub``): llama.cpp keeps that many cells beyond the window.
    """
    per_cell_layer = arch.n_head_kv * (
        arch.head_dim_k * CACHE_TYPE_BYTES[cache_type_k]
        + arch.head_dim_v * CACHE_TYPE_BYTES[cache_type_v]
    )
    full_layers = arch.n_layer - arch.n_swa_layers
    cells = full_layers * total_ctx
    if arch.n_swa_layers and arch.sliding_window:
        streams = 1 if unified else slots
        per_stream = total_ctx // streams
        window_cells = arch.sliding_window * (slots if unified else 1) + ubatch
        swa = math.ceil(min(per_stream, window_cells) / SWA_PAD) * SWA_PAD
        cells += arch.n_swa_layers * swa * streams
    return round(per_cell_layer * cells)


def compute_buffer_estimate(arch: ModelArch, *, slots: int, ubatch: int) -> int:
    """ESTIMATED compute + logits buffers (0 when the hidden sizes are not known)."""
    if arch.n_embd is None or arch.n_ff is None:
        return 0
    activations = 16 * ubatch * (arch.n_embd + arch.n_ff)
    logits = 4 * (arch.n_vocab or 0) * slots
    return activations + logits


def _mmproj_path(endpoint: EndpointConfig) -> str | None:
    launch = endpoint.launch
    return launch.mmproj or _flag_value(launch.extra_args, "--mmproj", "-mm")


def _resolve(spec: str) -> Path | None:
    """The file a ``model_path`` names, if it is on this disk."""
    from ops.embedded import resolve_model_path

    try:
        return resolve_model_path(spec)
    except EmbeddedFleetError:
        return None


def _model_arch(
    endpoint: EndpointConfig, probe_ollama: bool, notes: list[str]
) -> tuple[ModelArch | None, str | None]:
    """The endpoint's model and the key identifying its weights file (for sharing)."""
    launch = endpoint.launch
    declared = f"tiers.*.endpoints[{endpoint.name}].launch.model_info"
    if endpoint.kind == "ollama":
        live = read_ollama(endpoint) if probe_ollama else None
        if live is not None:
            return live, f"ollama:{endpoint.base_url}:{endpoint.model}"
        if launch.model_info is not None:
            notes.append("Ollama not reachable: declared model_info used")
            return arch_from_model_info(launch.model_info, declared), None
        notes.append("Ollama not reachable and no launch.model_info declared")
        return None, None
    if launch.model_path:
        path = _resolve(launch.model_path)
        if path is not None:
            try:
                return read_gguf(path), str(path)
            except ValueError as exc:
                notes.append(str(exc))
        elif launch.model_info is None:
            notes.append(f"no GGUF at {launch.model_path} and no launch.model_info declared")
    if launch.model_info is not None:
        return arch_from_model_info(launch.model_info, declared), launch.model_path
    return None, None


def _describe(arch: ModelArch) -> str:
    heads = f"{arch.n_layer} layers, {arch.n_head_kv} KV heads x {arch.head_dim_k}"
    if arch.n_swa_layers and arch.sliding_window:
        heads += f", {arch.n_swa_layers} SWA layers (window {arch.sliding_window})"
    return heads


def plan_endpoint(
    endpoint: EndpointConfig, tiers: list[str], *, probe_ollama: bool = True
) -> tuple[EndpointMemory, str | None]:
    """Memory of one endpoint, and the key of its weights file (``None``: not shareable).

    Raises:
        ValueError: Unknown KV cache type in ``extra_args``.
    """
    slots = endpoint.slots or 1
    total = total_context(endpoint)
    unified = endpoint.launch.kv_unified
    k_type, v_type = ("f16", "f16") if endpoint.kind == "ollama" else cache_types(endpoint)
    ubatch = endpoint.launch.ubatch_size or DEFAULT_UBATCH
    row = EndpointMemory(
        endpoint=endpoint.name,
        tiers=tiers,
        kind=endpoint.kind,
        slots=slots,
        ctx_per_slot=total if unified else total // slots,
        total_ctx=total,
        cache_type_k=k_type,
        cache_type_v=v_type,
    )
    arch, weights_key = _model_arch(endpoint, probe_ollama, row.notes)
    if arch is None:
        return row, None
    weights = arch.weights_bytes
    mmproj = _mmproj_path(endpoint)
    mmproj_file = _resolve(mmproj) if mmproj else None
    if mmproj_file is not None and arch.source == "gguf":
        weights += gguf_weights_bytes(mmproj_file)
    kv = kv_cache_bytes(
        arch,
        total_ctx=total,
        slots=slots,
        unified=unified,
        cache_type_k=k_type,
        cache_type_v=v_type,
        ubatch=ubatch,
    )
    compute = compute_buffer_estimate(arch, slots=slots, ubatch=ubatch)
    if not compute:
        row.notes.append("compute buffer not estimated (n_embd/n_ff unknown)")
    row.weights_bytes, row.kv_bytes, row.compute_bytes = weights, kv, compute
    row.kv_bytes_per_slot = kv // slots
    row.total_bytes = weights + kv + compute
    row.source, row.detail, row.architecture = arch.source, arch.detail, _describe(arch)
    if "--no-mmap" in endpoint.launch.extra_args:
        weights_key = None  # the weights are read into this server's own memory
    return row, weights_key


def plan_fleet(
    config: FleetConfig,
    *,
    memory_bytes: int | None = None,
    probe_ollama: bool = True,
    declared_machine: bool = False,
) -> FleetMemoryPlan:
    """Plan the memory of every endpoint of a fleet against the machine's memory.

    Args:
        config: The fleet.
        memory_bytes: The machine's memory; given, it wins over everything else.
        probe_ollama: Ask running Ollama servers (``/api/show``) for their model.
        declared_machine: Compare with the memory of the machine the fleet file declares
            (``[machine] memory_gib``) when it declares one, as planning a fleet for another
            machine does; otherwise (and by default, as a fleet starting here must) with
            this machine's, from psutil.

    Raises:
        ValueError: Unknown KV cache type in an endpoint's ``extra_args``.
    """
    tiers = config.tiers_by_endpoint()
    rows: list[EndpointMemory] = []
    owners: dict[str, str] = {}
    weights_total = 0
    for endpoint in config.all_endpoints():
        row, key = plan_endpoint(endpoint, tiers[endpoint.name], probe_ollama=probe_ollama)
        if key is not None and key in owners:
            row.weights_shared_with = owners[key]
            row.total_bytes -= row.weights_bytes
        else:
            weights_total += row.weights_bytes
            if key is not None:
                owners[key] = endpoint.name
        rows.append(row)
    kv_total = sum(r.kv_bytes for r in rows)
    compute_total = sum(r.compute_bytes for r in rows)
    if memory_bytes is not None:
        machine, machine_source = memory_bytes, "--memory-gb"
    elif declared_machine and config.machine is not None:
        machine, machine_source = int(config.machine.memory_gib * GIB), "declared"
    else:
        machine, machine_source = machine_memory_bytes(), "psutil"
    return FleetMemoryPlan(
        fleet=config.name,
        endpoints=rows,
        weights_bytes=weights_total,
        kv_bytes=kv_total,
        compute_bytes=compute_total,
        total_bytes=weights_total + kv_total + compute_total,
        machine_bytes=machine,
        machine_source=machine_source,
    )


def memory_override_bytes(memory_gb: float | None) -> int | None:
    """``--memory-gb`` (GiB) as bytes; ``$KITTY_MEMORY_GB`` when the flag is not given."""
    if memory_gb is None:
        env = os.environ.get("KITTY_MEMORY_GB")
        try:
            memory_gb = float(env) if env else None
        except ValueError:
            raise SettingsError(
                f"KITTY_MEMORY_GB={env!r} is not a number; give the machine's memory in GiB"
            ) from None
    if memory_gb is not None and memory_gb <= 0:
        raise SettingsError(f"memory must be a positive number of GiB, got {memory_gb}")
    return None if memory_gb is None else int(memory_gb * GIB)
