"""Fleet configuration: one TOML file maps tiers to model endpoints.

The fleet file is the single source of truth. The orchestrator, the generated
launch scripts and the embedded fleet all read it. A fleet is chosen by profile
name (a file shipped in ``ops/profiles``) or by path, via ``--fleet`` or the
``KITTY_FLEET`` environment variable.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from endpoints.config._machine import MachineConfig
from endpoints.config._model_info import ModelInfo
from endpoints.config._tool_config import (
    FetchSettings,
    McpServerConfig,
    MemorySettings,
    SearchSettings,
)
from endpoints.slots import CoordinationConfig
from kitty.errors import FleetError, format_validation_error

DEFAULT_FLEET = "embedded"
FLEET_ENV_VAR = "KITTY_FLEET"

EndpointKind = Literal["llamacpp", "ollama"]
ThinkingLevel = Literal["low", "medium", "high"]


class LaunchSettings(BaseModel):
    """How to start the server behind an endpoint (llama-server flags / embedded fleet).

    Attributes:
        model_path: GGUF path. ``pkg:<module>/<file>`` resolves a file shipped inside an
            installed Python package (the embedded fleet's SmolLM2); ``$VARS`` are expanded.
        ctx_size: Total KV context passed as ``-c``. With ``-np N`` llama.cpp splits it across
            slots unless ``kv_unified`` is set; defaults to ``ctx * slots``.
        batch_size: Logical batch (``-b``).
        ubatch_size: Physical batch (``-ub``).
        threads: Generation threads (``-t``).
        n_gpu_layers: Layers offloaded to the GPU (``-ngl``).
        flash_attn: ``--flash-attn on``.
        kv_unified: ``--kv-unified``: one KV buffer shared by all slots.
        draft_model: Optional draft GGUF for speculative decoding (``-md``).
        extra_args: Further llama-server arguments, verbatim.
        keep_alive: Ollama only: how long the model stays loaded.
        max_queue: Ollama only: ``OLLAMA_MAX_QUEUE``.
        chat_template_file: A Jinja chat template file for the server
            (``--chat-template-file``), e.g. one that turns on tool calls.
        mmproj: Multimodal projector GGUF (``--mmproj``): turns on vision.
        model_info: Declared architecture, for memory planning without the GGUF.
    """

    model_config = ConfigDict(extra="forbid")

    model_path: str | None = None
    ctx_size: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    ubatch_size: int | None = Field(default=None, gt=0)
    threads: int | None = Field(default=None, gt=0)
    n_gpu_layers: int | None = Field(default=None, ge=0)
    flash_attn: bool = False
    kv_unified: bool = False
    draft_model: str | None = None
    extra_args: list[str] = Field(default_factory=list)
    keep_alive: str = "30m"
    max_queue: int = Field(default=512, gt=0)
    chat_template_file: str | None = None
    mmproj: str | None = None
    model_info: ModelInfo | None = None


class EndpointConfig(BaseModel):
    """One model server (a llama-server instance or an Ollama daemon + model).

    Attributes:
        name: Unique name in the fleet, used in logs, metrics and timelines.
        kind: ``llamacpp`` (OpenAI-compatible ``/v1``) or ``ollama`` (native API).
        base_url: Server root, e.g. ``http://localhost:8083`` (no ``/v1``).
        model: Model id sent in requests (llama.cpp ``--alias``, Ollama tag).
        slots: Parallel slots; ``None`` means discover from ``/props`` ``total_slots``.
        ctx: Context tokens available to one request (per slot).
        supports_tools: Model handles tool calling.
        supports_vision: Model accepts images.
        thinking: Reasoning effort for reasoning models (Ollama ``think``).
        timeout_s: Request timeout in seconds.
        launch: How to start it (scripts and embedded fleet).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: EndpointKind
    base_url: str
    model: str = Field(min_length=1)
    slots: int | None = Field(default=None, gt=0, le=256)
    ctx: int = Field(default=4096, gt=0)
    supports_tools: bool = False
    supports_vision: bool = False
    thinking: ThinkingLevel | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    launch: LaunchSettings = Field(default_factory=LaunchSettings)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://, e.g. http://127.0.0.1:8083")
        value = value.rstrip("/")
        if value.endswith("/v1"):
            raise ValueError("give the server root without /v1 (it is added for OpenAI calls)")
        return value

    @property
    def port(self) -> int:
        """TCP port of ``base_url`` (default 80/443 when none is given)."""
        from urllib.parse import urlparse

        parsed = urlparse(self.base_url)
        return parsed.port or (443 if parsed.scheme == "https" else 80)

    @property
    def host(self) -> str:
        """Host name of ``base_url``."""
        from urllib.parse import urlparse

        return urlparse(self.base_url).hostname or "127.0.0.1"


class TierConfig(BaseModel):
    """A tier: a role in the fleet served by one or more replica endpoints."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    endpoints: list[EndpointConfig] = Field(min_length=1)


class FleetConfig(BaseModel):
    """A whole fleet: named tiers of endpoints.

    Attributes:
        name: Profile name.
        description: Free text shown by ``kitty-orch fleet status``.
        embedded: Served in-process by the embedded llama.cpp fleet when no server runs.
        tiers: Tier name -> tier. The graph uses ``tools`` (planner), ``reasoning``
            (synthesizer) and ``summary`` (summarizer); agents name theirs.
        coordination: Slot leases shared with other processes (``[coordination]``).
        mcp: MCP servers whose tools agents may call (``[mcp.NAME]``).
        fetch: ``fetch_webpage`` settings (``[fetch]``).
        search: ``web_search`` settings (``[search]``).
        memory: ``memory.*`` settings (``[memory]``).
        machine: The machine the fleet is for (``[machine]``), when the file declares one:
            ``kitty-orch fleet plan`` compares with its memory instead of this machine's.
        source: Where the file was read from (set by the loader).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    embedded: bool = False
    tiers: dict[str, TierConfig] = Field(min_length=1)
    coordination: CoordinationConfig = Field(default_factory=CoordinationConfig)
    mcp: dict[str, McpServerConfig] = Field(default_factory=dict)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    machine: MachineConfig | None = None
    source: str = ""

    @field_validator("fetch", "memory", mode="before")
    @classmethod
    def _table_turns_tool_on(cls, value: object) -> object:
        # A built-in is offered when its table is in the file (even an empty one).
        if isinstance(value, dict) and "enabled" not in value:
            return {**value, "enabled": True}
        return value

    @model_validator(mode="after")
    def _unique_endpoints(self) -> FleetConfig:
        seen: dict[str, str] = {}
        for tier_name, tier in self.tiers.items():
            for endpoint in tier.endpoints:
                if endpoint.name in seen and seen[endpoint.name] != endpoint.base_url:
                    raise ValueError(
                        f"endpoint name {endpoint.name!r} is used twice with different URLs "
                        f"(tier {tier_name!r}); give each server a unique name"
                    )
                seen[endpoint.name] = endpoint.base_url
        return self

    def tier(self, name: str) -> TierConfig:
        """Return a tier by name.

        Raises:
            FleetError: The tier does not exist; the message lists the ones that do.
        """
        try:
            return self.tiers[name]
        except KeyError:
            raise FleetError(
                f"unknown tier {name!r} in fleet {self.name!r}; "
                f"known tiers: {', '.join(sorted(self.tiers))}"
            ) from None

    def all_endpoints(self) -> list[EndpointConfig]:
        """Every distinct endpoint of the fleet (a server shared by tiers appears once)."""
        unique: dict[str, EndpointConfig] = {}
        for tier in self.tiers.values():
            for endpoint in tier.endpoints:
                unique.setdefault(endpoint.name, endpoint)
        return list(unique.values())

    def tiers_by_endpoint(self) -> dict[str, list[str]]:
        """The tiers each endpoint serves, by endpoint name, in the fleet file's tier order."""
        tiers: dict[str, list[str]] = {}
        for tier_name, tier in self.tiers.items():
            for endpoint in tier.endpoints:
                tiers.setdefault(endpoint.name, []).append(tier_name)
        return tiers


def profiles_dir() -> Path:
    """Directory holding the shipped fleet profiles."""
    return Path(str(resources.files("ops") / "profiles"))


def available_profiles() -> list[str]:
    """Names of the shipped fleet profiles."""
    return sorted(p.stem for p in profiles_dir().glob("*.toml"))


def resolve_fleet_path(fleet: str | os.PathLike[str] | None = None) -> Path:
    """Turn a profile name or path (or ``$KITTY_FLEET``, or the default) into a file path.

    Raises:
        FleetError: Neither a file nor a shipped profile goes by that name.
    """
    chosen = str(fleet) if fleet else os.environ.get(FLEET_ENV_VAR) or DEFAULT_FLEET
    path = Path(chosen).expanduser()
    if path.suffix == ".toml" or path.exists() or os.sep in chosen:
        if not path.is_file():
            raise FleetError(
                f"fleet file {str(path)!r} not found; pass an existing .toml file or one of "
                f"the profiles: {', '.join(available_profiles())}"
            )
        return path
    profile = profiles_dir() / f"{chosen}.toml"
    if not profile.is_file():
        raise FleetError(
            f"unknown fleet profile {chosen!r}; use one of {', '.join(available_profiles())} "
            "or a path to a fleet .toml file"
        )
    return profile


def load_fleet(fleet: str | os.PathLike[str] | FleetConfig | None = None) -> FleetConfig:
    """Load and validate a fleet by profile name, path, ``$KITTY_FLEET`` or the default.

    Args:
        fleet: Profile name (``embedded``, ``m3-ultra``...), path to a TOML file, an
            already loaded config (returned as is), or ``None`` for the default.

    Returns:
        The validated fleet.

    Raises:
        FleetError: File missing, not TOML, or failing validation; the message names the
            file, the key and the reason.
    """
    if isinstance(fleet, FleetConfig):
        return fleet
    path = resolve_fleet_path(fleet)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise FleetError(f"fleet file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise FleetError(f"cannot read fleet file {path}: {exc.strerror}") from None
    data.setdefault("name", path.stem)
    try:
        config = FleetConfig.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc.errors(), limit=10)
        raise FleetError(f"invalid fleet file {path}: {problems}") from None
    return config.model_copy(update={"source": str(path)})
