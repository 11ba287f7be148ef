"""The fleet file: tiers, endpoints, model facts and tool settings, parsed and checked.

One TOML file feeds the orchestrator, the launch scripts and the embedded fleet.
"""

from endpoints.config._fleet import (
    DEFAULT_FLEET,
    FLEET_ENV_VAR,
    EndpointConfig,
    FleetConfig,
    FleetError,
    LaunchSettings,
    ThinkingLevel,
    TierConfig,
    available_profiles,
    load_fleet,
    profiles_dir,
    resolve_fleet_path,
)
from endpoints.config._machine import MachineConfig
from endpoints.config._model_info import ModelInfo
from endpoints.config._tool_config import (
    DEFAULT_MAX_NOTE_CHARS,
    DEFAULT_MAX_NOTES,
    MAX_NOTES_LIMIT,
    FetchSettings,
    McpServerConfig,
    MemorySettings,
    SearchSettings,
)

__all__ = [
    "DEFAULT_FLEET",
    "DEFAULT_MAX_NOTES",
    "DEFAULT_MAX_NOTE_CHARS",
    "FLEET_ENV_VAR",
    "MAX_NOTES_LIMIT",
    "EndpointConfig",
    "FetchSettings",
    "FleetConfig",
    "FleetError",
    "LaunchSettings",
    "MachineConfig",
    "McpServerConfig",
    "MemorySettings",
    "ModelInfo",
    "SearchSettings",
    "ThinkingLevel",
    "TierConfig",
    "available_profiles",
    "load_fleet",
    "profiles_dir",
    "resolve_fleet_path",
]
